//! Time as every output writes it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Nanoseconds since the Unix epoch; RFC 3339 on every output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// RFC 3339 with nanoseconds, in UTC.
    pub fn rfc3339(self) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    }

    /// The time an RFC 3339 text names (times before 1970 are not represented).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()?;
        u64::try_from(t.unix_timestamp_nanos()).ok().map(Self)
    }

    /// The time of whole `seconds` and `nanos` beyond them (a protobuf timestamp); before 1970
    /// is 0, past what 64 bits of nanoseconds hold is the largest time.
    pub fn from_seconds_nanos(seconds: i64, nanos: i32) -> Self {
        let seconds = u64::try_from(seconds).unwrap_or(0);
        let nanos = u64::try_from(nanos).unwrap_or(0);
        Self(seconds.saturating_mul(1_000_000_000).saturating_add(nanos))
    }

    /// This time moved by `ns` nanoseconds (either way), saturating at both ends.
    pub fn shifted(self, ns: i64) -> Self {
        Self(self.0.saturating_add_signed(ns))
    }

    /// Whole seconds and the nanoseconds beyond them.
    pub fn seconds_nanos(self) -> (i64, i32) {
        (
            i64::try_from(self.0 / 1_000_000_000).unwrap_or(i64::MAX),
            (self.0 % 1_000_000_000) as i32,
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text:?}")))
    }
}

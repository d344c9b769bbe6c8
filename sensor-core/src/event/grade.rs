//! How much an interceptor weakens the connection it intercepts, on the scale of the NDSS
//! 2017 study ("The Security Impact of HTTPS Interception", Durumeric et al., section 5): A as
//! strong as a current browser, B suboptimal, C open to known attacks, F broken. The rules
//! that give a grade are in `verdict::grade`; these are the types an event carries.

use serde::{Deserialize, Serialize};

named_enum! {
    /// The grade, best first.
    #[derive(PartialOrd, Ord)]
    pub enum Grade {
        /// As strong as a current browser.
        A => "A",
        /// No known attack, but weaker than a browser: no forward secrecy, no AEAD, or a lower
        /// version than the client offered.
        B => "B",
        /// Open to known attacks: 3DES, CBC with SHA-1, TLS 1.0 or 1.1, SHA-1 signatures,
        /// short keys.
        C => "C",
        /// Broken: RC4, export, NULL, anonymous or single-DES suites, SSL 3.0, MD5 signatures,
        /// RSA keys under 1024 bits.
        F => "F",
    }
}

named_enum! {
    /// One finding behind a grade; each has the grade it costs ([`GradeReason::grade`]).
    #[derive(PartialOrd, Ord)]
    pub enum GradeReason {
        /// A lower TLS version than the client offered (a client offering 1.3 got 1.2).
        VersionDowngrade => "version_downgrade",
        /// The suite has no forward secrecy (RSA key transport, static DH).
        NoForwardSecrecy => "no_forward_secrecy",
        /// The suite is not AEAD (CBC with HMAC) though the client offered AEAD suites.
        NoAead => "no_aead",
        /// TLS 1.0 or 1.1 (BEAST, Lucky 13, no modern suites).
        OldTlsVersion => "old_tls_version",
        /// A 3DES suite (Sweet32).
        TripleDes => "3des",
        /// A CBC suite with HMAC-SHA1 (Lucky 13, padding oracles).
        CbcSha1 => "cbc_sha1",
        /// The forged leaf is signed with SHA-1.
        Sha1Signature => "sha1_signature",
        /// The forged leaf's key is short: RSA under 2048 bits, EC under 224.
        WeakKey => "weak_key",
        /// Finite-field Diffie-Hellman under 2048 bits (Logjam).
        WeakDh => "weak_dh",
        /// SSL 3.0 (POODLE).
        Ssl3 => "ssl3",
        /// An RC4, export, NULL, anonymous or single-DES suite.
        BrokenCipher => "broken_cipher",
        /// The forged leaf is signed with MD5 or MD2.
        Md5Signature => "md5_signature",
        /// The forged leaf's RSA key is under 1024 bits.
        TinyKey => "tiny_key",
        /// The interceptor went on with a server whose certificate does not validate: it
        /// accepts invalid certificates, and would not notice an attacker upstream of it.
        AcceptsInvalidCertificate => "accepts_invalid_certificate",
    }
}

impl GradeReason {
    /// The grade this finding costs.
    pub fn grade(self) -> Grade {
        match self {
            Self::VersionDowngrade | Self::NoForwardSecrecy | Self::NoAead => Grade::B,
            Self::OldTlsVersion
            | Self::TripleDes
            | Self::CbcSha1
            | Self::Sha1Signature
            | Self::WeakKey
            | Self::WeakDh => Grade::C,
            Self::Ssl3
            | Self::BrokenCipher
            | Self::Md5Signature
            | Self::TinyKey
            | Self::AcceptsInvalidCertificate => Grade::F,
        }
    }
}

/// An interceptor's grade and why: what it gave the client (version, suite, the forged
/// leaf's key and signature) against what the client offered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterceptorGrade {
    pub grade: Grade,
    /// Every finding, worst first; none for an A.
    pub reasons: Vec<GradeReason>,
}

impl InterceptorGrade {
    /// The grade of these findings: the worst any of them costs, A when there are none.
    pub fn of(mut reasons: Vec<GradeReason>) -> Self {
        reasons.sort_by_key(|r| std::cmp::Reverse((r.grade(), *r)));
        reasons.dedup();
        let grade = reasons.first().map_or(Grade::A, |r| r.grade());
        Self { grade, reasons }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_finding_gives_the_grade() {
        assert_eq!(InterceptorGrade::of(vec![]).grade, Grade::A);
        let g = InterceptorGrade::of(vec![
            GradeReason::NoAead,
            GradeReason::TripleDes,
            GradeReason::NoAead,
        ]);
        assert_eq!(g.grade, Grade::C);
        assert_eq!(g.reasons, [GradeReason::TripleDes, GradeReason::NoAead]);
        let g = InterceptorGrade::of(vec![GradeReason::WeakKey, GradeReason::BrokenCipher]);
        assert_eq!(g.grade, Grade::F);
        assert_eq!(
            serde_json::to_string(&g).unwrap(),
            r#"{"grade":"F","reasons":["broken_cipher","weak_key"]}"#
        );
    }
}

//! What the report shows, counted from the events: pure (no I/O, no clock; the window is
//! handed in), so that its unit tests pin every number the page draws.

use std::collections::HashMap;

use sensor_core::event::{Severity, Timestamp, Verdict};

/// The verdicts in the order the page stacks and lists them, worst first. An event not
/// judged (a newer sensord's verdict this sensorctl does not know) counts as `Unverified`.
pub const VERDICTS: [Verdict; 5] = [
    Verdict::Intercepted,
    Verdict::PinMismatch,
    Verdict::Untrusted,
    Verdict::Unverified,
    Verdict::Clean,
];

/// Counts per verdict, in [`VERDICTS`]' order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts(pub [u64; VERDICTS.len()]);

impl Counts {
    fn add(&mut self, verdict: Verdict, n: u64) {
        let i = VERDICTS.iter().position(|v| *v == verdict).unwrap_or(3);
        self.0[i] = self.0[i].saturating_add(n);
    }

    pub fn total(&self) -> u64 {
        self.0.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    pub fn of(&self, verdict: Verdict) -> u64 {
        VERDICTS
            .iter()
            .position(|v| *v == verdict)
            .map_or(0, |i| self.0[i])
    }

    /// Events whose chain did not come from the real server, or could not be told.
    pub fn not_clean(&self) -> u64 {
        self.total() - self.of(Verdict::Clean)
    }
}

/// One event as the report needs it, read from the API's event at the edge. Text fields are
/// as they came from the network or another process: the page escapes them.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub seq: u64,
    pub time: Timestamp,
    pub verdict: Option<Verdict>,
    pub severity: Option<Severity>,
    /// `comm` and its container, without the pid: the program, to group by.
    pub program: String,
    /// `comm[pid]` and its container.
    pub process: String,
    /// `name:port`, else `address:port`.
    pub destination: String,
    /// The common name of the leaf's issuer.
    pub issuer: Option<String>,
    /// The interception product the catalogue named.
    pub product: Option<String>,
    /// The main reason in words.
    pub why: String,
    pub explanation: String,
    /// The host's name.
    pub host: Option<String>,
    /// Identical events folded into this one.
    pub count: u64,
}

/// A named group of events (a product, an issuer, a program, a destination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub counts: Counts,
}

/// The events in time buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// The first bucket's start, in seconds since the epoch.
    pub start: i64,
    /// Each bucket's width in seconds.
    pub width: i64,
    pub buckets: Vec<Counts>,
}

/// How many groups a table lists; the rest are counted in one line.
pub const TOP: usize = 15;
/// How many of the newest high and critical events the page lists.
pub const NEWEST: usize = 25;

/// Everything the page draws.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The window: from, to (epoch seconds).
    pub from: i64,
    pub to: i64,
    pub totals: Counts,
    pub timeline: Timeline,
    /// Groups by product (events the catalogue named), issuer (events not clean), program and
    /// destination: worst first, at most [`TOP`], and how many groups were left out.
    pub products: (Vec<Group>, usize),
    pub issuers: (Vec<Group>, usize),
    pub programs: (Vec<Group>, usize),
    pub destinations: (Vec<Group>, usize),
    /// The newest events of severity high or above, newest first.
    pub newest: Vec<Row>,
    /// The hosts the events came from, sorted.
    pub hosts: Vec<String>,
    /// Events read, and whether more matched than were read.
    pub events: u64,
    pub truncated: bool,
}

/// A bucket width (seconds) that puts the window in at most 61 buckets (an hour: 61 of a
/// minute, the last one holding the current minute); past the table, whatever width keeps it
/// so, however long the window asked for.
fn bucket_width(span: i64) -> i64 {
    const WIDTHS: [i64; 10] = [
        60,
        5 * 60,
        15 * 60,
        3600,
        3 * 3600,
        6 * 3600,
        12 * 3600,
        86_400,
        7 * 86_400,
        30 * 86_400,
    ];
    WIDTHS
        .into_iter()
        .find(|w| span / w <= 60)
        .unwrap_or(span / 60 + 1)
}

/// Distinct names a table keeps apart (server names come from the network: a flood of new
/// ones must not grow the report without bound); the names past them count together as
/// [`OTHER`].
pub const MAX_GROUPS: usize = 10_000;
/// The group of the names past [`MAX_GROUPS`].
pub const OTHER: &str = "(other names)";

#[derive(Default)]
struct Grouper(HashMap<String, Counts>);

impl Grouper {
    fn add(&mut self, name: &str, verdict: Verdict, n: u64) {
        let name = if self.0.len() >= MAX_GROUPS && !self.0.contains_key(name) {
            OTHER
        } else {
            name
        };
        if let Some(c) = self.0.get_mut(name) {
            c.add(verdict, n);
        } else {
            let mut c = Counts::default();
            c.add(verdict, n);
            self.0.insert(name.to_owned(), c);
        }
    }

    /// Worst first: most events not clean, then most events, then by name.
    fn top(self) -> (Vec<Group>, usize) {
        let mut all: Vec<Group> = self
            .0
            .into_iter()
            .map(|(name, counts)| Group { name, counts })
            .collect();
        all.sort_by(|a, b| {
            (b.counts.not_clean(), b.counts.total())
                .cmp(&(a.counts.not_clean(), a.counts.total()))
                .then_with(|| a.name.cmp(&b.name))
        });
        let left = all.len().saturating_sub(TOP);
        all.truncate(TOP);
        (all, left)
    }
}

/// Builds the summary as rows arrive (oldest first), holding only the counts (at most
/// [`MAX_GROUPS`] names per table) and the newest severe rows, so that a long journal costs
/// its groups, not its events.
pub struct Builder {
    from: i64,
    to: i64,
    width: i64,
    totals: Counts,
    buckets: Vec<Counts>,
    products: Grouper,
    issuers: Grouper,
    programs: Grouper,
    destinations: Grouper,
    newest: std::collections::VecDeque<Row>,
    hosts: std::collections::BTreeSet<String>,
    events: u64,
}

impl Builder {
    /// A report of the window `from..=to` (epoch seconds).
    pub fn new(from: i64, to: i64) -> Self {
        let to = to.max(from);
        let width = bucket_width(to - from);
        let n = usize::try_from((to - from) / width + 1).unwrap_or(1);
        Self {
            from,
            to,
            width,
            totals: Counts::default(),
            buckets: vec![Counts::default(); n],
            products: Grouper::default(),
            issuers: Grouper::default(),
            programs: Grouper::default(),
            destinations: Grouper::default(),
            newest: std::collections::VecDeque::new(),
            hosts: std::collections::BTreeSet::new(),
            events: 0,
        }
    }

    pub fn add(&mut self, row: Row) {
        let verdict = row.verdict.unwrap_or(Verdict::Unverified);
        let n = row.count.max(1);
        self.events = self.events.saturating_add(1);
        self.totals.add(verdict, n);
        let (secs, _) = row.time.seconds_nanos();
        let i = (secs.clamp(self.from, self.to) - self.from) / self.width;
        if let Some(b) = usize::try_from(i)
            .ok()
            .and_then(|i| self.buckets.get_mut(i))
        {
            b.add(verdict, n);
        }
        if let Some(p) = &row.product {
            self.products.add(p, verdict, n);
        }
        if verdict != Verdict::Clean
            && let Some(i) = &row.issuer
        {
            self.issuers.add(i, verdict, n);
        }
        self.programs.add(&row.program, verdict, n);
        self.destinations.add(&row.destination, verdict, n);
        if let Some(h) = &row.host
            && !self.hosts.contains(h)
            && self.hosts.len() < 1000
        {
            self.hosts.insert(h.clone());
        }
        if row.severity.is_some_and(|s| s >= Severity::High) {
            if self.newest.len() == NEWEST {
                self.newest.pop_front();
            }
            self.newest.push_back(row);
        }
    }

    pub fn finish(self, truncated: bool) -> Summary {
        Summary {
            from: self.from,
            to: self.to,
            totals: self.totals,
            timeline: Timeline {
                start: self.from,
                width: self.width,
                buckets: self.buckets,
            },
            products: self.products.top(),
            issuers: self.issuers.top(),
            programs: self.programs.top(),
            destinations: self.destinations.top(),
            newest: self.newest.into_iter().rev().collect(),
            hosts: self.hosts.into_iter().collect(),
            events: self.events,
            truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(secs: i64, verdict: Verdict, severity: Severity, program: &str, dest: &str) -> Row {
        Row {
            seq: 0,
            time: Timestamp::from_seconds_nanos(secs, 0),
            verdict: Some(verdict),
            severity: Some(severity),
            program: program.into(),
            process: format!("{program}[1]"),
            destination: dest.into(),
            count: 1,
            ..Row::default()
        }
    }

    #[test]
    fn buckets_fit_the_window() {
        assert_eq!(bucket_width(3600), 60);
        assert_eq!(bucket_width(24 * 3600), 60 * 60);
        assert_eq!(bucket_width(7 * 86_400), 3 * 3600);
        assert_eq!(bucket_width(30 * 86_400), 12 * 3600);
        assert_eq!(bucket_width(90 * 86_400), 7 * 86_400);
        for span in [
            0,
            59,
            60,
            3600,
            86_400,
            7 * 86_400,
            400 * 86_400,
            40_000 * 86_400,
        ] {
            let s = Builder::new(1000, 1000 + span).finish(false);
            let n = s.timeline.buckets.len();
            assert!((1..=61).contains(&n), "{span}: {n}");
        }
        // `--since 1000000y`: a window as long as time itself is still 61 buckets at most.
        let s = Builder::new(i64::MIN / 2, i64::MAX / 2).finish(false);
        assert!(
            s.timeline.buckets.len() <= 61,
            "{}",
            s.timeline.buckets.len()
        );
        let s = Builder::new(1000, 1000 + 7 * 86_400).finish(false);
        assert!(s.timeline.start + s.timeline.width * s.timeline.buckets.len() as i64 > s.to);
    }

    #[test]
    fn counts_groups_and_the_newest_severe_events() {
        let mut b = Builder::new(0, 3600);
        b.add(row(
            10,
            Verdict::Clean,
            Severity::Info,
            "curl",
            "a.test:443",
        ));
        b.add(row(
            70,
            Verdict::Clean,
            Severity::Info,
            "curl",
            "a.test:443",
        ));
        let mut r = row(
            75,
            Verdict::Intercepted,
            Severity::High,
            "wget",
            "b.test:443",
        );
        r.product = Some("mitmproxy".into());
        r.issuer = Some("mitmproxy".into());
        r.count = 3;
        b.add(r);
        let mut r = row(
            4000,
            Verdict::Untrusted,
            Severity::Critical,
            "curl",
            "c.test:443",
        );
        r.issuer = Some("localhost".into());
        b.add(r);
        let mut clean = row(80, Verdict::Clean, Severity::Info, "curl", "a.test:443");
        clean.issuer = Some("Public CA".into());
        clean.product = None;
        b.add(clean);
        let s = b.finish(false);

        assert_eq!(s.events, 5);
        assert_eq!(s.totals.total(), 7, "a folded event counts its count");
        assert_eq!(s.totals.of(Verdict::Intercepted), 3);
        assert_eq!(s.totals.of(Verdict::Clean), 3);
        // Buckets of a minute; a time past the window lands in the last bucket.
        assert_eq!(s.timeline.width, 60);
        assert_eq!(s.timeline.buckets[0].of(Verdict::Clean), 1);
        assert_eq!(s.timeline.buckets[1].of(Verdict::Clean), 2);
        assert_eq!(s.timeline.buckets[1].of(Verdict::Intercepted), 3);
        assert_eq!(s.timeline.buckets.last().unwrap().of(Verdict::Untrusted), 1);
        // Products from the catalogue; issuers of events that were not clean only.
        assert_eq!(s.products.0.len(), 1);
        assert_eq!(s.products.0[0].name, "mitmproxy");
        let issuers: Vec<&str> = s.issuers.0.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(issuers, ["mitmproxy", "localhost"]);
        // Worst first: wget (3 intercepted) before curl (1 untrusted, 3 clean).
        let programs: Vec<(&str, u64)> = s
            .programs
            .0
            .iter()
            .map(|g| (g.name.as_str(), g.counts.total()))
            .collect();
        assert_eq!(programs, [("wget", 3), ("curl", 4)]);
        // Newest first, high and critical only.
        let newest: Vec<&str> = s.newest.iter().map(|r| r.destination.as_str()).collect();
        assert_eq!(newest, ["c.test:443", "b.test:443"]);
    }

    #[test]
    fn tables_list_the_top_groups_and_count_the_rest() {
        let mut b = Builder::new(0, 60);
        for i in 0..(TOP + 4) {
            b.add(row(
                1,
                Verdict::Clean,
                Severity::Info,
                &format!("p{i:02}"),
                "x:1",
            ));
        }
        let s = b.finish(true);
        assert_eq!(s.programs.0.len(), TOP);
        assert_eq!(s.programs.1, 4);
        assert_eq!(s.programs.0[0].name, "p00", "ties by name");
        assert!(s.truncated);
    }

    #[test]
    fn a_flood_of_names_is_counted_in_bounded_groups() {
        let mut b = Builder::new(0, 60);
        for i in 0..(MAX_GROUPS + 50) {
            b.add(row(
                1,
                Verdict::Untrusted,
                Severity::Info,
                "c",
                &format!("d{i}:1"),
            ));
        }
        assert_eq!(b.destinations.0.len(), MAX_GROUPS + 1);
        let s = b.finish(false);
        let other = s.destinations.0.iter().find(|g| g.name == OTHER).unwrap();
        // The first MAX_GROUPS names fill the table; the 50 after them count as one.
        assert_eq!(other.counts.total(), 50);
        assert_eq!(s.totals.total(), (MAX_GROUPS + 50) as u64);
    }

    #[test]
    fn the_newest_list_is_bounded() {
        let mut b = Builder::new(0, 60);
        for i in 0..(NEWEST as i64 + 10) {
            b.add(row(
                i,
                Verdict::Intercepted,
                Severity::High,
                "c",
                &format!("d{i}:1"),
            ));
        }
        let s = b.finish(false);
        assert_eq!(s.newest.len(), NEWEST);
        assert_eq!(s.newest[0].destination, format!("d{}:1", NEWEST as i64 + 9));
    }
}

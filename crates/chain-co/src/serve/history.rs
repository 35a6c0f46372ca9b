//! What happened before the current decision: a journal of events (switches, nodes dropped
//! and back, drains and preferences, applies, pool warnings, nginx's deaths, restarts) and
//! each node's heads over the last hour. The journal is also kept on disk beside the state file
//! ([`crate::serve::journal_file`]) and read back at start, so it survives a restart; the heads
//! are in memory only.
//!
//! Both are bounded. The journal keeps the last [`JOURNAL_EVENTS`] events and at most
//! [`JOURNAL_BYTES`] of JSON lines, in memory and on disk alike (each event's text capped at
//! [`EVENT_TEXT`] characters and made inert: reasons may quote a daemon's words), so a
//! flapping node with a long error cannot grow it. Repeats are folded when shown
//! ([`History::events`]). Heads are kept at
//! most one sample per [`SAMPLE_EVERY`] for [`HEADS_WINDOW`]: 360 samples of 16 bytes, about
//! 6 KiB per node (60 KiB at 10 nodes, 6 MiB at 1000).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub(crate) const JOURNAL_EVENTS: usize = 500;
/// The journal's text, at most: 500 events of about 500 bytes.
pub(crate) const JOURNAL_BYTES: usize = 256 * 1024;
/// Characters kept of one event's text.
pub(crate) const EVENT_TEXT: usize = 400;
pub(crate) const HEADS_WINDOW: Duration = Duration::from_secs(3600);
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new primary (or none: fail static).
    Switch,
    /// A node left the pool.
    Down,
    /// A node came back.
    Up,
    /// The operator drained, undrained, preferred or cleared a preference.
    Mark,
    /// An apply that changed the target, or failed.
    Apply,
    /// A pool warning appeared or cleared.
    Warning,
    /// chain-co started: the events before it are from the previous run.
    Start,
    /// Pending messages carried to a new primary, or why they could not be.
    Messages,
    /// nginx died or came back (the nginx watch, `[ha] track_file`).
    Nginx,
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix seconds.
    pub at: u64,
    pub kind: EventKind,
    pub node: Option<String>,
    /// What happened and why, in words.
    pub text: String,
    /// How many times the same event happened in a row, folded into this one when shown.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u32,
    /// Unix seconds of the last repeat, when folded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<u64>,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// Repeats of an event among this many of the latest lines shown are folded into it: a node
/// whose warning is raised and cleared every few rounds is one line of each, with a count.
const FOLD_WITHIN: usize = 4;
/// ... when the repeat follows within this long; a repeat an hour later is news again.
const FOLD_FOR: u64 = 600;

/// One head sample: seconds since the Unix epoch, height, lag in epochs, probe latency in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample(pub u32, pub u32, pub u16, pub u16);

/// The journal and the heads.
#[derive(Debug)]
pub struct History {
    events: VecDeque<Event>,
    /// Bytes the journal holds, counted as its lines in the journal file.
    event_bytes: usize,
    heads: BTreeMap<String, VecDeque<Sample>>,
    /// The least time between two samples of a node: [`SAMPLE_EVERY`], sparser for large pools.
    every: Duration,
    /// Where the journal is kept on disk; `None`: in memory only.
    file: Option<crate::serve::journal_file::JournalFile>,
    /// A failed append is said once, not at every event.
    file_failed: bool,
}

impl Default for History {
    fn default() -> Self {
        History {
            events: VecDeque::new(),
            event_bytes: 0,
            heads: BTreeMap::new(),
            every: SAMPLE_EVERY,
            file: None,
            file_failed: false,
        }
    }
}

/// Nodes whose heads are sampled every [`SAMPLE_EVERY`]; a larger pool is sampled
/// proportionally less often, so that the rings never hold more than about 870 KB (issue #17:
/// at 1000 nodes, one sample per 10 s for an hour was 6 MiB, a fifth of the memory target).
/// The chart of a pool that large is an overview; the metrics keep every probe.
pub(crate) const FULL_RATE_NODES: usize = 200;

/// An event's share of the bound: its line in the journal file.
fn size(e: &Event) -> usize {
    serde_json::to_string(e).map_or(0, |l| l.len() + 1)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl History {
    /// A journal kept in `path` (see [`crate::serve::journal_file`]), with what it held read
    /// back. Returns what the operator must be told (a damaged file set aside, a file that
    /// cannot be opened: the journal then lives in memory only).
    pub(crate) fn with_file(path: &std::path::Path) -> (History, Vec<String>) {
        let mut h = History::default();
        match crate::serve::journal_file::JournalFile::open(path) {
            Ok((file, back)) => {
                for e in back.events {
                    h.keep(e);
                }
                h.file = Some(file);
                (h, back.notices)
            }
            Err(why) => (h, vec![format!("journal kept in memory only: {why}")]),
        }
    }

    /// Where the journal is kept on disk, if it is.
    pub fn file(&self) -> Option<&std::path::Path> {
        self.file.as_ref().map(|f| f.path())
    }

    pub(crate) fn record(
        &mut self,
        at: SystemTime,
        kind: EventKind,
        node: Option<&str>,
        text: String,
    ) {
        let event = Event {
            at: unix(at),
            kind,
            node: node.map(|n| crate::text::inert(n, 64)),
            text: crate::text::inert(&text, EVENT_TEXT),
            count: 1,
            last: None,
        };
        if let Some(f) = &mut self.file {
            match f.append(&event) {
                Ok(()) => self.file_failed = false,
                Err(e) if !self.file_failed => {
                    tracing::error!(error = %e, "cannot append to the journal file; it is kept in memory meanwhile");
                    self.file_failed = true;
                }
                Err(_) => {}
            }
        }
        self.keep(event);
    }

    /// Keeps `event` in memory, dropping the oldest past the bounds.
    fn keep(&mut self, event: Event) {
        self.event_bytes += size(&event);
        self.events.push_back(event);
        while self.events.len() > JOURNAL_EVENTS || self.event_bytes > JOURNAL_BYTES {
            match self.events.pop_front() {
                Some(old) => self.event_bytes -= size(&old),
                None => break,
            }
        }
    }

    /// Adds a node's head at `at`, unless its last sample is younger than [`SAMPLE_EVERY`];
    /// drops samples older than the window.
    pub fn sample(
        &mut self,
        node: &str,
        at: SystemTime,
        height: Option<u64>,
        lag: Option<u64>,
        latency: Option<Duration>,
    ) {
        let t = unix(at);
        let every = self.every.as_secs();
        // Exactly an hour's worth: a ring that doubled as it grew would waste up to half.
        let full = (HEADS_WINDOW.as_secs() / every.max(1)) as usize + 1;
        let ring = self
            .heads
            .entry(node.to_string())
            .or_insert_with(|| VecDeque::with_capacity(full));
        if ring.back().is_some_and(|s| t < u64::from(s.0) + every) {
            return;
        }
        // The oldest go first, so that the ring never outgrows its hour.
        let oldest = t.saturating_sub(HEADS_WINDOW.as_secs());
        while ring.front().is_some_and(|s| u64::from(s.0) < oldest) {
            ring.pop_front();
        }
        let clamp16 = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
        ring.push_back(Sample(
            u32::try_from(t).unwrap_or(u32::MAX),
            height.map_or(0, |h| u32::try_from(h).unwrap_or(u32::MAX)),
            lag.map_or(u16::MAX, clamp16),
            latency.map_or(u16::MAX, |l| clamp16(l.as_millis() as u64)),
        ));
    }

    /// Forgets the nodes not in `nodes` and sets the sampling rate for a pool of that size.
    pub(crate) fn retain_nodes(&mut self, nodes: &[&str]) {
        self.heads.retain(|n, _| nodes.contains(&n.as_str()));
        self.fit(nodes.len());
    }

    /// One sample per [`SAMPLE_EVERY`] × ⌈nodes / [`FULL_RATE_NODES`]⌉.
    pub(crate) fn fit(&mut self, nodes: usize) {
        let factor = nodes.div_ceil(FULL_RATE_NODES).max(1) as u32;
        self.every = SAMPLE_EVERY * factor;
    }

    /// The least time between two samples of a node, for this pool's size.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// The journal as shown, oldest first, with repeats folded: an event equal (kind, node and
    /// text) to one of the last [`FOLD_WITHIN`] lines within [`FOLD_FOR`] becomes that line's
    /// count and last time ("×6, 09:06:00–09:06:16").
    pub fn events(&self) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        for e in &self.events {
            let from = out.len().saturating_sub(FOLD_WITHIN);
            let same = out[from..].iter_mut().rev().find(|o| {
                o.kind == e.kind
                    && o.node == e.node
                    && o.text == e.text
                    && e.at <= o.last.unwrap_or(o.at) + FOLD_FOR
            });
            match same {
                Some(o) => {
                    o.count += e.count;
                    o.last = Some(e.last.unwrap_or(e.at));
                }
                None => out.push(e.clone()),
            }
        }
        out
    }

    /// The time of the oldest event kept: how far back the journal reaches.
    pub fn since(&self) -> Option<u64> {
        self.events.front().map(|e| e.at)
    }

    pub fn heads(&self) -> BTreeMap<String, Vec<Sample>> {
        self.heads
            .iter()
            .map(|(n, r)| (n.clone(), r.iter().copied().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn repeats_are_folded_into_one_line_with_a_count_and_their_times() {
        let mut h = History::default();
        h.record(at(100), EventKind::Switch, None, "a is primary".into());
        for i in 0..6 {
            h.record(
                at(200 + 3 * i),
                EventKind::Warning,
                None,
                "silent push".into(),
            );
            h.record(
                at(201 + 3 * i),
                EventKind::Warning,
                None,
                "cleared: silent push".into(),
            );
        }
        // Much later, the same warning is news again.
        h.record(at(5000), EventKind::Warning, None, "silent push".into());
        let e = h.events();
        let lines: Vec<(&str, u32, Option<u64>)> = e
            .iter()
            .map(|e| (e.text.as_str(), e.count, e.last))
            .collect();
        assert_eq!(
            lines,
            [
                ("a is primary", 1, None),
                ("silent push", 6, Some(215)),
                ("cleared: silent push", 6, Some(216)),
                ("silent push", 1, None),
            ]
        );
        assert_eq!(h.since(), Some(100));
    }

    #[test]
    fn a_journal_file_is_read_back_within_the_same_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.journal.jsonl");
        let (mut h, notices) = History::with_file(&path);
        assert!(notices.is_empty(), "{notices:?}");
        let text = "y".repeat(EVENT_TEXT);
        for i in 0..3 * JOURNAL_EVENTS as u64 {
            h.record(at(i), EventKind::Down, Some("a"), format!("{i} {text}"));
        }
        let (again, _) = History::with_file(&path);
        assert_eq!(again.file(), Some(path.as_path()));
        assert!(again.event_bytes <= JOURNAL_BYTES);
        assert_eq!(
            again.events.back().map(|e| e.at),
            h.events.back().map(|e| e.at),
            "the newest event is read back"
        );
    }

    #[test]
    fn the_journal_keeps_the_last_events_only() {
        let mut h = History::default();
        for i in 0..(JOURNAL_EVENTS as u64 + 10) {
            h.record(at(i), EventKind::Apply, None, format!("event {i}"));
        }
        let e = h.events();
        assert_eq!(e.len(), JOURNAL_EVENTS);
        assert_eq!(e[0].text, "event 10");
    }

    #[test]
    fn heads_are_sampled_and_bounded_to_the_window() {
        let mut h = History::default();
        for s in 0..7200u64 {
            h.sample("a", at(1_000_000 + s), Some(s), Some(0), None);
        }
        let a = &h.heads()["a"];
        assert!(a.len() <= 361, "{}", a.len());
        let last = u64::from(a.last().expect("samples").0);
        assert!(u64::from(a[0].0) >= last - 3600, "older than the window");
        assert_eq!(a.last().map(|s| s.3), Some(u16::MAX), "no latency known");
        h.retain_nodes(&[]);
        assert!(h.heads().is_empty());
    }

    #[test]
    fn large_pools_are_sampled_less_often_and_rings_hold_an_hour_exactly() {
        let mut h = History::default();
        h.fit(150);
        assert_eq!(h.every(), SAMPLE_EVERY);
        h.fit(1000);
        assert_eq!(h.every(), SAMPLE_EVERY * 5);
        for i in 0..10_000 {
            h.sample("a", at(i * 10), Some(i), Some(0), None);
        }
        assert_eq!(
            h.heads()["a"].len(),
            73,
            "an hour at one per 50 s, both ends"
        );
        assert!(h.heads.get("a").expect("ring").capacity() <= 80);
    }

    #[test]
    fn the_journal_is_bounded_in_bytes_and_its_texts_are_inert() {
        let mut h = History::default();
        let long = format!(
            "expected a number, got \"{}\"\n\u{1b}[2J",
            "A".repeat(1 << 20)
        );
        for _ in 0..2 * JOURNAL_EVENTS {
            h.record(
                SystemTime::UNIX_EPOCH,
                EventKind::Down,
                Some("a"),
                long.clone(),
            );
        }
        let events = h.events();
        let bytes: usize = events.iter().map(|e| e.text.len() + 1).sum();
        assert!(bytes <= JOURNAL_BYTES, "{bytes}");
        assert!(events
            .iter()
            .all(|e| e.text.chars().count() <= EVENT_TEXT + 1));
        assert!(events.iter().all(|e| !e.text.contains('\u{1b}')));
    }
}

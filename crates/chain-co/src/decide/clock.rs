//! A wall clock for the decision that does not jump with the system clock.
//!
//! The staleness and future-head rules compare head timestamps with the wall clock. If the
//! system clock jumps (a VM resumed, NTP stepping a badly wrong clock), every head would at
//! once look stale (jump forward) or from the future (jump back), and the whole pool would be
//! dropped for a clock problem. [`SteadyClock`] follows the system clock while it agrees with
//! the monotonic clock; when they disagree it keeps time by the monotonic clock for a while
//! (`settle`), then accepts the new system time if the jump persists, once, loudly.
//!
//! The daemons' heads are evidence too: after a VM resume the monotonic clock stood still
//! while the wall clock moved on, and the daemons' heads agree with the new wall time. When at
//! least two nodes' heads are near the system time and far from the bridged one, the system
//! time is taken at once ([`ClockEvent::Vouched`]), instead of the whole pool reading "head
//! from the future" for a minute.

use std::time::{Duration, Instant, SystemTime};

/// What the clock noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClockEvent {
    /// The system clock moved by this much more (or less) than real time; bridging it.
    Jumped { forward: bool, by: Duration },
    /// The jump persisted for `settle`: the system time is accepted.
    Accepted,
    /// The system clock jumped and at least two nodes' heads agree with its new time: taken
    /// at once.
    Vouched {
        forward: bool,
        by: Duration,
        heads: usize,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct SteadyClock {
    anchor_wall: SystemTime,
    anchor_mono: Instant,
    jump_since: Option<Instant>,
    tolerance: Duration,
    settle: Duration,
}

impl SteadyClock {
    pub fn new(settle: Duration) -> SteadyClock {
        SteadyClock {
            anchor_wall: SystemTime::now(),
            anchor_mono: Instant::now(),
            jump_since: None,
            tolerance: Duration::from_secs(2),
            settle,
        }
    }

    /// The time to decide with, and what happened to the clock since the last call.
    pub fn now(&mut self) -> (SystemTime, Option<ClockEvent>) {
        self.observe(SystemTime::now(), Instant::now())
    }

    /// As [`SteadyClock::now`], with the heads' timestamps (Unix seconds) as evidence: heads
    /// within `window` of the system time and not of the bridged one vouch for the system time.
    pub(crate) fn now_vouched(
        &mut self,
        heads: &[u64],
        window: Duration,
    ) -> (SystemTime, Option<ClockEvent>) {
        self.observe_vouched(SystemTime::now(), Instant::now(), heads, window)
    }

    fn observe_vouched(
        &mut self,
        wall: SystemTime,
        mono: Instant,
        heads: &[u64],
        window: Duration,
    ) -> (SystemTime, Option<ClockEvent>) {
        let (t, event) = self.observe(wall, mono);
        if t == wall {
            return (t, event);
        }
        let near = |at: SystemTime, ts: u64| {
            let head = SystemTime::UNIX_EPOCH + Duration::from_secs(ts);
            let d = head.duration_since(at).unwrap_or_else(|e| e.duration());
            d <= window
        };
        let vouching = heads
            .iter()
            .filter(|&&ts| near(wall, ts) && !near(t, ts))
            .count();
        if vouching < 2 {
            return (t, event);
        }
        let (forward, by) = match wall.duration_since(t) {
            Ok(d) => (true, d),
            Err(e) => (false, e.duration()),
        };
        self.anchor_wall = wall;
        self.anchor_mono = mono;
        self.jump_since = None;
        (
            wall,
            Some(ClockEvent::Vouched {
                forward,
                by,
                heads: vouching,
            }),
        )
    }

    fn observe(&mut self, wall: SystemTime, mono: Instant) -> (SystemTime, Option<ClockEvent>) {
        let derived = self.anchor_wall + mono.duration_since(self.anchor_mono);
        let (forward, diff) = match wall.duration_since(derived) {
            Ok(d) => (true, d),
            Err(e) => (false, e.duration()),
        };
        if diff <= self.tolerance {
            // In agreement (again): a jump that undid itself is forgotten.
            self.anchor_wall = wall;
            self.anchor_mono = mono;
            self.jump_since = None;
            return (wall, None);
        }
        match self.jump_since {
            None => {
                self.jump_since = Some(mono);
                (derived, Some(ClockEvent::Jumped { forward, by: diff }))
            }
            Some(since) if mono.duration_since(since) >= self.settle => {
                self.anchor_wall = wall;
                self.anchor_mono = mono;
                self.jump_since = None;
                (wall, Some(ClockEvent::Accepted))
            }
            Some(_) => (derived, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_system_clock_and_bridges_jumps() {
        let mono0 = Instant::now();
        let wall0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut c = SteadyClock {
            anchor_wall: wall0,
            anchor_mono: mono0,
            jump_since: None,
            tolerance: Duration::from_secs(2),
            settle: Duration::from_secs(60),
        };
        let s = Duration::from_secs;
        // Normal time, with a little drift: follows the system clock.
        assert_eq!(
            c.observe(wall0 + s(5) + Duration::from_millis(300), mono0 + s(5)),
            (wall0 + s(5) + Duration::from_millis(300), None)
        );
        // The system clock jumps 10 minutes ahead: time goes on by the monotonic clock.
        let (t, e) = c.observe(wall0 + s(610), mono0 + s(10));
        assert_eq!(
            e,
            Some(ClockEvent::Jumped {
                forward: true,
                by: Duration::from_millis(599_700)
            })
        );
        assert!(t < wall0 + s(11));
        let (t, e) = c.observe(wall0 + s(640), mono0 + s(40));
        assert_eq!(e, None);
        assert!(t < wall0 + s(41));
        // Still there after `settle`: accepted.
        let (t, e) = c.observe(wall0 + s(671), mono0 + s(71));
        assert_eq!((t, e), (wall0 + s(671), Some(ClockEvent::Accepted)));
        // A jump back that the system corrects quickly is bridged and forgotten.
        let (_, e) = c.observe(wall0 + s(600), mono0 + s(72));
        assert!(matches!(e, Some(ClockEvent::Jumped { forward: false, .. })));
        let (t, e) = c.observe(wall0 + s(673), mono0 + s(73));
        assert_eq!((t, e), (wall0 + s(673), None));
    }

    #[test]
    fn heads_that_agree_with_the_new_time_vouch_for_it_at_once() {
        let mono0 = Instant::now();
        let wall0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = Duration::from_secs;
        let mut c = SteadyClock {
            anchor_wall: wall0,
            anchor_mono: mono0,
            jump_since: None,
            tolerance: s(2),
            settle: s(60),
        };
        let window = s(62);
        // A VM resumed: wall +600 s, monotonic +1 s; two heads agree with the new wall time.
        let heads = [1_000_000 + 595, 1_000_000 + 598, 1_000_000 - 3000];
        let (t, e) = c.observe_vouched(wall0 + s(601), mono0 + s(1), &heads, window);
        assert_eq!(t, wall0 + s(601));
        assert!(
            matches!(
                e,
                Some(ClockEvent::Vouched {
                    forward: true,
                    heads: 2,
                    ..
                })
            ),
            "{e:?}"
        );
        // One head alone does not move the clock: the jump is bridged.
        let mut c = SteadyClock {
            jump_since: None,
            anchor_wall: wall0,
            anchor_mono: mono0,
            ..c
        };
        let (t, e) = c.observe_vouched(wall0 + s(601), mono0 + s(1), &heads[1..], window);
        assert!(t < wall0 + s(2));
        assert!(matches!(e, Some(ClockEvent::Jumped { .. })), "{e:?}");
    }
}

//! The decision: which daemon nginx sends traffic to, which ones stand by, and why.
//!
//! [`select`] is a pure function — `(rules, previous state, observations, now) → (decision, next
//! state)` — with no clock reads, no I/O and no randomness, so every situation is a row in a table
//! test. Everything about *which node* lives here: the best head, lag, rise/fall hysteresis, the
//! sticky primary and tie-breaking.
//!
//! The rules, in the order they apply:
//! 1. The best head is the one with the greatest parent weight (Filecoin's fork choice is by
//!    weight, not height); ties go to the greater height, then to the node listed first in the
//!    config, so that equal nodes never flip.
//! 2. A probe is *good* when the node answered and is at most `max_lag` epochs below the best
//!    head. Anything else is *bad*, with the reason in words.
//! 3. Hysteresis (as in pingora's health checks): a node comes *up* after `rise` consecutive good
//!    probes and goes *down* after `fall` consecutive bad ones. Nodes start down, so a restart
//!    never publishes a node that has not proven itself.
//! 4. The primary is sticky: it stays while it is up, even when another node is a block ahead.
//!    Moving traffic costs the miner its websockets; only a primary that went down is replaced,
//!    by the best-ranked up node.
//! 5. With no node up, there is no primary: the caller keeps what it published last (fail static).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::rpc::{Head, RpcError};

/// The rules of [`select`], from the `[select]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectRules {
    /// Epochs behind the best head that still count as healthy.
    pub max_lag: u64,
    /// Consecutive good probes before a node is used.
    pub rise: u32,
    /// Consecutive bad probes before a node is dropped.
    pub fall: u32,
}

/// What one probe of one node found.
#[derive(Debug, Clone)]
pub struct Observation {
    pub node: String,
    pub result: Result<Head, RpcError>,
}

/// Hysteresis memory of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Track {
    pub up: bool,
    /// Consecutive good probes (0 after a bad one).
    pub good: u32,
    /// Consecutive bad probes (0 after a good one).
    pub bad: u32,
}

/// What [`select`] remembers between rounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectState {
    pub primary: Option<String>,
    pub tracks: BTreeMap<String, Track>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Backup,
    Excluded,
}

/// The verdict on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeVerdict {
    pub name: String,
    pub role: Role,
    /// Up after hysteresis: in the upstream.
    pub healthy: bool,
    pub height: Option<u64>,
    /// Epochs below the best head.
    pub lag: Option<u64>,
    /// Wall-clock age of the node's head block.
    #[serde(with = "humantime_serde")]
    pub head_age: Option<Duration>,
    pub track: Track,
    /// Why, in words an operator can act on.
    pub reason: String,
}

/// A change of primary, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Switch {
    pub from: Option<String>,
    pub to: Option<String>,
    pub why: String,
}

/// The outcome of one round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub primary: Option<String>,
    pub backups: Vec<String>,
    /// Every node, in config order.
    pub nodes: Vec<NodeVerdict>,
    pub best_height: Option<u64>,
    /// Set when the primary changed in this round.
    pub switch: Option<Switch>,
}

impl Decision {
    pub fn verdict(&self, name: &str) -> Option<&NodeVerdict> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// Decides the primary and backups. Observations come in config order, one per node.
pub fn select(
    rules: &SelectRules,
    prev: &SelectState,
    observations: &[Observation],
    now: SystemTime,
) -> (Decision, SelectState) {
    // Rule 1: the best head. `max_by_key` keeps the last maximum, so config order is made a
    // tie-breaker explicitly by ranking earlier nodes higher.
    let best = observations
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.result.as_ref().ok().map(|h| (i, h)))
        .max_by_key(|(i, h)| (h.weight, h.height, std::cmp::Reverse(*i)))
        .map(|(_, h)| h);

    let mut tracks = BTreeMap::new();
    let mut nodes = Vec::with_capacity(observations.len());
    for o in observations {
        let lag = match (&o.result, best) {
            (Ok(h), Some(b)) => Some(b.height.saturating_sub(h.height)),
            _ => None,
        };
        // Rule 2: good or bad, and why.
        let bad_reason = match (&o.result, lag) {
            (Err(e), _) => Some(e.to_string()),
            (Ok(_), Some(l)) if l > rules.max_lag => {
                Some(format!("lagging {l} epochs (max {})", rules.max_lag))
            }
            (Ok(_), _) => None,
        };
        // Rule 3: hysteresis.
        let mut t = prev.tracks.get(&o.node).cloned().unwrap_or_default();
        if bad_reason.is_none() {
            t.good = t.good.saturating_add(1);
            t.bad = 0;
            if !t.up && t.good >= rules.rise {
                t.up = true;
            }
        } else {
            t.bad = t.bad.saturating_add(1);
            t.good = 0;
            if t.up && t.bad >= rules.fall {
                t.up = false;
            }
        }
        let head = o.result.as_ref().ok();
        let reason = match (&bad_reason, t.up) {
            (None, true) => "healthy".to_string(),
            (None, false) => format!("rising: {} of {} good probes", t.good, rules.rise),
            (Some(r), true) => format!(
                "{r}; still in, dropped after {} more bad probe{}",
                rules.fall - t.bad,
                if rules.fall - t.bad == 1 { "" } else { "s" }
            ),
            (Some(r), false) => r.clone(),
        };
        nodes.push(NodeVerdict {
            name: o.node.clone(),
            role: Role::Excluded,
            healthy: t.up,
            height: head.map(|h| h.height),
            lag,
            head_age: head.map(|h| {
                now.duration_since(SystemTime::UNIX_EPOCH + Duration::from_secs(h.timestamp))
                    .unwrap_or_default()
            }),
            track: t.clone(),
            reason,
        });
        tracks.insert(o.node.clone(), t);
    }

    // Rank up nodes: those that answered this round first, by their head, then config order.
    let mut ranked: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].healthy).collect();
    ranked.sort_by_key(|&i| {
        let h = observations[i].result.as_ref().ok();
        (std::cmp::Reverse(h.map(|h| (h.weight, h.height))), i)
    });

    // Rule 4: the sticky primary.
    let kept = prev
        .primary
        .as_ref()
        .and_then(|p| ranked.iter().copied().find(|&i| &nodes[i].name == p));
    let primary = kept.or_else(|| ranked.first().copied());
    let mut backups = Vec::new();
    for &i in &ranked {
        if Some(i) == primary {
            nodes[i].role = Role::Primary;
        } else {
            nodes[i].role = Role::Backup;
            backups.push(nodes[i].name.clone());
        }
    }
    let primary_name = primary.map(|i| nodes[i].name.clone());

    let switch = (primary_name != prev.primary).then(|| {
        let why = match &prev.primary {
            None => "no primary before".to_string(),
            Some(old) => match nodes.iter().find(|n| &n.name == old) {
                Some(v) => format!("{old} went down: {}", v.reason),
                None => format!("{old} is no longer configured"),
            },
        };
        Switch {
            from: prev.primary.clone(),
            to: primary_name.clone(),
            why: if primary_name.is_none() {
                format!("{why}; no healthy node left, keeping the last published upstream")
            } else {
                why
            },
        }
    });

    let decision = Decision {
        // Rule 5: with no node up there is no primary, and the caller fails static.
        primary: primary_name.clone(),
        backups,
        nodes,
        best_height: best.map(|b| b.height),
        switch,
    };
    // Without a new primary, remember the old one: when it comes back up first, it is still
    // the one nginx has, and keeping it avoids a needless reload.
    let next = SelectState {
        primary: primary_name.or_else(|| prev.primary.clone()),
        tracks,
    };
    (decision, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: SelectRules = SelectRules {
        max_lag: 2,
        rise: 2,
        fall: 3,
    };

    fn head(height: u64, weight: u128) -> Head {
        Head {
            height,
            weight,
            key: vec![format!("bafy{height}")],
            timestamp: 1_000 + height * 30,
            blocks: 1,
        }
    }

    /// What a node answers in one round, written compactly in the tables below.
    #[derive(Clone, Copy)]
    enum A {
        /// Height; the weight grows with the height.
        H(u64),
        /// Height and explicit weight.
        HW(u64, u128),
        Timeout,
        Refused,
    }

    fn observe(names: &[&str], answers: &[A]) -> Vec<Observation> {
        names
            .iter()
            .zip(answers)
            .map(|(n, a)| Observation {
                node: n.to_string(),
                result: match *a {
                    A::H(h) => Ok(head(h, u128::from(h) * 10)),
                    A::HW(h, w) => Ok(head(h, w)),
                    A::Timeout => Err(RpcError::Timeout(Duration::from_secs(3))),
                    A::Refused => Err(RpcError::Connect("Connection refused".into())),
                },
            })
            .collect()
    }

    /// Runs rounds; returns every decision.
    fn run(rules: &SelectRules, names: &[&str], rounds: &[Vec<A>]) -> Vec<Decision> {
        let mut state = SelectState::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        rounds
            .iter()
            .map(|answers| {
                let (d, next) = select(rules, &state, &observe(names, answers), now);
                state = next;
                d
            })
            .collect()
    }

    fn up(h: u64) -> Vec<A> {
        vec![A::H(h), A::H(h), A::H(h)]
    }

    struct Row {
        what: &'static str,
        rounds: Vec<Vec<A>>,
        primary: Option<&'static str>,
        backups: &'static [&'static str],
        /// (node, words its reason must contain)
        reasons: &'static [(&'static str, &'static str)],
    }

    #[test]
    fn table() {
        use A::*;
        let abc = ["a", "b", "c"];
        let rows = vec![
            Row {
                what: "nobody is used before rise good probes",
                rounds: vec![up(100)],
                primary: None,
                backups: &[],
                reasons: &[("a", "rising: 1 of 2"), ("c", "rising: 1 of 2")],
            },
            Row {
                what: "after rise, the first in config order wins a tie",
                rounds: vec![up(100), up(101)],
                primary: Some("a"),
                backups: &["b", "c"],
                reasons: &[("a", "healthy")],
            },
            Row {
                what: "the heaviest head wins, not config order",
                rounds: vec![vec![H(100), H(101), H(100)]; 2],
                primary: Some("b"),
                backups: &["a", "c"],
                reasons: &[],
            },
            Row {
                what: "weight beats height",
                rounds: vec![vec![HW(100, 5000), HW(101, 900), HW(100, 1000)]; 2],
                primary: Some("a"),
                backups: &["c", "b"],
                reasons: &[],
            },
            Row {
                what: "equal weight: greater height wins",
                rounds: vec![vec![HW(100, 1000), HW(101, 1000), HW(100, 1000)]; 2],
                primary: Some("b"),
                backups: &["a", "c"],
                reasons: &[],
            },
            Row {
                what: "sticky: a primary one block behind stays",
                rounds: vec![
                    up(100),
                    up(101),
                    vec![H(102), H(103), H(103)],
                    vec![H(103), H(104), H(104)],
                ],
                primary: Some("a"),
                backups: &["b", "c"],
                reasons: &[("a", "healthy")],
            },
            Row {
                what: "a lagging node is bad, with the lag in words",
                rounds: vec![vec![H(100), H(107), H(107)]; 2],
                primary: Some("b"),
                backups: &["c"],
                reasons: &[("a", "lagging 7 epochs (max 2)")],
            },
            Row {
                what: "lag of exactly max_lag is healthy; backups ranked by head",
                rounds: vec![vec![H(105), H(107), H(107)]; 2],
                primary: Some("b"),
                backups: &["c", "a"],
                reasons: &[("a", "healthy")],
            },
            Row {
                what: "one bad probe does not drop the primary (fall = 3)",
                rounds: vec![up(100), up(101), vec![Timeout, H(102), H(102)]],
                primary: Some("a"),
                backups: &["b", "c"],
                reasons: &[(
                    "a",
                    "timeout after 3s; still in, dropped after 2 more bad probes",
                )],
            },
            Row {
                what: "fall bad probes drop the primary; the best backup takes over",
                rounds: vec![
                    up(100),
                    up(101),
                    vec![Refused, H(102), H(103)],
                    vec![Refused, H(103), H(104)],
                    vec![Refused, H(104), H(105)],
                ],
                primary: Some("c"),
                backups: &["b"],
                reasons: &[("a", "cannot connect: Connection refused")],
            },
            Row {
                what: "a recovered node rises back as backup; the primary does not flip back",
                rounds: vec![
                    up(100),
                    up(101),
                    vec![Refused, H(102), H(102)],
                    vec![Refused, H(103), H(103)],
                    vec![Refused, H(104), H(104)],
                    vec![H(105), H(105), H(105)],
                    vec![H(106), H(106), H(106)],
                ],
                primary: Some("b"),
                backups: &["a", "c"],
                reasons: &[],
            },
            Row {
                what: "half-way back: one good probe is not enough",
                rounds: vec![
                    up(100),
                    up(101),
                    vec![Refused, H(102), H(102)],
                    vec![Refused, H(103), H(103)],
                    vec![Refused, H(104), H(104)],
                    vec![H(105), H(105), H(105)],
                ],
                primary: Some("b"),
                backups: &["c"],
                reasons: &[("a", "rising: 1 of 2")],
            },
            Row {
                what: "all down: no primary (fail static), every reason given",
                rounds: vec![
                    up(100),
                    up(101),
                    vec![Timeout, Refused, Timeout],
                    vec![Timeout, Refused, Timeout],
                    vec![Timeout, Refused, Timeout],
                ],
                primary: None,
                backups: &[],
                reasons: &[("a", "timeout after 3s"), ("b", "Connection refused")],
            },
            Row {
                what: "a flapping node never comes up",
                rounds: vec![
                    vec![H(100), H(100), Timeout],
                    vec![H(101), H(101), H(101)],
                    vec![H(102), H(102), Timeout],
                    vec![H(103), H(103), H(103)],
                    vec![H(104), H(104), Timeout],
                ],
                primary: Some("a"),
                backups: &["b"],
                reasons: &[("c", "timeout")],
            },
            Row {
                what: "a flapping primary is never dropped while fall is not reached",
                rounds: vec![
                    up(100),
                    up(101),
                    vec![Timeout, H(102), H(102)],
                    vec![H(103), H(103), H(103)],
                    vec![Timeout, H(104), H(104)],
                    vec![Timeout, H(105), H(105)],
                ],
                primary: Some("a"),
                backups: &["b", "c"],
                reasons: &[],
            },
        ];
        for row in rows {
            let decisions = run(&RULES, &abc, &row.rounds);
            let d = decisions.last().expect("at least one round");
            assert_eq!(d.primary.as_deref(), row.primary, "{}: {d:#?}", row.what);
            assert_eq!(d.backups, row.backups, "{}", row.what);
            for (node, words) in row.reasons {
                let v = d.verdict(node).expect("node");
                assert!(
                    v.reason.contains(words),
                    "{}: {node}: {:?} lacks {words:?}",
                    row.what,
                    v.reason
                );
            }
            for v in &d.nodes {
                let in_upstream =
                    d.primary.as_deref() == Some(v.name.as_str()) || d.backups.contains(&v.name);
                assert_eq!(
                    v.healthy, in_upstream,
                    "{}: {} healthy but not used",
                    row.what, v.name
                );
            }
        }
    }

    #[test]
    fn one_node_pool() {
        let d = run(&RULES, &["solo"], &[vec![A::H(5)], vec![A::H(6)]]);
        assert_eq!(d[1].primary.as_deref(), Some("solo"));
        assert!(d[1].backups.is_empty());
    }

    #[test]
    fn rise_and_fall_of_one_are_immediate() {
        let rules = SelectRules {
            max_lag: 0,
            rise: 1,
            fall: 1,
        };
        let d = run(
            &rules,
            &["a", "b"],
            &[vec![A::H(5), A::H(5)], vec![A::Timeout, A::H(6)]],
        );
        assert_eq!(d[0].primary.as_deref(), Some("a"));
        assert_eq!(d[1].primary.as_deref(), Some("b"));
    }

    #[test]
    fn switches_are_reported_with_the_reason() {
        let d = run(
            &RULES,
            &["a", "b"],
            &[
                vec![A::H(1), A::H(1)],
                vec![A::H(2), A::H(2)],
                vec![A::Refused, A::H(3)],
                vec![A::Refused, A::H(4)],
                vec![A::Refused, A::H(5)],
            ],
        );
        assert_eq!(d[0].switch, None, "no primary before and none now");
        let first = d[1].switch.as_ref().expect("first primary");
        assert_eq!(
            (first.from.as_deref(), first.to.as_deref()),
            (None, Some("a"))
        );
        assert!(d[2].switch.is_none() && d[3].switch.is_none());
        let moved = d[4].switch.as_ref().expect("moved");
        assert_eq!(
            (moved.from.as_deref(), moved.to.as_deref()),
            (Some("a"), Some("b"))
        );
        assert!(
            moved.why.contains("a went down: cannot connect"),
            "{}",
            moved.why
        );
    }

    #[test]
    fn after_everything_failed_the_old_primary_is_remembered() {
        let d = run(
            &SelectRules {
                max_lag: 2,
                rise: 1,
                fall: 1,
            },
            &["a", "b"],
            &[
                vec![A::H(1), A::H(1)],
                vec![A::Timeout, A::Timeout],
                vec![A::H(2), A::H(2)],
            ],
        );
        assert_eq!(d[1].primary, None);
        assert!(d[1]
            .switch
            .as_ref()
            .expect("lost")
            .why
            .contains("no healthy node left"));
        assert_eq!(d[2].primary.as_deref(), Some("a"));
        assert_eq!(d[2].switch, None, "a is what nginx still has: no switch");
    }

    #[test]
    fn head_age_comes_from_now_not_the_clock() {
        let d = run(&RULES, &["a"], &[vec![A::H(10)]]);
        // now = 10_000 s, head timestamp = 1_000 + 10 * 30 = 1_300 s.
        assert_eq!(d[0].nodes[0].head_age, Some(Duration::from_secs(8_700)));
    }
}

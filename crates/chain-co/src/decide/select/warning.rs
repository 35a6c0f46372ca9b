//! Pool and node warnings: a kind that is their identity from round to round, and words for
//! people. A warning whose words change (an age, an epoch) is the same warning, so the log and
//! the journal say it once when it appears and once when it clears.

use std::fmt;

use serde::{Serialize, Serializer};

/// What a warning is about; code compares these, never the words.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", content = "node", rename_all = "snake_case")]
pub enum WarningKind {
    /// The pool splits evenly between networks or genesis blocks.
    NetworkTie,
    /// The best head is older than stale_after by the wall clock.
    PoolStale,
    /// Implementations disagree on the chain.
    ImplementationSplit,
    /// A node's ChainNotify delivers nothing while polls show newer heads.
    SilentPush(String),
    /// The pool's finalized tipset trails its best head by more than finality_stall_after.
    FinalityStalled,
    /// No tipset is finalized by two nodes while nodes report conflicting ones.
    FinalityDisagreement,
    /// A node's F3 instance trails the pool's.
    F3Behind(String),
    /// A node's F3 manifest names another F3 network than the pool's.
    F3Network(String),
    /// Nodes report one tipset with different weights or heights, and none is the majority.
    HeadDisagreement,
    /// Headers fail their check where the failure looks like chain-co's (every node of one
    /// implementation, several nodes on one block, an implementation never verified).
    HeadersUnverifiable,
    /// Nodes refused the configured token (`check`).
    TokenRejected,
    /// The per-node tokens differ and nothing checks the one clients use.
    TokensDiffer,
    /// A node refused the clients' token (`[chain] client_token_file`).
    ClientTokenRefused(String),
    /// A node chain-co uses says it is not ready, by its own clock and peers.
    SaysNotReady(String),
}

/// One warning: its kind and its words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub kind: WarningKind,
    pub text: String,
}

impl Warning {
    pub fn new(kind: WarningKind, text: impl Into<String>) -> Warning {
        Warning {
            kind,
            text: text.into(),
        }
    }

    /// The words the journal records when this warning clears.
    pub(crate) fn cleared_text(&self) -> String {
        match self.kind {
            WarningKind::FinalityStalled => format!("finality resumed (was: {})", self.text),
            _ => format!("cleared: {}", self.text),
        }
    }
}

/// Rise/fall hysteresis for warnings, the same as nodes have ([`super::Track::observe`]): a
/// warning is shown once it has held for `rise` probe rounds in a row and withdrawn once it
/// has been absent for `fall`. A node lagging on and off no longer raises and clears the same
/// warning every few seconds (seen: twelve times in 16 s). Pushed heads re-evaluate between
/// probe rounds: they neither raise nor clear anything, only refresh the words.
#[derive(Debug, Clone, Default)]
pub struct WarningGate {
    tracked: Vec<(Warning, super::Track)>,
}

impl WarningGate {
    /// The warnings to show after an evaluation that found `current`.
    pub fn observe(
        &mut self,
        current: &[Warning],
        probe_round: bool,
        rise: u32,
        fall: u32,
    ) -> Vec<Warning> {
        for w in current {
            match self.tracked.iter_mut().find(|(t, _)| t.kind == w.kind) {
                // The words follow the latest evaluation (an age, an epoch).
                Some((t, _)) => t.text.clone_from(&w.text),
                None => self.tracked.push((w.clone(), super::Track::default())),
            }
        }
        if probe_round {
            for (w, track) in &mut self.tracked {
                let present = current.iter().any(|c| c.kind == w.kind);
                track.observe(present, false, rise.max(1), fall.max(1));
            }
            // Forget what is neither shown nor present.
            self.tracked
                .retain(|(w, t)| t.up || current.iter().any(|c| c.kind == w.kind));
        }
        self.tracked
            .iter()
            .filter(|(_, t)| t.up)
            .map(|(w, _)| w.clone())
            .collect()
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The API and the page carry the words.
impl Serialize for Warning {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(kind: WarningKind, text: &str) -> Warning {
        Warning::new(kind, text)
    }

    /// A warning present on and off, round by round (`x` present, `.` absent): what is shown.
    #[test]
    fn a_warning_rises_after_two_rounds_and_clears_after_three() {
        let rows: &[(&str, &str)] = &[
            ("x.x.x.x.", "........"),
            ("xx......", ".xxx...."),
            ("xxx.x.x...", ".xxxxxxxx."),
            ("xx.xx...", ".xxxxxx."),
        ];
        for (present, want) in rows {
            let mut gate = WarningGate::default();
            let shown: String = present
                .chars()
                .map(|c| {
                    let current = if c == 'x' {
                        vec![w(WarningKind::SilentPush("c".into()), "c: silent")]
                    } else {
                        vec![]
                    };
                    if gate.observe(&current, true, 2, 3).is_empty() {
                        '.'
                    } else {
                        'x'
                    }
                })
                .collect();
            assert_eq!(&shown, want, "present {present}");
        }
    }

    #[test]
    fn pushed_evaluations_refresh_words_but_count_nothing() {
        let mut gate = WarningGate::default();
        let stale = |t: &str| vec![w(WarningKind::PoolStale, t)];
        assert!(gate.observe(&stale("30 s"), true, 2, 3).is_empty());
        assert!(
            gate.observe(&stale("31 s"), false, 2, 3).is_empty(),
            "a push does not count"
        );
        let shown = gate.observe(&stale("35 s"), true, 2, 3);
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].text, "35 s");
        assert_eq!(gate.observe(&stale("36 s"), false, 2, 3)[0].text, "36 s");
        // Another kind alone does not hide the first while it is still up.
        let other = vec![w(WarningKind::HeadDisagreement, "split")];
        assert_eq!(gate.observe(&other, true, 2, 3).len(), 1);
    }
}

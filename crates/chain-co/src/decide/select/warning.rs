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
    /// Nodes report one tipset with different weights or heights, and none is the majority.
    HeadDisagreement,
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

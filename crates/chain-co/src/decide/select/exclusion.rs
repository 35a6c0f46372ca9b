//! Why a probe of a node was bad: [`Exclusion`], a value code matches on, with the words an
//! operator reads from `Display`.

use std::time::Duration;

use super::context::{fmt_ms, fmt_secs, short_key};
use crate::probe::f3::TipsetRef;
use crate::probe::rpc::RpcError;

/// Why a probe of a node was bad: a verdict other code acts on, so a value, not a sentence.
/// `Display` gives the words an operator reads (`status`, logs, `check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// The node did not give a usable head.
    Probe(RpcError),
    /// The pool splits evenly between networks (or genesis blocks) and none is configured.
    Tie(String),
    IdentityUnknown,
    OtherNetwork {
        network: String,
        pool: String,
    },
    OtherGenesis {
        genesis: String,
        pool: String,
    },
    FutureHead {
        height: u64,
        ahead: u64,
        max_skew: u64,
    },
    Uncorroborated {
        epochs: u64,
    },
    Lagging {
        epochs: u64,
        max: u64,
    },
    LighterFork {
        since: u64,
        epochs: u64,
        weight: u128,
        best: u128,
    },
    Stale {
        age: u64,
        stale_after: u64,
    },
    Behind {
        for_: Duration,
        grace: Duration,
    },
    /// The node's chain, or the finality it reports, conflicts with the tipset the pool
    /// finalized: a dead fork, however heavy.
    ConflictsWithFinality {
        finalized: TipsetRef,
        /// What the node has at that epoch.
        has: TipsetRef,
        /// `true`: the node's own F3 says so; `false`: its chain holds another tipset there.
        reported: bool,
    },
    /// The node's head fails its proof: a header that does not hash to its CID while another
    /// header for that CID does, or a timestamp off its epoch's start. Lying or broken.
    HeaderMismatch(String),
    /// The node reports a tipset that other nodes also report, with another weight or height:
    /// it is lying or broken.
    Misreported {
        height: u64,
        weight: u128,
        pool_height: u64,
        pool_weight: u128,
        others: usize,
    },
}

impl Exclusion {
    /// What a split between implementations produces: lag and forks.
    pub(super) fn is_chain_disagreement(&self) -> bool {
        matches!(
            self,
            Exclusion::Lagging { .. } | Exclusion::LighterFork { .. }
        )
    }
}

impl std::fmt::Display for Exclusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exclusion::Probe(e) => write!(f, "{e}"),
            Exclusion::Tie(t) => f.write_str(t),
            Exclusion::IdentityUnknown => f.write_str(
                "identity unknown: Version, StateNetworkName or ChainGetGenesis did not answer",
            ),
            Exclusion::OtherNetwork { network, pool } => {
                write!(f, "on network {network:?}, the pool is on {pool:?}")
            }
            Exclusion::OtherGenesis { genesis, pool } => {
                write!(f, "genesis {genesis} differs from the pool's {pool}")
            }
            Exclusion::FutureHead {
                height,
                ahead,
                max_skew,
            } => write!(
                f,
                "head from the future: height {height} is {} ahead of the clock (max skew {})",
                fmt_secs(*ahead),
                fmt_secs(*max_skew)
            ),
            Exclusion::Uncorroborated { epochs } => write!(
                f,
                "uncorroborated head: {epochs} epochs above every other node, with a weight no chain grows that fast"
            ),
            Exclusion::Lagging { epochs, max } => write!(f, "lagging {epochs} epochs (max {max})"),
            Exclusion::LighterFork {
                since,
                epochs,
                weight,
                best,
            } if weight < best => write!(
                f,
                "on a lighter fork since height {since} ({epochs} epochs; weight {weight} < {best})"
            ),
            Exclusion::LighterFork {
                since,
                epochs,
                weight,
                best,
            } => write!(
                f,
                "on a fork no other node confirms since height {since} ({epochs} epochs; weight {weight}, the pool's chain {best})"
            ),
            Exclusion::Stale { age, stale_after } => write!(
                f,
                "stale: head is {} old (stale after {})",
                fmt_secs(*age),
                fmt_secs(*stale_after)
            ),
            Exclusion::Behind { for_, grace } => write!(
                f,
                "behind the best head for {} (lag_grace {})",
                fmt_ms(*for_),
                fmt_ms(*grace)
            ),
            Exclusion::ConflictsWithFinality {
                finalized,
                has,
                reported,
            } => write!(
                f,
                "on a fork that conflicts with the finalized tipset at epoch {}: {} {} there, the pool finalized {}",
                finalized.epoch,
                if *reported { "it reports" } else { "its chain holds" },
                short_key(&has.key),
                short_key(&finalized.key)
            ),
            Exclusion::HeaderMismatch(why) => write!(f, "{why} (lying or broken)"),
            Exclusion::Misreported {
                height,
                weight,
                pool_height,
                pool_weight,
                others,
            } => write!(
                f,
                "misreports its head: the tipset it reports at height {height} with weight {weight} is reported by {others} other node{} at height {pool_height} with weight {pool_weight} (lying or broken)",
                if *others == 1 { "" } else { "s" }
            ),
        }
    }
}

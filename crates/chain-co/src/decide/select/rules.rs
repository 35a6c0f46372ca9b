//! The rules of `select` (`[select]`, `[chain]`), their defaults, the networks chain-co knows,
//! and the thresholds derived from the block delay, each named in one place.

use std::time::Duration;

/// What chain the pool must be on, and its clock, from `[chain]`. Unset values come from the
/// built-in table of known networks, or from the nodes themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainConfig {
    /// Expected `StateNetworkName`; `None`: the majority of the pool.
    pub network: Option<String>,
    /// Expected genesis block CID; `None`: the known one for `network`, else the majority.
    pub genesis: Option<String>,
    pub genesis_timestamp: Option<u64>,
    pub block_delay: Option<Duration>,
}

/// A synced mainnet node has dozens of peers; none at all means it is cut off.
pub(crate) const DEFAULT_MIN_PEERS: u64 = 1;
/// Lotus accepts blocks up to 1 s ahead of its clock (AllowableClockDriftSecs); a few seconds
/// more cover the skew between chain-co's host and the daemons'.
pub(crate) const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(3);

/// The rules of [`select`], from the `[select]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectRules {
    /// Epochs behind the best head that still count as healthy.
    pub max_lag: u64,
    /// Consecutive good probes before a node is used.
    pub rise: u32,
    /// Consecutive bad probes before a node is dropped.
    pub fall: u32,
    /// A head older than this by the wall clock is stale; `None`: five block delays.
    pub stale_after: Option<Duration>,
    /// Fewer peers than this and a node is not promoted to primary.
    pub min_peers: u64,
    /// How far ahead of chain-co's clock a head's timestamp may be.
    pub max_clock_skew: Duration,
    /// How long a node may stay behind the best head (by weight) before it is dropped at once;
    /// `None`: 0.4 block delays (12 s on mainnet: Lotus's PropagationDelaySecs of 10 s, the
    /// time a healthy node may legitimately take to receive and accept a tipset, plus margin).
    pub lag_grace: Option<Duration>,
    /// Flap damping: how long a node that was dropped must stay up before it may become
    /// primary again, doubled for each further drop within [`FLAP_WINDOW`]; `None`: two block
    /// delays; zero: no hold-down.
    pub hold_down: Option<Duration>,
    /// Epochs the pool's finalized tipset may trail its best head before "finality stalled" is
    /// said (F3 normally trails by a few; it has stalled network-wide several times).
    pub finality_stall_after: u64,
    /// F3 instances a node may trail the pool's newest before a warning on that node.
    pub f3_max_behind: u64,
}

/// F3 normally finalizes a few epochs behind the head.
pub(crate) const DEFAULT_FINALITY_STALL_AFTER: u64 = 20;
pub(crate) const DEFAULT_F3_MAX_BEHIND: u64 = 5;

/// How long a drop counts against a node for flap damping.
pub(crate) const FLAP_WINDOW: Duration = Duration::from_secs(3600);

impl SelectRules {
    /// The foundation rules with the chain-aware defaults; handy in tests.
    pub fn basic(max_lag: u64, rise: u32, fall: u32) -> SelectRules {
        SelectRules {
            max_lag,
            rise,
            fall,
            stale_after: None,
            min_peers: DEFAULT_MIN_PEERS,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            lag_grace: None,
            hold_down: None,
            finality_stall_after: DEFAULT_FINALITY_STALL_AFTER,
            f3_max_behind: DEFAULT_F3_MAX_BEHIND,
        }
    }
}

/// A network whose genesis and clock chain-co knows without asking
/// (forest src/networks/{mainnet,calibnet}/mod.rs; lotus build/buildconstants/params_*.go).
#[derive(Debug, Clone, Copy)]
pub(crate) struct KnownNetwork {
    pub name: &'static str,
    pub genesis: &'static str,
    pub genesis_timestamp: u64,
    pub block_delay: u64,
}

pub(crate) const KNOWN_NETWORKS: [KnownNetwork; 2] = [
    KnownNetwork {
        name: "mainnet",
        genesis: "bafy2bzacecnamqgqmifpluoeldx7zzglxcljo6oja4vrmtj7432rphldpdmm2",
        genesis_timestamp: 1_598_306_400,
        block_delay: 30,
    },
    KnownNetwork {
        name: "calibrationnet",
        genesis: "bafy2bzacecyaggy24wol5ruvs6qm73gjibs2l2iyhcqmvi7r7a4ph7zx3yqd4",
        genesis_timestamp: 1_667_326_380,
        block_delay: 30,
    },
];

/// Epochs an implementation split must last before it is reported: one or two epochs of
/// disagreement happen on any healthy network while blocks propagate.
pub(super) const SPLIT_REPORT_EPOCHS: u64 = 3;
/// How many recent heights of the best chain are remembered to tell forks apart.
pub(super) const HISTORY: usize = 120;

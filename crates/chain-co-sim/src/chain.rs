//! The simulated chain: heights that follow the wall clock, and tipsets in the JSON shape Lotus
//! documents (`documentation/en/api-methods-v1-stable.md`, `### ChainHead`).
//!
//! Every simulated node reads the same chain, so two nodes at one height report the same tipset
//! key and weight, as real nodes on one network do. A node's own faults (stall, lag) only change
//! *which* height it reports.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

/// Weight added per epoch. Mainnet's weight grew ~116e9 over ~4.86M epochs, about 24k an epoch.
const WEIGHT_PER_EPOCH: u128 = 23_856;
const BASE_WEIGHT: u128 = 1_000_000;

/// The clock of a simulated network.
#[derive(Debug, Clone, Copy)]
pub struct ChainClock {
    /// Unix seconds of epoch 0.
    pub genesis: u64,
    /// Seconds between epochs. Filecoin timestamps are whole seconds, so this is too.
    pub block_delay: u64,
}

impl ChainClock {
    /// A network whose head is `start_height` epochs old now.
    pub fn starting_now(block_delay: Duration, start_height: u64) -> Self {
        let block_delay = block_delay.as_secs().max(1);
        let now = unix_now();
        ChainClock {
            genesis: now.saturating_sub(start_height * block_delay),
            block_delay,
        }
    }

    /// The height the network has reached at `now`.
    pub fn height_at(&self, now: SystemTime) -> u64 {
        let t = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        t.saturating_sub(self.genesis) / self.block_delay
    }

    pub fn timestamp(&self, height: u64) -> u64 {
        self.genesis + height * self.block_delay
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Which chain a node follows: the network's main chain (`id` 0), or a private fork that left
/// it after `fork_at` and gains weight at half the rate (a minority of the power mines it), or,
/// `heavy`, at twice the rate (a fork heavier than the chain F3 finalized: dead all the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Branch {
    pub id: u64,
    pub fork_at: u64,
    pub heavy: bool,
}

impl Branch {
    pub const MAIN: Branch = Branch {
        id: 0,
        fork_at: 0,
        heavy: false,
    };

    fn on_fork(&self, height: u64) -> bool {
        self.id != 0 && height > self.fork_at
    }

    /// The weight of the tipset at `height` (what its children carry as `ParentWeight`).
    pub fn weight(&self, height: u64) -> u128 {
        if self.on_fork(height) && self.heavy {
            main_weight(self.fork_at) + u128::from(height - self.fork_at) * WEIGHT_PER_EPOCH * 2
        } else if self.on_fork(height) {
            main_weight(self.fork_at) + u128::from(height - self.fork_at) * WEIGHT_PER_EPOCH / 2
        } else {
            main_weight(height)
        }
    }

    fn seed(&self, height: u64) -> u64 {
        if self.on_fork(height) {
            height ^ self.id.wrapping_mul(0x5eed_f0f0)
        } else {
            height
        }
    }
}

fn main_weight(height: u64) -> u128 {
    BASE_WEIGHT + u128::from(height) * WEIGHT_PER_EPOCH
}

/// Epochs in which no miner won a block: the chain skips them, and the next tipset's height
/// jumps by more than one. About one epoch in ten when enabled (more than mainnet's few per
/// cent, so that tests meet them quickly).
pub fn is_null_round(height: u64, null_rounds: bool) -> bool {
    null_rounds && height > 0 && mix(height ^ 0x9011) % 10 == 0
}

/// The height of the tipset a node has at `height`: the last epoch that was not a null round.
pub fn last_tipset_height(height: u64, null_rounds: bool) -> u64 {
    let mut h = height;
    while is_null_round(h, null_rounds) {
        h -= 1;
    }
    h
}

/// splitmix64: a deterministic spread of bits, so the same height always gives the same CIDs.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A deterministic spread of bits (for repeatable per-epoch variations in the simulator).
pub fn spread(x: u64) -> u64 {
    mix(x)
}

/// A string shaped like a CIDv1 (dag-cbor, blake2b-256) in base32: `bafy2bzace` + 52 chars.
pub fn cid(seed: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut s = String::from("bafy2bzace");
    let mut x = seed;
    while s.len() < 62 {
        x = mix(x);
        for i in 0..12 {
            if s.len() < 62 {
                s.push(ALPHABET[((x >> (i * 5)) & 31) as usize] as char);
            }
        }
    }
    s
}

fn blocks_at(height: u64) -> u64 {
    // 1 to 5 blocks a tipset, as a mainnet expected value of 5 winners gives in practice.
    1 + mix(height ^ 0xb10c) % 5
}

fn block_cid(seed: u64, i: u64) -> String {
    cid(seed.wrapping_mul(31).wrapping_add(i).wrapping_add(0x7175))
}

fn tipset_key(branch: &Branch, height: u64) -> Vec<Value> {
    let seed = branch.seed(height);
    (0..blocks_at(seed))
        .map(|i| json!({ "/": block_cid(seed, i) }))
        .collect()
}

/// How a simulated implementation writes a tipset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TipsetStyle {
    /// Lotus, Venus, Fuhon: every array present.
    Lotus,
    /// Forest: empty arrays become `null` (forest src/blocks/tipset.rs snapshot tests).
    Forest,
}

fn base64ish(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(len);
    let mut x = seed;
    while s.len() < len {
        x = mix(x);
        for i in 0..10 {
            if s.len() < len {
                s.push(ALPHABET[((x >> (i * 6)) & 63) as usize] as char);
            }
        }
    }
    s
}

/// A genesis block as a real Forest writes it (recorded, shared/daemons): miner `t00`, one
/// zero beacon entry, no election proof or PoSt proof (`null`), and neither `BLSAggregate` nor
/// `BlockSig`.
fn forest_genesis_block(clock: &ChainClock, parents: &[Value], seed: u64) -> Value {
    json!({
        "Miner": "t00",
        "Ticket": { "VRFProof": base64ish(seed ^ 1, 44) },
        "ElectionProof": { "VRFProof": null, "WinCount": 0 },
        "BeaconEntries": [{ "Round": 0, "Data": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" }],
        "WinPoStProof": null,
        "Parents": parents,
        "ParentWeight": "0",
        "Height": 0,
        "ParentStateRoot": { "/": cid(seed ^ 6) },
        "ParentMessageReceipts": { "/": cid(seed ^ 7) },
        "Messages": { "/": cid(seed ^ 8) },
        "Timestamp": clock.timestamp(0),
        "ForkSignaling": 0,
        "ParentBaseFee": "100000000",
    })
}

/// The full tipset JSON of the tipset at `height` (a null round gives the tipset before it),
/// every field Lotus sends.
pub fn tipset_json(
    clock: &ChainClock,
    branch: &Branch,
    height: u64,
    null_rounds: bool,
    style: TipsetStyle,
) -> Value {
    let height = last_tipset_height(height, null_rounds);
    let parent = if height == 0 {
        None
    } else {
        Some(last_tipset_height(height - 1, null_rounds))
    };
    let parents = match parent {
        None => vec![json!({ "/": cid(0xdead) })],
        Some(p) => tipset_key(branch, p),
    };
    let parent_weight = parent.map_or(0, |p| branch.weight(p)).to_string();
    let n = blocks_at(branch.seed(height));
    let blocks: Vec<Value> = (0..n)
        .map(|i| {
            let seed = branch.seed(height).wrapping_mul(7919).wrapping_add(i);
            if height == 0 && style == TipsetStyle::Forest {
                return forest_genesis_block(clock, &parents, seed);
            }
            let beacons = if height == 0 {
                json!([])
            } else {
                json!([{ "Round": 17_000_000 + height, "Data": base64ish(seed ^ 4, 128) }])
            };
            json!({
                "Miner": format!("f0{}", 1000 + mix(seed) % 3_000_000),
                "Ticket": { "VRFProof": base64ish(seed ^ 1, 128) },
                "ElectionProof": { "WinCount": 1 + mix(seed ^ 2) % 3, "VRFProof": base64ish(seed ^ 3, 128) },
                "BeaconEntries": beacons,
                "WinPoStProof": [{ "PoStProof": 3, "ProofBytes": base64ish(seed ^ 5, 256) }],
                "Parents": parents,
                "ParentWeight": parent_weight,
                "Height": height,
                "ParentStateRoot": { "/": cid(seed ^ 6) },
                "ParentMessageReceipts": { "/": cid(seed ^ 7) },
                "Messages": { "/": cid(seed ^ 8) },
                "BLSAggregate": { "Type": 2, "Data": base64ish(seed ^ 9, 128) },
                "Timestamp": clock.timestamp(height),
                "BlockSig": { "Type": 2, "Data": base64ish(seed ^ 10, 128) },
                "ForkSignaling": 0,
                "ParentBaseFee": (100 + mix(seed ^ 11) % 100_000_000).to_string(),
            })
        })
        .collect();
    json!({ "Cids": tipset_key(branch, height), "Blocks": blocks, "Height": height })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chain_co::probe::rpc::TipSet;

    #[test]
    fn tipsets_parse_like_real_ones_and_agree_between_calls() {
        let clock = ChainClock {
            genesis: 1_598_306_400,
            block_delay: 30,
        };
        let ts = |h| tipset_json(&clock, &Branch::MAIN, h, false, TipsetStyle::Lotus);
        let a: TipSet = serde_json::from_value(ts(4_863_283)).expect("shape");
        let h = a.into_head().expect("valid head");
        assert_eq!(h.timestamp, 1_744_204_890);
        assert_eq!(h.weight, Branch::MAIN.weight(4_863_282));
        let b: TipSet = serde_json::from_value(ts(4_863_283)).expect("shape");
        assert_eq!(b.into_head().expect("valid").key, h.key);
        assert!(h.key[0].starts_with("bafy2bzace") && h.key[0].len() == 62);
    }

    #[test]
    fn a_fork_shares_history_then_diverges_lighter() {
        let clock = ChainClock {
            genesis: 0,
            block_delay: 30,
        };
        let fork = Branch {
            id: 7,
            fork_at: 100,
            heavy: false,
        };
        let head = |b: &Branch, h| {
            serde_json::from_value::<TipSet>(tipset_json(&clock, b, h, false, TipsetStyle::Lotus))
                .expect("shape")
                .into_head()
                .expect("valid")
        };
        assert_eq!(head(&fork, 100).key, head(&Branch::MAIN, 100).key);
        assert_eq!(
            head(&fork, 101).weight,
            head(&Branch::MAIN, 101).weight,
            "same parent"
        );
        assert_ne!(head(&fork, 102).key, head(&Branch::MAIN, 102).key);
        assert!(head(&fork, 102).weight < head(&Branch::MAIN, 102).weight);
    }

    #[test]
    fn null_rounds_repeat_the_previous_tipset() {
        let clock = ChainClock {
            genesis: 0,
            block_delay: 30,
        };
        let null = (1..1000)
            .find(|&h| is_null_round(h, true))
            .expect("some null round");
        let at = |h| tipset_json(&clock, &Branch::MAIN, h, true, TipsetStyle::Lotus);
        assert_eq!(at(null), at(null - 1));
        let next = (null + 1..)
            .find(|&h| !is_null_round(h, true))
            .expect("next");
        let parents = &at(next)["Blocks"][0]["Parents"];
        assert_eq!(
            parents,
            &at(null - 1)["Cids"],
            "the parent skips the null round"
        );
    }

    #[test]
    fn height_follows_the_clock() {
        let clock = ChainClock {
            genesis: 1_000,
            block_delay: 30,
        };
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(clock.height_at(at(1_000)), 0);
        assert_eq!(clock.height_at(at(1_029)), 0);
        assert_eq!(clock.height_at(at(1_030)), 1);
        assert_eq!(clock.height_at(at(500)), 0);
    }
}

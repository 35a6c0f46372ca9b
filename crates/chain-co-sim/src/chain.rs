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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
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

    pub(crate) fn on_fork(&self, height: u64) -> bool {
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

/// A CIDv1 (dag-cbor, blake2b-256) that names nothing: the hash of `seed`'s bytes. Real CIDs,
/// so that the headers that carry them encode as real ones do.
pub fn cid(seed: u64) -> String {
    chain_co::proof::header::cid_of(&mix(seed).to_le_bytes()).to_string()
}

fn blocks_at(height: u64) -> u64 {
    // 1 to 5 blocks a tipset, as a mainnet expected value of 5 winners gives in practice.
    1 + mix(height ^ 0xb10c) % 5
}

/// How a simulated implementation writes a tipset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TipsetStyle {
    /// Lotus, Venus, Fuhon: every field present, nil pointers as `null`.
    Lotus,
    /// Forest: leaves out the null `BLSAggregate` and `BlockSig` (recorded, shared/daemons).
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

/// The genesis block as a real Forest wrote calibnet's (recorded, shared/daemons): miner `t00`,
/// one zero beacon entry, no election proof or PoSt proof, no signatures. Every profile serves
/// the same genesis, so a mixed pool agrees on it.
fn genesis_block(clock: &ChainClock, parents: &[Value], seed: u64) -> Value {
    json!({
        "Miner": "t00",
        "Ticket": { "VRFProof": base64ish(seed ^ 1, 44) },
        "ElectionProof": { "WinCount": 0, "VRFProof": null },
        "BeaconEntries": [{ "Round": 0, "Data": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" }],
        "WinPoStProof": null,
        "Parents": parents,
        "ParentWeight": "0",
        "Height": 0,
        "ParentStateRoot": { "/": cid(seed ^ 6) },
        "ParentMessageReceipts": { "/": cid(seed ^ 7) },
        "Messages": { "/": cid(seed ^ 8) },
        "BLSAggregate": null,
        "Timestamp": clock.timestamp(0),
        "BlockSig": null,
        "ForkSignaling": 0,
        "ParentBaseFee": "100000000",
    })
}

/// The blocks of the tipset at `height` (not a null round) on `branch`, whose parents are the
/// tipset `parents`: every field Lotus sends, deterministic in the height and branch (what
/// [`crate::keys`] hashes).
pub(crate) fn blocks(
    clock: &ChainClock,
    branch: &Branch,
    height: u64,
    null_rounds: bool,
    parents: &[String],
) -> Vec<Value> {
    let parents: Vec<Value> = parents.iter().map(|c| json!({ "/": c })).collect();
    // The weight of the parent tipset, which skips null rounds.
    let parent_weight = match height {
        0 => 0,
        h => branch.weight(last_tipset_height(h - 1, null_rounds)),
    }
    .to_string();
    let seed = branch.seed(height);
    (0..blocks_at(seed))
        .map(|i| {
            let seed = seed.wrapping_mul(7919).wrapping_add(i);
            if height == 0 {
                return genesis_block(clock, &parents, seed);
            }
            json!({
                "Miner": format!("f0{}", 1000 + mix(seed) % 3_000_000),
                "Ticket": { "VRFProof": base64ish(seed ^ 1, 128) },
                "ElectionProof": { "WinCount": 1 + mix(seed ^ 2) % 3, "VRFProof": base64ish(seed ^ 3, 128) },
                "BeaconEntries": [{ "Round": 17_000_000 + height, "Data": base64ish(seed ^ 4, 128) }],
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
        .collect()
}

/// The full tipset JSON of the tipset at `height` (a null round gives the tipset before it),
/// every field Lotus sends, its `Cids` the real CIDs of its blocks and its parents the real key
/// of the tipset before it (see [`crate::keys`]).
pub fn tipset_json(
    clock: &ChainClock,
    branch: &Branch,
    height: u64,
    null_rounds: bool,
    style: TipsetStyle,
) -> Value {
    let height = last_tipset_height(height, null_rounds);
    let (cids, parents) = crate::keys::key_and_parents(clock, branch, height, null_rounds);
    let mut blocks = blocks(clock, branch, height, null_rounds, &parents);
    if style == TipsetStyle::Forest {
        for b in blocks.iter_mut().filter_map(Value::as_object_mut) {
            b.retain(|k, v| !(v.is_null() && (k == "BLSAggregate" || k == "BlockSig")));
        }
    }
    let cids: Vec<Value> = cids.iter().map(|c| json!({ "/": c })).collect();
    json!({ "Cids": cids, "Blocks": blocks, "Height": height })
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
    fn every_header_hashes_to_its_cid_and_parents_are_the_previous_key() {
        let clock = ChainClock {
            genesis: 10_000,
            block_delay: 30,
        };
        let check = chain_co::proof::HeaderCheck::default();
        for style in [TipsetStyle::Lotus, TipsetStyle::Forest] {
            for h in [0, 1, 2, 57, 58] {
                let ts = tipset_json(&clock, &Branch::MAIN, h, true, style);
                assert_eq!(
                    check.check_tipset(&ts.to_string()),
                    chain_co::proof::HeadProof::Verified,
                    "height {h} {style:?}"
                );
                if h > 0 {
                    let parent = last_tipset_height(h - 1, true);
                    let before = tipset_json(&clock, &Branch::MAIN, parent, true, style);
                    assert_eq!(ts["Blocks"][0]["Parents"], before["Cids"], "height {h}");
                }
            }
        }
        // A fork's heads verify too, and share the main chain's key up to the fork.
        let fork = Branch {
            id: 3,
            fork_at: 40,
            heavy: true,
        };
        let ts = tipset_json(&clock, &fork, 45, true, TipsetStyle::Lotus);
        assert_eq!(
            check.check_tipset(&ts.to_string()),
            chain_co::proof::HeadProof::Verified
        );
        assert_eq!(
            tipset_json(&clock, &fork, 40, true, TipsetStyle::Lotus)["Cids"],
            tipset_json(&clock, &Branch::MAIN, 40, true, TipsetStyle::Lotus)["Cids"]
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

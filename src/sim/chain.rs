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

/// The weight of the tipset at `height` (what its children carry as `ParentWeight`).
pub fn weight(height: u64) -> u128 {
    BASE_WEIGHT + u128::from(height) * WEIGHT_PER_EPOCH
}

/// splitmix64: a deterministic spread of bits, so the same height always gives the same CIDs.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
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

fn block_cid(height: u64, i: u64) -> String {
    cid(height.wrapping_mul(31).wrapping_add(i).wrapping_add(0x7175))
}

fn tipset_key(height: u64) -> Vec<Value> {
    (0..blocks_at(height))
        .map(|i| json!({ "/": block_cid(height, i) }))
        .collect()
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

/// The full tipset JSON at `height`, every field Lotus sends.
pub fn tipset_json(clock: &ChainClock, height: u64) -> Value {
    let parents = if height == 0 {
        vec![json!({ "/": cid(0xdead) })]
    } else {
        tipset_key(height - 1)
    };
    let parent_weight = if height == 0 {
        "0".to_string()
    } else {
        weight(height - 1).to_string()
    };
    let n = blocks_at(height);
    let blocks: Vec<Value> = (0..n)
        .map(|i| {
            let seed = height.wrapping_mul(7919).wrapping_add(i);
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
        .collect();
    json!({ "Cids": tipset_key(height), "Blocks": blocks, "Height": height })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::TipSet;

    #[test]
    fn tipsets_parse_like_real_ones_and_agree_between_calls() {
        let clock = ChainClock {
            genesis: 1_598_306_400,
            block_delay: 30,
        };
        let a: TipSet = serde_json::from_value(tipset_json(&clock, 4_863_283)).expect("shape");
        let h = a.into_head().expect("valid head");
        assert_eq!(h.timestamp, 1_744_204_890);
        assert_eq!(h.weight, weight(4_863_282));
        let b: TipSet = serde_json::from_value(tipset_json(&clock, 4_863_283)).expect("shape");
        assert_eq!(b.into_head().expect("valid").key, h.key);
        assert!(h.key[0].starts_with("bafy2bzace") && h.key[0].len() == 62);
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

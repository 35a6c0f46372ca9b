//! Proofs that Filecoin data carries in itself, checked where a daemon's reply is read, so that
//! no unproven claim of one node moves traffic or excludes anyone, and a proof counts whoever
//! brings it.
//!
//! - [`header`]: a block header hashes to its CID (blake2b-256 of its DAG-CBOR), so a daemon
//!   that reports a known key with another `ParentWeight`, `Height`, `Parents` or `Timestamp`
//!   sends a header that no longer hashes to it.
//! - [`signature`]: a block's `BlockSig` by its miner's worker (BLS over the header's signing
//!   bytes): a daemon without the worker's key cannot make a block up.
//!
//! [`HeaderCheck`] checks every head chain-co reads (polled or pushed) and remembers, for a
//! bounded number of blocks, what a header that verified said. A block seen again is then
//! checked by comparing the fields chain-co reads with the verified ones, without hashing:
//! a thousand nodes on one head cost one hash per block. A block whose fields differ from a
//! verified header with the same CID is a proven lie ([`BlockFault::known_good`]).
//!
//! What a failure means is decided in `decide/select` (pure): our encoder can be wrong where a
//! daemon is right, so a check that fails on every node is a warning, never an exclusion.

pub mod header;
pub mod signature;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::probe::rpc::loose;

/// Blocks whose verified headers are remembered: about seven hours of mainnet at five blocks
/// an epoch, a few hundred bytes each.
const KNOWN_BLOCKS: usize = 4096;

/// What checking one head's block headers found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HeadProof {
    /// Not checked (a head read without a [`HeaderCheck`]: `probe`'s one-off client).
    #[default]
    Unchecked,
    /// Every block's header hashes to its CID.
    Verified,
    /// A block's header does not hash to its CID, or cannot be encoded at all.
    Failed(BlockFault),
}

/// One block whose header failed its CID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockFault {
    /// The CID the daemon claims (inert, capped).
    pub cid: String,
    /// The block's miner, as the daemon says (inert, capped): a failure on every block of one
    /// miner is ours.
    pub miner: String,
    pub kind: FaultKind,
    /// A header that verified for this CID is known: this one is a proven lie, whatever our
    /// encoder's faults.
    pub known_good: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// It hashes to another CID.
    Mismatch,
    /// It cannot be encoded as a header (a field that is not what Lotus sends).
    Unencodable(String),
}

impl fmt::Display for BlockFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cid = short_cid(&self.cid);
        match &self.kind {
            FaultKind::Mismatch if self.known_good => write!(
                f,
                "its header for {cid} does not hash to that CID (other nodes' header for it does)"
            ),
            FaultKind::Mismatch => write!(f, "its header for {cid} does not hash to that CID"),
            FaultKind::Unencodable(why) => {
                write!(f, "its header for {cid} is not a valid header: {why}")
            }
        }
    }
}

/// The first characters of a CID, for words.
pub(crate) fn short_cid(cid: &str) -> String {
    format!("{}…", cid.chars().take(16).collect::<String>())
}

/// The fields of a block chain-co reads, as a verified header gave them: a block seen again is
/// checked against these.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BlockFacts {
    #[serde(deserialize_with = "loose::big_integer")]
    parent_weight: String,
    #[serde(deserialize_with = "loose::i64")]
    height: i64,
    #[serde(deserialize_with = "loose::u64")]
    timestamp: u64,
    #[serde(default)]
    miner: String,
    #[serde(default, deserialize_with = "parents")]
    parents: Vec<String>,
}

fn parents<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct C {
        #[serde(rename = "/")]
        cid: String,
    }
    let list: Option<Vec<C>> = Option::deserialize(d)?;
    let list = list.unwrap_or_default();
    if list.len() > header::MAX_PARENTS {
        return Err(serde::de::Error::custom("too many parents"));
    }
    Ok(list.into_iter().map(|c| c.cid).collect())
}

/// The tipset's blocks as they came, each to be checked against its CID.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TipSetBlocks<'a> {
    cids: Vec<header::CidJson>,
    #[serde(borrow)]
    blocks: Vec<&'a RawValue>,
}

/// Checks heads' block headers against their CIDs, remembering the blocks that verified.
#[derive(Debug, Default)]
pub struct HeaderCheck {
    known: Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    facts: HashMap<String, BlockFacts>,
    order: VecDeque<String>,
}

impl Known {
    fn remember(&mut self, cid: String, facts: BlockFacts) {
        if self.facts.insert(cid.clone(), facts).is_none() {
            self.order.push_back(cid);
        }
        while self.order.len() > KNOWN_BLOCKS {
            if let Some(old) = self.order.pop_front() {
                self.facts.remove(&old);
            }
        }
    }
}

impl HeaderCheck {
    /// Checks the tipset reply `raw` (`ChainHead`, a pushed `Val`): every block against the
    /// CID at its place in `Cids`. A reply the head reader accepted has as many of each.
    pub fn check_tipset(&self, raw: &str) -> HeadProof {
        let tipset: TipSetBlocks = match serde_json::from_str(raw) {
            Ok(t) => t,
            Err(e) => {
                return HeadProof::Failed(BlockFault {
                    cid: String::new(),
                    miner: String::new(),
                    kind: FaultKind::Unencodable(crate::text::inert(&e.to_string(), 120)),
                    known_good: false,
                })
            }
        };
        for (cid, block) in tipset.cids.iter().zip(&tipset.blocks) {
            if let Some(fault) = self.check_block(&cid.cid, block.get()) {
                return HeadProof::Failed(fault);
            }
        }
        HeadProof::Verified
    }

    /// One block: against what a verified header said, else hashed.
    fn check_block(&self, cid: &str, raw: &str) -> Option<BlockFault> {
        let facts: Option<BlockFacts> = serde_json::from_str(raw).ok();
        let fault = |kind, known_good, miner: &str| BlockFault {
            cid: crate::text::inert(cid, 100),
            miner: crate::text::inert(miner, 40),
            kind,
            known_good,
        };
        let miner = facts.as_ref().map_or("", |f| f.miner.as_str()).to_string();
        if let Some(good) = self.known.lock().expect("known lock").facts.get(cid) {
            return match &facts {
                Some(f) if f == good => None,
                _ => Some(fault(FaultKind::Mismatch, true, &miner)),
            };
        }
        let header = match header::read(raw) {
            Ok(h) => h,
            Err(why) => return Some(fault(FaultKind::Unencodable(why.0), false, &miner)),
        };
        match header.cid() {
            Ok(computed) if computed.to_string() == cid => {
                if let Some(f) = facts {
                    self.known
                        .lock()
                        .expect("known lock")
                        .remember(cid.to_string(), f);
                }
                None
            }
            Ok(_) => Some(fault(FaultKind::Mismatch, false, &miner)),
            Err(why) => Some(fault(FaultKind::Unencodable(why.0), false, &miner)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn genesis() -> (Value, String) {
        let f: Value =
            serde_json::from_str(include_str!("../../tests/data/headers.json")).expect("fixture");
        let g = &f["genesis"]["mainnet"];
        (
            g["block"].clone(),
            g["cid"].as_str().expect("cid").to_string(),
        )
    }

    fn tipset(block: &Value, cid: &str) -> String {
        json!({"Cids": [{"/": cid}], "Blocks": [block], "Height": block["Height"]}).to_string()
    }

    #[test]
    fn a_true_header_verifies_and_a_changed_weight_is_a_proven_lie() {
        let check = HeaderCheck::default();
        let (block, cid) = genesis();
        assert_eq!(
            check.check_tipset(&tipset(&block, &cid)),
            HeadProof::Verified
        );
        // Seen again: checked by its facts, still verified.
        assert_eq!(
            check.check_tipset(&tipset(&block, &cid)),
            HeadProof::Verified
        );
        let mut liar = block.clone();
        liar["ParentWeight"] = json!("1000");
        match check.check_tipset(&tipset(&liar, &cid)) {
            HeadProof::Failed(f) => {
                assert!(f.known_good);
                assert_eq!(f.kind, FaultKind::Mismatch);
                assert!(
                    f.to_string()
                        .starts_with("its header for bafy2bzacecnamqg… does not hash to that CID"),
                    "{f}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_changed_header_never_seen_verified_fails_unproven() {
        let check = HeaderCheck::default();
        let (mut block, cid) = genesis();
        block["Timestamp"] = json!(1598306401);
        match check.check_tipset(&tipset(&block, &cid)) {
            HeadProof::Failed(f) => {
                assert!(!f.known_good);
                assert_eq!(f.kind, FaultKind::Mismatch);
                assert_eq!(f.miner, "f00");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_memory_of_verified_blocks_is_bounded() {
        let mut known = Known::default();
        let (block, _) = genesis();
        let facts: BlockFacts = serde_json::from_value(block).expect("facts");
        for i in 0..KNOWN_BLOCKS + 10 {
            known.remember(format!("cid{i}"), facts.clone());
        }
        assert_eq!(known.facts.len(), KNOWN_BLOCKS);
        assert!(!known.facts.contains_key("cid0"));
    }
}

//! Real CIDs for the simulated chain: a tipset's key is its blocks' CIDs (DAG-CBOR,
//! blake2b-256, as chain-co's `proof::header` checks them), and its blocks' `Parents` are the
//! real key of the tipset before it, so the chain is linked as a real one is.
//!
//! A key depends on its parents' key, back to genesis, so keys are remembered per process and
//! computed upwards from the nearest known one. So that the first request does not hash the
//! whole chain, linked history starts at an anchor, [`HISTORY`] epochs below the first height
//! asked (the simulator asks for its head at start): tipsets at or below it have a made-up
//! parent (as a node restored from a snapshot has no older blocks), each computed alone when
//! asked (EC finality, genesis). Within one process every key is the same whatever the order
//! of the requests.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use chain_co::proof::header;

use crate::chain::{self, Branch, ChainClock};

/// Epochs of linked history below the first height asked: more than F3's lag and the fork
/// checks look back.
const HISTORY: u64 = 30;
/// Keys remembered at most (then forgotten and recomputed on demand): hours of a fast chain.
const REMEMBERED: usize = 200_000;

/// One chain: its clock and whether it has null rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ChainId {
    genesis: u64,
    block_delay: u64,
    null_rounds: bool,
}

#[derive(Default)]
struct Keys {
    anchors: HashMap<ChainId, u64>,
    keys: HashMap<(ChainId, Branch, u64), Vec<String>>,
}

fn keys() -> &'static Mutex<Keys> {
    static KEYS: OnceLock<Mutex<Keys>> = OnceLock::new();
    KEYS.get_or_init(Mutex::default)
}

/// The branch a height's key belongs to: below a fork point every branch is the main chain.
fn owner(branch: &Branch, height: u64) -> Branch {
    if branch.on_fork(height) {
        *branch
    } else {
        Branch::MAIN
    }
}

impl ChainId {
    fn of(clock: &ChainClock, null_rounds: bool) -> ChainId {
        ChainId {
            genesis: clock.genesis,
            block_delay: clock.block_delay,
            null_rounds,
        }
    }
}

/// Computes the keys up to the head at start, so that no daemon's first answer waits for them.
pub(crate) fn warm_up(clock: &ChainClock, null_rounds: bool) {
    let head =
        chain::last_tipset_height(clock.height_at(std::time::SystemTime::now()), null_rounds);
    key(clock, &Branch::MAIN, head, null_rounds);
}

/// The key of the tipset at `height` (not a null round).
pub(crate) fn key(
    clock: &ChainClock,
    branch: &Branch,
    height: u64,
    null_rounds: bool,
) -> Vec<String> {
    let mut k = keys().lock().expect("keys lock");
    known(&mut k, clock, branch, height, null_rounds)
}

/// The key of the tipset at `height` (not a null round) and the key its blocks name as their
/// parents, under one lock.
pub(crate) fn key_and_parents(
    clock: &ChainClock,
    branch: &Branch,
    height: u64,
    null_rounds: bool,
) -> (Vec<String>, Vec<String>) {
    let mut k = keys().lock().expect("keys lock");
    let key = known(&mut k, clock, branch, height, null_rounds);
    let id = ChainId::of(clock, null_rounds);
    let parents = parents_with(&k.keys, id, k.anchors[&id], branch, height);
    (key, parents)
}

/// The key at `height`, computed upwards from the nearest known one (or the anchor, set at the
/// first request of this chain).
fn known(
    k: &mut Keys,
    clock: &ChainClock,
    branch: &Branch,
    height: u64,
    null_rounds: bool,
) -> Vec<String> {
    let id = ChainId::of(clock, null_rounds);
    if k.keys.len() > REMEMBERED {
        k.keys.clear();
    }
    let anchor = *k
        .anchors
        .entry(id)
        .or_insert_with(|| height.saturating_sub(HISTORY));
    // Down to a known key or the anchor, then up, each from its parents.
    let mut todo = Vec::new();
    let mut h = height;
    while !k.keys.contains_key(&(id, owner(branch, h), h)) {
        todo.push(h);
        if h <= anchor || h == 0 {
            break;
        }
        h = chain::last_tipset_height(h - 1, null_rounds);
    }
    for h in todo.into_iter().rev() {
        let parents = parents_with(&k.keys, id, anchor, branch, h);
        let cids = chain::blocks(clock, branch, h, null_rounds, &parents)
            .iter()
            .map(|b| {
                serde_json::from_value::<header::HeaderJson>(b.clone())
                    .map_err(|e| header::Unencodable(e.to_string()))
                    .and_then(|b| b.cid())
                    .expect("the simulator's headers encode")
                    .to_string()
            })
            .collect();
        k.keys.insert((id, owner(branch, h), h), cids);
    }
    k.keys[&(id, owner(branch, height), height)].clone()
}

/// The parents of the tipset at `h`, from the keys known (the parent's is, when `h` is above
/// the anchor).
fn parents_with(
    keys: &HashMap<(ChainId, Branch, u64), Vec<String>>,
    id: ChainId,
    anchor: u64,
    branch: &Branch,
    h: u64,
) -> Vec<String> {
    if h == 0 {
        // Genesis's parent: a sha2 CID, as on mainnet and calibnet.
        return vec!["bafyreiaqpwbbyjo4a42saasj36kkrpv4tsherf2e7bvezkert2a7dhonoi".into()];
    }
    let parent = chain::last_tipset_height(h - 1, id.null_rounds);
    match keys.get(&(id, owner(branch, parent), parent)) {
        Some(key) if h > anchor => key.clone(),
        _ => made_up_parent(branch, h),
    }
}

/// The parent of a tipset at the anchor, whose history is not kept: a CID of nothing real.
fn made_up_parent(branch: &Branch, h: u64) -> Vec<String> {
    let seed = if branch.on_fork(h) {
        h ^ branch.id.wrapping_mul(0x5eed_f0f0)
    } else {
        h
    };
    vec![chain::cid(seed ^ 0x0a0c_4e11)]
}

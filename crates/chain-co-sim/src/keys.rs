//! Real CIDs for the simulated chain: a tipset's key is its blocks' CIDs (DAG-CBOR,
//! blake2b-256, as chain-co's `proof::header` checks them), and its blocks' `Parents` are the
//! real key of the tipset before it, so the chain is linked as a real one is.
//!
//! A key depends on its parents' key, back to genesis, so keys are remembered per process and
//! computed upwards from the nearest known one. So that no request (the first one, or the one
//! after a clock jump of hours) hashes the whole chain, the chain is linked in windows of
//! [`WINDOW`] epochs: the first tipset of a window has a made-up parent (as a node restored
//! from a snapshot has no older blocks), so a key costs at most one window of hashing. Every
//! key is the same whatever the order of the requests; chain-co compares parents only for
//! heads off the best chain, which a broken link never puts there.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use chain_co::proof::header;

use crate::chain::{self, Branch, ChainClock};

/// Epochs linked together: more than F3's lag and the fork checks look back.
const WINDOW: u64 = 64;
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
    let parents = parents_with(&k.keys, ChainId::of(clock, null_rounds), branch, height);
    (key, parents)
}

/// The key at `height`, computed upwards from the nearest known one, within its window.
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
    // Down to a known key or the window's first tipset, then up, each from its parents.
    let mut todo = Vec::new();
    let mut h = height;
    while !k.keys.contains_key(&(id, owner(branch, h), h)) {
        todo.push(h);
        match linked_parent(h, null_rounds) {
            Some(parent) => h = parent,
            None => break,
        }
    }
    for h in todo.into_iter().rev() {
        let parents = parents_with(&k.keys, id, branch, h);
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

/// The height of the tipset before `h`, when it is in `h`'s window (its key is then `h`'s
/// parents).
fn linked_parent(h: u64, null_rounds: bool) -> Option<u64> {
    if h == 0 {
        return None;
    }
    let parent = chain::last_tipset_height(h - 1, null_rounds);
    (parent / WINDOW == h / WINDOW).then_some(parent)
}

/// The parents of the tipset at `h`, from the keys known (the parent's is, when it is in `h`'s
/// window).
fn parents_with(
    keys: &HashMap<(ChainId, Branch, u64), Vec<String>>,
    id: ChainId,
    branch: &Branch,
    h: u64,
) -> Vec<String> {
    if h == 0 {
        // Genesis's parent: a sha2 CID, as on mainnet and calibnet.
        return vec!["bafyreiaqpwbbyjo4a42saasj36kkrpv4tsherf2e7bvezkert2a7dhonoi".into()];
    }
    match linked_parent(h, id.null_rounds)
        .and_then(|parent| keys.get(&(id, owner(branch, parent), parent)))
    {
        Some(key) => key.clone(),
        None => made_up_parent(branch, h),
    }
}

/// The parent of a window's first tipset, whose history is not linked: a CID of nothing real.
fn made_up_parent(branch: &Branch, h: u64) -> Vec<String> {
    let seed = if branch.on_fork(h) {
        h ^ branch.id.wrapping_mul(0x5eed_f0f0)
    } else {
        h
    };
    vec![chain::cid(seed ^ 0x0a0c_4e11)]
}

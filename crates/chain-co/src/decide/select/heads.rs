//! Rules 2 and 3: a lone leader far above the pool needs a plausible weight; the best head
//! (by weight, then height, then config order); and the best chain's recent history.

use std::time::{Duration, SystemTime};

use super::context::{fmt_secs, Context};
use super::exclusion::Exclusion;
use super::rules::HISTORY;
use super::warning::{Warning, WarningKind};
use crate::probe::rpc::Head;

/// Whether a head far above all others is believable on its weight: it may not have gained
/// weight faster than twice the pool's own average rate per epoch.
fn weight_plausible(lead: &Head, next: &Head) -> bool {
    if lead.weight < next.weight {
        return false;
    }
    let rate = next.weight / u128::from(next.height.max(1));
    let epochs = u128::from(lead.height.saturating_sub(next.height));
    lead.weight - next.weight <= rate.saturating_mul(2).saturating_mul(epochs.max(1))
}

pub(super) fn rank_key(h: &Head, i: usize) -> (u128, u64, std::cmp::Reverse<usize>) {
    (h.weight, h.height, std::cmp::Reverse(i))
}

/// Rule 2, corroboration: a lone leader beyond max_lag needs a plausible weight.
pub(super) fn corroborate_leader(cx: &mut Context) {
    let mut cands = cx.candidates();
    cands.sort_by_key(|&i| std::cmp::Reverse(cx.head(i).map(|h| rank_key(h, i))));
    if let [lead, next, ..] = cands[..] {
        let (l, n) = (
            cx.head(lead).expect("candidate"),
            cx.head(next).expect("candidate"),
        );
        let above_all = cands[1..]
            .iter()
            .filter_map(|&i| cx.head(i))
            .all(|h| l.height > h.height + cx.rules.max_lag);
        if above_all && !weight_plausible(l, n) {
            cx.work[lead].bad = Some(Exclusion::Uncorroborated {
                epochs: l.height - n.height,
            });
        }
    }
}

/// Rule 3: the best head, by weight, then height, then config order.
/// Among confirmed heads only, when any is (an unconfirmed head is one node's claim).
pub(super) fn find_best_head(cx: &mut Context) {
    let cands = cx.candidates();
    let confirmed: Vec<usize> = cands
        .iter()
        .copied()
        .filter(|&i| cx.work[i].confirmed)
        .collect();
    cx.best_confirmed = !confirmed.is_empty();
    let pool = if confirmed.is_empty() {
        cands
    } else {
        confirmed
    };
    let best_idx = pool.into_iter().max_by_key(|&i| {
        cx.head(i)
            .map(|h| (cx.work[i].weight, h.height, std::cmp::Reverse(i)))
    });
    cx.best = best_idx.and_then(|i| cx.head(i));
    cx.best_weight = best_idx.map_or(0, |i| cx.work[i].weight);
}

/// The best chain's recent history (to tell forks from lag), when each heavier head was first
/// seen (for the lag measured in time), and whether the whole pool is stale.
pub(super) fn remember_history(cx: &mut Context) {
    let Some(b) = cx.best else {
        return;
    };
    // A reorg (the best key at a known height changed) makes the old history wrong: start it
    // again.
    let reorg = cx.best_chain.get(&b.height).is_some_and(|k| k != &b.key)
        || cx
            .best_chain
            .keys()
            .next_back()
            .is_some_and(|&top| top > b.height);
    if reorg {
        cx.best_chain.clear();
    }
    cx.best_chain.insert(b.height, b.key.clone());
    while cx.best_chain.len() > HISTORY {
        cx.best_chain.pop_first();
    }
    let now = cx.now;
    let bw = cx.best_weight;
    // Behind since the head was first seen anywhere, even if confirmed only later: a new
    // head reaches one node first, and the stalled primary is behind from that moment. But
    // never before the head's own epoch began: a head dated ahead (within max_clock_skew)
    // would otherwise start every other node's lag clock early.
    let first = cx.first_seen.get(&b.key).copied().unwrap_or(now).min(now);
    let since = first.max(epoch_start(cx, b));
    if cx.best_seen.last().is_none_or(|(w, _)| bw > *w) {
        cx.best_seen.push((bw, since));
    }
    // A reorg to a lighter best head, or a clock that went back: start again.
    let latest = now + cx.rules.max_clock_skew;
    if cx.best_seen.iter().any(|(w, t)| *w > bw || *t > latest) {
        cx.best_seen = vec![(bw, since)];
    }
    while cx.best_seen.len() > HISTORY {
        cx.best_seen.remove(0);
    }
    if let Some(exp_h) = cx.expected_height {
        let age = cx.now_s.saturating_sub(b.timestamp);
        if age > cx.limits.stale_after {
            cx.pool_stale = true;
            cx.warnings.push(Warning::new(
                WarningKind::PoolStale,
                format!(
                    "pool is stale: the best head (height {}) is {} old; by the clock the chain is at {exp_h}",
                    b.height,
                    fmt_secs(age)
                ),
            ));
        }
    }
}

/// When the epoch of head `h` began: genesis + height × block delay where the chain's clock
/// is known (the header's own timestamp is checked against it), else its timestamp.
fn epoch_start(cx: &Context, h: &Head) -> SystemTime {
    let secs = cx
        .exp
        .genesis_timestamp
        .map_or(h.timestamp, |g| g + h.height * cx.exp.block_delay);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

//! Rule 4 and the lag_grace rule, in one file: each eligible node against the best head (lag in
//! epochs, lighter forks, staleness), and how long a node has been behind the best head in
//! time. A node behind for longer than lag_grace goes down at once; [`Context::grace_ends`]
//! tells the loop when to decide again.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::context::Context;
use super::exclusion::Exclusion;
use super::fork;

/// Rule 4: each eligible node against the best head: lag, forks, staleness, lag in time.
pub(super) fn judge_nodes(cx: &mut Context) {
    let Some(b) = cx.best else {
        return;
    };
    for i in 0..cx.observations.len() {
        let (Some(h), None) = (cx.head(i), &cx.work[i].bad) else {
            continue;
        };
        let position = fork::position(&cx.best_chain, b, h);
        let fork = &mut cx.work[i].track.fork;
        fork.observe(position, b.height, cx.rules.max_lag);
        let fork_too_long = fork.too_long(cx.rules.max_lag);
        let age = cx.now_s.saturating_sub(h.timestamp);
        let l = b.height.saturating_sub(h.height);
        cx.work[i].lag = Some(l);
        let rules = cx.rules;
        // Below an unconfirmed best (a real split, no head shared by two nodes) nobody is
        // behind: weight still ranks, but excludes no one.
        let judged = cx.best_confirmed;
        let weight = cx.work[i].weight;
        let past_grace = cx
            .behind_for(weight, cx.observations[i].observed_at)
            .filter(|d| judged && *d > cx.limits.lag_grace);
        cx.work[i].bad = if judged && l > rules.max_lag {
            // Epochs behind and behind for longer than lag_grace: as sustained as a signal gets,
            // so it goes down at once too (a pushed head counts no probe).
            cx.work[i].forced_down = past_grace.is_some();
            Some(Exclusion::Lagging {
                epochs: l,
                max: rules.max_lag,
            })
        } else if let Some((since, epochs)) = fork_too_long.filter(|_| judged) {
            Some(Exclusion::LighterFork {
                since,
                epochs,
                weight,
                best: cx.best_weight,
            })
        } else if age > cx.limits.stale_after {
            Some(Exclusion::Stale {
                age,
                stale_after: cx.limits.stale_after,
            })
        } else if let Some(d) = past_grace {
            // Behind the pool for longer than lag_grace is already a sustained signal, not one
            // slow probe: the node goes down at once, without waiting for `fall` bad probes.
            cx.work[i].forced_down = true;
            Some(Exclusion::Behind {
                for_: d,
                grace: cx.limits.lag_grace,
            })
        } else {
            None
        };
    }
}

impl Context<'_> {
    /// Since when a head of `weight` has been lighter than the pool's best: the first sighting
    /// of the lightest best head heavier than it.
    pub(super) fn behind_since(&self, weight: u128) -> Option<SystemTime> {
        self.best_seen
            .iter()
            .find(|(w, _)| *w > weight)
            .map(|(_, t)| *t)
    }

    /// How long a head lighter than the best has been behind, counted up to when it was seen.
    pub(super) fn behind_for(&self, weight: u128, seen: Option<SystemTime>) -> Option<Duration> {
        let seen = seen.unwrap_or(self.now);
        self.behind_since(weight)
            .and_then(|t| seen.duration_since(t).ok())
    }

    /// When lag_grace ends for each node still up below a confirmed best head.
    pub(super) fn grace_ends(&self) -> BTreeMap<String, SystemTime> {
        if !self.best_confirmed {
            return BTreeMap::new();
        }
        (0..self.observations.len())
            .filter(|&i| self.work[i].track.up && self.head(i).is_some())
            .filter(|&i| self.work[i].weight < self.best_weight)
            .filter_map(|i| {
                let since = self.behind_since(self.work[i].weight)?;
                Some((
                    self.observations[i].node.clone(),
                    since + self.limits.lag_grace,
                ))
            })
            .collect()
    }
}

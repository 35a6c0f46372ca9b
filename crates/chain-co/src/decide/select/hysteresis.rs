//! Rule 5: rise/fall hysteresis (pingora's health checks) and flap damping (RFC 2439), then
//! each node's verdict in words. [`Track`] is the small state machine one node's probes drive.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::context::{fmt_secs, Context};
use super::decision::{NodeVerdict, Role};
use super::exclusion::Exclusion;
use super::fork::ForkRecord;
use super::rules::{SelectRules, FLAP_WINDOW};
use super::Trigger;

/// Hysteresis memory of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    pub up: bool,
    /// Consecutive good probes (0 after a bad one).
    pub good: u32,
    /// Consecutive bad probes (0 after a good one).
    pub bad: u32,
    /// How long it has served heads off the best chain (`fork`).
    #[serde(flatten)]
    pub fork: ForkRecord,
    /// When the node was dropped (went down), within the last [`FLAP_WINDOW`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drops: Vec<SystemTime>,
    /// Flap damping: until then the node may serve as a backup but is not made primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_until: Option<SystemTime>,
}

/// A node crossing the rise/fall thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flip {
    Up,
    Down,
}

impl Track {
    /// One probe's outcome through rise/fall hysteresis, as pingora's
    /// `Health::observe_health`: `rise` good probes in a row bring a down node up, `fall` bad
    /// ones take an up node down, and `force_down` (a sustained signal, not one slow probe)
    /// takes it down at its first bad probe. Says whether the node flipped.
    pub(crate) fn observe(
        &mut self,
        good: bool,
        force_down: bool,
        rise: u32,
        fall: u32,
    ) -> Option<Flip> {
        if good {
            self.good = self.good.saturating_add(1);
            self.bad = 0;
            if !self.up && self.good >= rise {
                self.up = true;
                return Some(Flip::Up);
            }
        } else {
            self.bad = self.bad.saturating_add(1);
            self.good = 0;
            if self.up && (self.bad >= fall || force_down) {
                self.up = false;
                return Some(Flip::Down);
            }
        }
        None
    }

    /// Down at once, counting nothing (a pushed head that shows a sustained problem).
    pub(crate) fn force_down(&mut self) -> Option<Flip> {
        std::mem::replace(&mut self.up, false).then_some(Flip::Down)
    }
}

/// Rule 5: rise/fall hysteresis and flap damping, then each node's verdict in words.
pub(super) fn apply_hysteresis(cx: &mut Context) {
    for i in 0..cx.observations.len() {
        let t = advance_track(cx, i);
        let not_promoted = promotion_block(cx, i, &t);
        cx.work[i].promotable = not_promoted.is_none();
        let reason = reason(
            cx.rules,
            cx.work[i].bad.as_ref(),
            &t,
            not_promoted.as_deref(),
        );
        let verdict = verdict(cx, i, &t, reason);
        cx.nodes.push(verdict);
        cx.work[i].track = t;
    }
}

/// Node `i`'s track after this evaluation: a probe counts toward rise or fall; a pushed head
/// counts nothing, but a sustained signal still takes the node down at once. Then damping.
fn advance_track(cx: &Context, i: usize) -> Track {
    let w = &cx.work[i];
    let mut t = w.track.clone();
    let was_up = t.up;
    if cx.trigger == Trigger::Push {
        if w.forced_down {
            t.force_down();
        }
    } else {
        t.observe(w.bad.is_none(), w.forced_down, cx.rules.rise, cx.rules.fall);
    }
    damp_flaps(&mut t, was_up, cx.limits.hold_down, cx.now);
    t
}

/// How long node `i` is still held from becoming primary by flap damping, if it is.
fn held_for(t: &Track, now: SystemTime) -> Option<Duration> {
    t.held_until
        .and_then(|u| u.duration_since(now).ok())
        .filter(|d| !d.is_zero())
}

/// Rule 6's conditions for promotion: why node `i` may not become primary, if it may not
/// (flap damping, too few peers, catching up).
fn promotion_block(cx: &Context, i: usize, t: &Track) -> Option<String> {
    let o = &cx.observations[i];
    let rules = cx.rules;
    if let (Some(to), Some(h)) = (o.syncing_to, cx.head(i)) {
        // One epoch ahead is the next tipset being validated, as on any synced node.
        if to > h.height + 1 {
            return Some(format!("catching up to height {to}"));
        }
    }
    if let Some(at) = cx
        .best
        .and_then(|b| t.fork.recent_conflict(b.height, rules.max_lag))
    {
        return Some(format!(
            "served a head off the pool's chain at height {at}, within max_lag ({}) epochs",
            rules.max_lag
        ));
    }
    if let Some(p) = o.peers.filter(|&p| p < rules.min_peers) {
        return Some(format!("{p} peers (min {})", rules.min_peers));
    }
    held_for(t, cx.now).map(|left| {
        format!(
            "held down for {} more after {} drop{} in the last hour (flap damping)",
            fmt_secs(left.as_secs().max(1)),
            t.drops.len(),
            if t.drops.len() == 1 { "" } else { "s" }
        )
    })
}

/// A node's state in words: healthy, rising, still in after a bad probe, or why it is out.
fn reason(
    rules: &SelectRules,
    bad: Option<&Exclusion>,
    t: &Track,
    not_promoted: Option<&str>,
) -> String {
    match (bad, t.up) {
        (None, true) => match not_promoted {
            None => "healthy".to_string(),
            Some(why) => format!("healthy, not promoted to primary: {why}"),
        },
        (None, false) => format!("rising: {} of {} good probes", t.good, rules.rise),
        (Some(r), true) => {
            // Saturating: a hot reload may lower `fall` below the bad probes already
            // counted; the node then goes at its next bad probe.
            let left = rules.fall.saturating_sub(t.bad).max(1);
            format!(
                "{r}; still in, dropped after {left} more bad probe{}",
                if left == 1 { "" } else { "s" }
            )
        }
        (Some(r), false) => r.to_string(),
    }
}

/// Node `i`'s verdict as the status shows it (its role is set when primary and backups are
/// chosen).
fn verdict(cx: &Context, i: usize, t: &Track, reason: String) -> NodeVerdict {
    let o = &cx.observations[i];
    let h = cx.head(i);
    let id = o.identity.as_ref();
    NodeVerdict {
        name: o.node.clone(),
        implementation: id.map(|i| i.implementation.to_string()),
        version: id.map(|i| i.version.clone()),
        network: id.and_then(|i| i.network.clone()),
        role: Role::Excluded,
        healthy: t.up,
        height: h.map(|h| h.height),
        lag: cx.work[i].lag,
        head_age: h.map(|h| Duration::from_secs(cx.now_s.saturating_sub(h.timestamp))),
        behind: h.and_then(|_| cx.behind_for(cx.work[i].weight, o.observed_at)),
        via_push: o.via_push,
        unsupported: o.unsupported.clone(),
        held_for: held_for(t, cx.now),
        headers: cx.work[i].headers.words(),
        proof: cx.work[i].headers.state(),
        finalized_epoch: o
            .finality
            .as_ref()
            .and_then(|f| f.f3_finalized().or(f.finalized.as_ref()).map(|t| t.epoch)),
        f3: o.finality.as_ref().map(|f| f.describe()).or_else(|| {
            o.unsupported
                .contains(&crate::probe::OptionalMethod::F3)
                .then(|| crate::probe::f3::F3View::Lacking.to_string())
        }),
        own_word: o.own_word.clone(),
        client_token: o.client_token,
        track: t.clone(),
        reason,
        exclusion: cx.work[i].bad.clone(),
    }
}

/// Flap damping (after route-flap damping, RFC 2439): each drop is remembered for an hour;
/// a node that comes back up after drops must stay up for `hold_down`, doubled for each
/// further drop in that hour (at most an hour), before it may be primary again. A node late
/// every epoch thus never pulls sessions back and forth, while one restart costs one short
/// hold as a backup.
fn damp_flaps(t: &mut Track, was_up: bool, hold_down: Duration, now: SystemTime) {
    t.drops
        .retain(|d| now.duration_since(*d).is_ok_and(|age| age < FLAP_WINDOW));
    if was_up && !t.up {
        t.drops.push(now);
        // Enough to reach the cap; older ones add nothing.
        if t.drops.len() > 16 {
            t.drops.remove(0);
        }
    }
    if !was_up && t.up && !t.drops.is_empty() && !hold_down.is_zero() {
        let doublings = (t.drops.len() - 1).min(12) as u32;
        let hold = hold_down.saturating_mul(1 << doublings).min(FLAP_WINDOW);
        t.held_until = Some(now + hold);
    }
    if t.held_until.is_some_and(|u| u <= now) {
        t.held_until = None;
    }
}

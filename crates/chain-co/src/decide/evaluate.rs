//! The pure part of the loop: a probe round, the heads pushed since, the operator's marks and
//! the time in; a decision out. `run` and `check` both evaluate through here, so a dry run
//! decides exactly as the daemon would.
//!
//! No I/O and no clock reads: the caller owns the prober (and asks a node again when a push
//! evaluation suspects it), the push subscriptions and the decision clock.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::decide::overrides::Overrides;
use crate::decide::select::{
    select, Decision, SelectRules, SelectState, Trigger, Warning, WarningKind,
};
use crate::decide::select::{ChainConfig, NodeVerdict};
use crate::probe::push::{PushState, PushStatus};
use crate::probe::Round;

/// What an evaluation found.
#[derive(Debug, Clone)]
pub(crate) struct Evaluation {
    pub decision: Decision,
    /// When a node now behind will have been behind for lag_grace: evaluate again then,
    /// without waiting for the next push or poll.
    pub recheck_after: Option<Duration>,
}

/// The decision's memory between evaluations.
#[derive(Debug, Clone, Default)]
pub(crate) struct Evaluator {
    pub state: SelectState,
}

impl Evaluator {
    /// Decides on `round` (already merged with pushed heads, see [`merge_pushed_heads`]).
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate(
        &mut self,
        rules: &SelectRules,
        chain: &ChainConfig,
        overrides: &Overrides,
        round: &Round,
        pushed: &BTreeMap<String, PushState>,
        now: SystemTime,
        trigger: Trigger,
    ) -> Evaluation {
        let silent = silent_subscriptions(round, pushed, now);
        let (mut decision, next) = select(
            rules,
            chain,
            overrides,
            &self.state,
            &round.observations,
            now,
            trigger,
        );
        let recheck_after = recheck_after(&decision, now);
        decision
            .warnings
            .extend(own_word_warnings(round, &decision.nodes));
        for node in &silent {
            decision.warnings.push(Warning::new(
                WarningKind::SilentPush(node.clone()),
                format!(
                    "{node}: ChainNotify delivered nothing while polls show newer heads; relying on polls"
                ),
            ));
        }
        self.state = next;
        Evaluation {
            decision,
            recheck_after,
        }
    }
}

/// The warnings of the daemons' own words and of the clients' token: a node in use that says
/// it is not ready, a node that refuses the clients' token, per-node tokens that differ.
pub(crate) fn own_word_warnings(round: &Round, nodes: &[NodeVerdict]) -> Vec<Warning> {
    let mut out = Vec::new();
    if round.tokens_differ {
        out.push(Warning::new(
            WarningKind::TokensDiffer,
            "per-node tokens differ: a client's token may be refused after a switch; share the \
             JWT secret, and set `[chain] client_token_file` to have chain-co verify the token \
             clients use",
        ));
    }
    for (o, v) in round.observations.iter().zip(nodes) {
        if o.client_token == Some(crate::probe::health::ClientToken::Refused) {
            out.push(Warning::new(
                WarningKind::ClientTokenRefused(o.node.clone()),
                format!(
                    "clients' token refused by {}: they will fail after a switch to it",
                    o.node
                ),
            ));
        }
        let Some(readiness) = o.own_word.as_ref().and_then(|w| w.readiness.as_ref()) else {
            continue;
        };
        if v.healthy && *readiness != crate::probe::health::Readiness::Ready {
            out.push(Warning::new(
                WarningKind::SaysNotReady(o.node.clone()),
                format!(
                    "{} says it is not ready: {}; chain-co's evidence says its chain is fine, so \
                     it stays in use",
                    o.node,
                    readiness.why()
                ),
            ));
        }
    }
    out
}

/// How soon to decide again: just after the earliest end of a lag_grace. A grace that ended
/// without the node shown behind for it (its last answer was older) is tried again one
/// lag_grace on, not at once: a node that does not answer must not make the loop spin.
fn recheck_after(decision: &Decision, now: SystemTime) -> Option<Duration> {
    decision
        .grace_ends
        .values()
        .map(|end| match end.duration_since(now) {
            Ok(left) => left + Duration::from_millis(50),
            Err(_) => decision.lag_grace.max(Duration::from_secs(1)),
        })
        .min()
}

/// Merges pushed heads into the last polled round, and says how fresh each head is: a live
/// subscription vouches for its node's head up to now; otherwise the head is as old as the
/// poll.
pub(crate) fn merge_pushed_heads(mut round: Round, pushed: &BTreeMap<String, PushState>) -> Round {
    for o in &mut round.observations {
        o.observed_at = Some(round.at);
        let Some(state) = pushed.get(&o.node) else {
            continue;
        };
        let (Some(head), PushStatus::Subscribed, Ok(polled)) =
            (&state.head, &state.status, &o.result)
        else {
            continue;
        };
        if (polled.weight, polled.height) > (head.weight, head.height) {
            // The poll saw a head the subscription has not delivered (yet): the head is as old
            // as the poll.
            continue;
        }
        if (head.weight, head.height) > (polled.weight, polled.height) {
            o.result = Ok(head.clone());
            o.via_push = true;
        }
        o.observed_at = None;
    }
    round
}

/// Subscriptions that are up but have delivered nothing for two block delays while the node's
/// head (by poll) moved on: half-broken nodes, reported so an operator can see them.
pub(crate) fn silent_subscriptions(
    round: &Round,
    pushed: &BTreeMap<String, PushState>,
    now: SystemTime,
) -> Vec<String> {
    round
        .observations
        .iter()
        .filter(|o| {
            let block_delay = Duration::from_secs(
                o.identity
                    .as_ref()
                    .and_then(|i| i.block_delay)
                    .unwrap_or(30),
            );
            let Some(state) = pushed.get(&o.node) else {
                return false;
            };
            let (Some(head), Ok(known)) = (&state.head, &o.result) else {
                return false;
            };
            // The last pushed head is two block delays old while polls show a newer one: the
            // subscription missed a whole epoch, not just the one being delivered.
            let pushed_at = std::time::UNIX_EPOCH + Duration::from_secs(head.timestamp);
            state.status == PushStatus::Subscribed
                && known.weight > head.weight
                && now.duration_since(pushed_at).unwrap_or_default() > block_delay * 2
        })
        .map(|o| o.node.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::rpc::Head;
    use crate::probe::Observation;

    fn head(height: u64) -> Head {
        Head {
            height,
            weight: u128::from(height) * 10,
            key: vec![format!("k{height}")],
            timestamp: 1_000 + height * 30,
            blocks: 1,
            proof: Default::default(),
            parents: Vec::new(),
        }
    }

    fn round(heights: &[(&str, u64)]) -> Round {
        Round {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(5_000),
            observations: heights
                .iter()
                .map(|(n, h)| Observation::new(n, Ok(head(*h))))
                .collect(),
            latencies: vec![Duration::ZERO; heights.len()],
            took: Duration::ZERO,
            tokens_differ: false,
        }
    }

    fn subscribed(h: u64) -> PushState {
        PushState {
            status: PushStatus::Subscribed,
            head: Some(head(h)),
            received_at: None,
        }
    }

    #[test]
    fn a_fresher_pushed_head_replaces_the_polled_one_and_vouches_for_now() {
        let pushed = BTreeMap::from([("a".to_string(), subscribed(12))]);
        let r = merge_pushed_heads(round(&[("a", 11), ("b", 11)]), &pushed);
        let a = &r.observations[0];
        assert_eq!(a.result.as_ref().map(|h| h.height), Ok(12));
        assert!(a.via_push);
        assert_eq!(a.observed_at, None, "a live subscription vouches up to now");
        let b = &r.observations[1];
        assert_eq!(b.observed_at, Some(r.at), "polled only: as old as the poll");
    }

    #[test]
    fn a_poll_newer_than_the_push_keeps_the_poll_and_its_age() {
        let pushed = BTreeMap::from([("a".to_string(), subscribed(10))]);
        let r = merge_pushed_heads(round(&[("a", 11)]), &pushed);
        assert_eq!(r.observations[0].result.as_ref().map(|h| h.height), Ok(11));
        assert_eq!(r.observations[0].observed_at, Some(r.at));
        // Two block delays later, the silent subscription is reported.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + 10 * 30 + 61);
        assert_eq!(
            silent_subscriptions(&r, &pushed, now),
            vec!["a".to_string()]
        );
    }

    #[test]
    fn the_recheck_comes_just_after_the_earliest_grace_end_and_a_passed_one_waits_a_grace() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut d = crate::decide::select::select(
            &SelectRules::basic(2, 1, 3),
            &ChainConfig::default(),
            &Overrides::default(),
            &SelectState::default(),
            &[],
            now,
            Trigger::Probe,
        )
        .0;
        d.lag_grace = Duration::from_secs(12);
        assert_eq!(recheck_after(&d, now), None, "nobody behind");
        d.grace_ends
            .insert("a".into(), now + Duration::from_secs(5));
        d.grace_ends
            .insert("b".into(), now + Duration::from_secs(2));
        assert_eq!(recheck_after(&d, now), Some(Duration::from_millis(2050)));
        // A grace that ended without the node shown behind for it: try again a grace later,
        // never at once (a node that does not answer must not make the loop spin).
        d.grace_ends
            .insert("c".into(), now - Duration::from_secs(1));
        assert_eq!(recheck_after(&d, now), Some(Duration::from_millis(2050)));
        d.grace_ends.clear();
        d.grace_ends
            .insert("c".into(), now - Duration::from_secs(1));
        assert_eq!(recheck_after(&d, now), Some(Duration::from_secs(12)));
        d.lag_grace = Duration::ZERO;
        assert_eq!(recheck_after(&d, now), Some(Duration::from_secs(1)));
    }
}

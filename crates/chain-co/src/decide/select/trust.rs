//! The steps that decide whom to believe: finality, corroborated heads, misreports.
//!
//! Filecoin's 2021 rule "the heaviest head wins" lets one daemon that lies, or has a bug,
//! take the primary with a `ParentWeight` one higher and evict every honest node as "behind".
//! And since F3 (mainnet, April 2025) a heavier fork can be dead: a tipset F3 finalized is
//! never reverted (Lotus checkpoints it), and Lotus mines on the latest head even when it is
//! lighter, "because F3 may end up finalizing a tipset with a lower weight" (CHANGELOG 1.31.0).
//!
//! So, before weight is looked at:
//! - **finality**: the pool's finalized tipset is the newest one that at least two nodes' F3
//!   reports; a node whose own chain holds another tipset at that epoch, or whose F3 reports
//!   another one there, is on a dead fork and excluded;
//! - **misreports**: a tipset several nodes report must have one weight and height; a node in
//!   the minority is lying or broken and excluded (a tie excludes nobody);
//! - **confirmation**: a head that only one node reports is unconfirmed until a second node
//!   reports it or the clock shows every other node late. Unconfirmed heads never make others
//!   "behind" and never outrank a confirmed head.
//!
//! No unproven claim of one node excludes another: every exclusion here rests on what two
//! nodes agree on, or (in `integrity.rs`) on a proof that counts whoever brings it. F3 stalls
//! network-wide are warnings, never exclusions: nodes are compared with each other, never with
//! an absolute finality lag.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use super::{short_key, Context, Exclusion, Warning, WarningKind};
use crate::probe::f3::TipsetRef;

/// Tipsets of the pool's finality remembered (epochs are checked against these).
const FINALIZED_KEPT: usize = 64;
/// Certificates remembered per node, to corroborate nodes asked a moment apart.
const F3_SEEN_KEPT: usize = 8;
/// Head keys whose first sighting is remembered.
const FIRST_SEEN_KEPT: usize = 256;

/// The pool's finalized tipset, and exclusions of nodes whose chain or finality conflicts
/// with what the pool finalized.
pub(super) fn judge_finality(cx: &mut Context) {
    remember_certificates(cx);
    let newest = corroborated_finality(cx);
    if let Some(t) = &newest {
        cx.finalized_map.insert(t.epoch, t.key.clone());
        while cx.finalized_map.len() > FINALIZED_KEPT {
            cx.finalized_map.pop_first();
        }
    }
    cx.finalized = cx.finalized_map.last_key_value().map(|(e, k)| TipsetRef {
        epoch: *e,
        key: k.clone(),
    });
    for i in 0..cx.observations.len() {
        if cx.work[i].bad.is_some() {
            continue;
        }
        if let Some(x) = finality_conflict(cx, i) {
            cx.work[i].bad = Some(x);
        }
    }
}

/// Adds this round's certificates to each node's recent ones; forgets removed nodes.
fn remember_certificates(cx: &mut Context) {
    for (i, o) in cx.observations.iter().enumerate() {
        if cx.work[i].bad.is_some() {
            continue;
        }
        let Some(t) = o.finality.as_ref().and_then(|f| f.f3_finalized()) else {
            continue;
        };
        let seen = cx.f3_seen.entry(o.node.clone()).or_default();
        if !seen.contains(t) {
            seen.push(t.clone());
            seen.sort();
            if seen.len() > F3_SEEN_KEPT {
                seen.remove(0);
            }
        }
    }
    let names: BTreeSet<&str> = cx.observations.iter().map(|o| o.node.as_str()).collect();
    cx.f3_seen.retain(|n, _| names.contains(n.as_str()));
}

/// The newest tipset that at least two eligible nodes' F3 reported; `None` when none is, or
/// when two different tipsets at that epoch each have two (nothing to go by).
fn corroborated_finality(cx: &Context) -> Option<TipsetRef> {
    let mut count: BTreeMap<&TipsetRef, usize> = BTreeMap::new();
    for (i, o) in cx.observations.iter().enumerate() {
        if cx.work[i].bad.is_some() {
            continue;
        }
        for t in cx.f3_seen.get(&o.node).into_iter().flatten() {
            *count.entry(t).or_default() += 1;
        }
    }
    let agreed: Vec<&TipsetRef> = count
        .iter()
        .filter(|(_, c)| **c >= 2)
        .map(|(t, _)| *t)
        .collect();
    let top = agreed.iter().map(|t| t.epoch).max()?;
    let at_top: Vec<&&TipsetRef> = agreed.iter().filter(|t| t.epoch == top).collect();
    (at_top.len() == 1).then(|| (*at_top[0]).clone())
}

/// Why node `i` is on a dead fork, if its chain or its F3 holds another tipset at an epoch
/// the pool finalized.
fn finality_conflict(cx: &Context, i: usize) -> Option<Exclusion> {
    let f = cx.observations[i].finality.as_ref()?;
    let against = |has: &TipsetRef, reported: bool| {
        let key = cx.finalized_map.get(&has.epoch)?;
        (key != &has.key).then(|| Exclusion::ConflictsWithFinality {
            finalized: TipsetRef {
                epoch: has.epoch,
                key: key.clone(),
            },
            has: has.clone(),
            reported,
        })
    };
    f.f3_finalized()
        .and_then(|t| against(t, true))
        .or_else(|| f.chain_at.as_ref().and_then(|t| against(t, false)))
}

/// A tipset several nodes report has one weight and one height; the minority is excluded.
/// A tie (a pool of two) excludes nobody: both are ranked by the lower claim and the
/// disagreement is a pool warning.
pub(super) fn expose_misreports(cx: &mut Context) {
    let mut groups: BTreeMap<&Vec<String>, Vec<usize>> = BTreeMap::new();
    for i in cx.candidates() {
        if let Some(h) = cx.head(i) {
            groups.entry(&h.key).or_default().push(i);
        }
    }
    let mut disputed = Vec::new();
    for members in groups.values().filter(|m| m.len() >= 2) {
        let mut claims: BTreeMap<(u128, u64), Vec<usize>> = BTreeMap::new();
        for &i in members {
            let h = cx.head(i).expect("candidate has a head");
            claims.entry((h.weight, h.height)).or_default().push(i);
        }
        if claims.len() == 1 {
            continue;
        }
        let top = claims.values().map(Vec::len).max().expect("non-empty");
        let winners: Vec<&(u128, u64)> = claims
            .iter()
            .filter(|(_, m)| m.len() == top)
            .map(|(c, _)| c)
            .collect();
        if let [&(pool_weight, pool_height)] = winners[..] {
            for (&(weight, height), liars) in &claims {
                if (weight, height) == (pool_weight, pool_height) {
                    continue;
                }
                for &i in liars {
                    cx.work[i].bad = Some(Exclusion::Misreported {
                        height,
                        weight,
                        pool_height,
                        pool_weight,
                        others: top,
                    });
                }
            }
        } else {
            let lowest = claims.keys().map(|c| c.0).min().expect("non-empty");
            for &i in members {
                cx.work[i].weight = lowest;
            }
            let names: Vec<&str> = members
                .iter()
                .map(|&i| cx.observations[i].node.as_str())
                .collect();
            let h = cx.head(members[0]).expect("candidate");
            disputed.push(format!(
                "{} report tipset {} at height {} with different weights or heights; neither is believed above the lower claim",
                names.join(" and "),
                short_key(&h.key),
                h.height
            ));
        }
    }
    if !disputed.is_empty() {
        cx.warnings.push(Warning::new(
            WarningKind::HeadDisagreement,
            disputed.join("; "),
        ));
    }
}

/// Which heads are confirmed: reported by two nodes, or the only one left, or the highest
/// head of the pool once its epoch is older than the propagation cutoff (every other node is
/// then late by the clock). Also remembers when each head was first seen.
pub(super) fn confirm_heads(cx: &mut Context) {
    let cands = cx.candidates();
    let now = cx.now;
    let mut count: BTreeMap<&Vec<String>, usize> = BTreeMap::new();
    for &i in &cands {
        let h = cx.head(i).expect("candidate has a head");
        *count.entry(&h.key).or_default() += 1;
        if !cx.first_seen.contains_key(&h.key) {
            cx.first_seen.insert(h.key.clone(), now);
        }
    }
    while cx.first_seen.len() > FIRST_SEEN_KEPT {
        let oldest = cx
            .first_seen
            .iter()
            .min_by_key(|(_, t)| **t)
            .map(|(k, _)| k.clone())
            .expect("non-empty");
        cx.first_seen.remove(&oldest);
    }
    for &i in &cands {
        let h = cx.head(i).expect("candidate");
        // Every other node is lower, and late by the clock: the epoch after its head began
        // longer ago than the propagation cutoff. Nodes at the same height are on time, so a
        // heavier claim at the pool's own height is never confirmed this way.
        let others_late = cands.iter().filter(|&&j| j != i).all(|&j| {
            cx.head(j)
                .is_some_and(|o| o.height < h.height && late(cx, o.height, o.timestamp, now))
        });
        cx.work[i].confirmed = count[&h.key] >= 2 || cands.len() == 1 || others_late;
    }
}

/// Whether a head at `height` is late by the clock: the next epoch began longer ago than the
/// propagation cutoff, so a healthy node would have a newer head unless that epoch was a null
/// round (then the node that is higher proves otherwise). The epoch's start comes from the
/// chain's clock where known (a tipset's timestamp is its epoch's start), else from the head.
fn late(cx: &Context, height: u64, timestamp: u64, now: SystemTime) -> bool {
    let delay = cx.exp.block_delay;
    let next = cx
        .exp
        .genesis_timestamp
        .map(|g| g + (height + 1) * delay)
        .unwrap_or(timestamp + delay);
    now >= SystemTime::UNIX_EPOCH + Duration::from_secs(next) + cx.limits.propagation
}

/// Finality warnings: a stall network-wide, nodes that disagree on it, and nodes whose F3
/// trails.
pub(super) fn report_finality(cx: &mut Context) {
    if let (Some(f), Some(b)) = (&cx.finalized, cx.best) {
        let behind = b.height.saturating_sub(f.epoch);
        if behind > cx.rules.finality_stall_after {
            cx.warnings.push(Warning::new(
                WarningKind::FinalityStalled,
                format!(
                    "finality stalled since epoch {}: the best head is {behind} epochs past it (finality_stall_after {}); no node is excluded for it",
                    f.epoch, cx.rules.finality_stall_after
                ),
            ));
        }
    }
    if let Some(text) = finality_disagreement(cx) {
        cx.warnings
            .push(Warning::new(WarningKind::FinalityDisagreement, text));
    }
    report_f3_behind(cx);
    report_f3_network(cx);
}

/// Two nodes report different F3-finalized tipsets at one epoch, and the pool has no
/// finality of its own there: said, and nobody excluded for it.
fn finality_disagreement(cx: &Context) -> Option<String> {
    let mut at: BTreeMap<u64, BTreeMap<&Vec<String>, Vec<&str>>> = BTreeMap::new();
    for (node, seen) in &cx.f3_seen {
        for t in seen {
            at.entry(t.epoch)
                .or_default()
                .entry(&t.key)
                .or_default()
                .push(node.as_str());
        }
    }
    let (epoch, keys) = at
        .iter()
        .rev()
        .find(|(e, keys)| keys.len() > 1 && !cx.finalized_map.contains_key(e))?;
    let sides: Vec<String> = keys
        .iter()
        .map(|(k, nodes)| format!("{} on {}", nodes.join(", "), short_key(k)))
        .collect();
    Some(format!(
        "nodes disagree on the tipset F3 finalized at epoch {epoch} ({}); no tipset is finalized by two nodes there, so nobody is excluded for it",
        sides.join("; ")
    ))
}

/// A node whose F3 instance trails the pool's by more than f3_max_behind while its chain is
/// fine: a warning on that node, never an exclusion. The pool's instance is what most nodes
/// report (the lower median), never one node's word: a liar's instance 2^64−1 warns nobody.
fn report_f3_behind(cx: &mut Context) {
    let instances: Vec<(usize, u64)> = cx
        .observations
        .iter()
        .enumerate()
        .filter_map(|(i, o)| Some((i, o.finality.as_ref()?.f3_instance()?)))
        .collect();
    let Some(pool) = lower_median(instances.iter().map(|(_, n)| *n).collect()) else {
        return;
    };
    for (i, n) in instances {
        let trails = pool.saturating_sub(n);
        if trails > cx.rules.f3_max_behind && cx.work[i].bad.is_none() {
            let node = cx.observations[i].node.clone();
            cx.warnings.push(Warning::new(
                WarningKind::F3Behind(node.clone()),
                format!(
                    "{node}: F3 instance {n} trails the pool's {pool} by {trails} (f3_max_behind {}); its chain is fine, so it stays in",
                    cx.rules.f3_max_behind
                ),
            ));
        }
    }
}

/// The value at or below which at least half of `values` lie: what most report.
fn lower_median(mut values: Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    values.get(values.len().checked_sub(1)? / 2).copied()
}

/// A node whose F3 manifest names another network than most nodes' (a strict majority of
/// those that said one): it would follow another F3 network's certificates. A warning on that
/// node; with no majority, on every node that is not unanimous.
fn report_f3_network(cx: &mut Context) {
    let named: Vec<(usize, &str)> = cx
        .observations
        .iter()
        .enumerate()
        .filter_map(|(i, o)| {
            let name = o.finality.as_ref()?.network.as_ref()?.as_ref().ok()?;
            Some((i, name.as_str()))
        })
        .collect();
    let count = |name: &str| named.iter().filter(|(_, n)| *n == name).count();
    let pool = named
        .iter()
        .map(|(_, n)| *n)
        .find(|n| count(n) * 2 > named.len());
    let mut warnings = Vec::new();
    for &(i, name) in &named {
        if Some(name) == pool || count(name) == named.len() {
            continue;
        }
        let node = &cx.observations[i].node;
        let words = match pool {
            Some(pool) => format!(
                "{node}: its F3 follows network {name:?}, the pool's is {pool:?}; its certificates are another network's"
            ),
            None => format!(
                "{node}: its F3 follows network {name:?}, and no network is the pool's by a majority"
            ),
        };
        warnings.push(Warning::new(WarningKind::F3Network(node.clone()), words));
    }
    cx.warnings.extend(warnings);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::super::*;
    use crate::probe::f3::{F3View, Finality, TipsetRef};
    use crate::probe::rpc::{Head, Identity, Implementation};

    const G: u64 = 1_000;

    fn key(height: u64, fork: &str) -> Vec<String> {
        vec![format!("bafy{fork}{height}")]
    }

    fn head(height: u64, fork: &str, weight: u128) -> Head {
        Head {
            height,
            weight,
            key: key(height, fork),
            timestamp: G + height * 30,
            blocks: 1,
            proof: Default::default(),
            parents: Vec::new(),
        }
    }

    /// A node at `height` on chain `fork` ("" is the pool's), weight 10 an epoch (a fork's
    /// weight is given explicitly).
    fn node(name: &str, h: Head) -> Observation {
        let mut o = Observation::new(name, Ok(h));
        o.identity = Some(Identity {
            implementation: Implementation::Lotus,
            version: "1.34.0".into(),
            network: Some("testnet".into()),
            genesis: "bafyGenesis".into(),
            genesis_timestamp: G,
            block_delay: Some(30),
        });
        o
    }

    fn f3(mut o: Observation, epoch: u64, fork: &str, instance: u64) -> Observation {
        o.finality = Some(Finality {
            f3: F3View::Finalized {
                tipset: TipsetRef {
                    epoch,
                    key: key(epoch, fork),
                },
                instance,
            },
            finalized: None,
            chain_at: None,
            instance: None,
            network: None,
        });
        o
    }

    fn f3_down(mut o: Observation, chain_at: Option<(u64, &str)>) -> Observation {
        o.finality = Some(Finality {
            f3: F3View::NotRunning("client error (Connect)".into()),
            finalized: None,
            chain_at: chain_at.map(|(e, fork)| TipsetRef {
                epoch: e,
                key: key(e, fork),
            }),
            instance: None,
            network: None,
        });
        o
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Runs rounds, each at its own time; returns the decisions.
    fn run(rules: &SelectRules, rounds: Vec<(u64, Vec<Observation>)>) -> Vec<Decision> {
        let mut state = SelectState::default();
        rounds
            .into_iter()
            .map(|(now, obs)| {
                let (d, next) = select(
                    rules,
                    &ChainConfig::default(),
                    &Overrides::default(),
                    &state,
                    &obs,
                    at(now),
                    Trigger::Probe,
                );
                state = next;
                d
            })
            .collect()
    }

    fn rules() -> SelectRules {
        SelectRules::basic(2, 1, 3)
    }

    fn reason<'a>(d: &'a Decision, n: &str) -> &'a str {
        &d.verdict(n).expect("node").reason
    }

    /// Epoch `h`'s start plus `s` seconds.
    fn t(h: u64, s: u64) -> u64 {
        G + h * 30 + s
    }

    #[test]
    fn a_heavier_fork_that_conflicts_with_finality_is_excluded_whatever_its_weight() {
        // c forked off before epoch 95, which a and b finalized; its fork is heavier.
        let round = |h: u64| {
            vec![
                f3(node("a", head(h, "", h as u128 * 10)), 95, "", 7),
                f3(node("b", head(h, "", h as u128 * 10)), 95, "", 7),
                f3_down(node("c", head(h, "x", 5_000)), Some((95, "x"))),
            ]
        };
        let d = run(
            &rules(),
            vec![(t(100, 2), round(100)), (t(101, 2), round(101))],
        );
        let d = d.last().expect("decided");
        assert_eq!(d.finalized.as_ref().map(|f| f.epoch), Some(95));
        assert_eq!(d.primary.as_deref(), Some("a"));
        let c = d.verdict("c").expect("c");
        assert!(matches!(
            c.exclusion,
            Some(Exclusion::ConflictsWithFinality {
                reported: false,
                ..
            })
        ));
        assert!(
            reason(d, "c")
                .contains("on a fork that conflicts with the finalized tipset at epoch 95"),
            "{}",
            reason(d, "c")
        );
    }

    #[test]
    fn a_node_reporting_the_networks_certificate_on_another_chain_is_caught_by_its_chain() {
        let mut c = f3(node("c", head(100, "x", 5_000)), 95, "", 7);
        if let Some(f) = c.finality.as_mut() {
            f.chain_at = Some(TipsetRef {
                epoch: 95,
                key: key(95, "x"),
            });
        }
        let obs = vec![
            f3(node("a", head(100, "", 1000)), 95, "", 7),
            f3(node("b", head(100, "", 1000)), 95, "", 7),
            c,
        ];
        let d = run(&rules(), vec![(t(100, 2), obs)]);
        assert!(matches!(
            d[0].verdict("c").and_then(|v| v.exclusion.clone()),
            Some(Exclusion::ConflictsWithFinality { .. })
        ));
    }

    #[test]
    fn a_conflicting_certificate_excludes_its_node() {
        let obs = vec![
            f3(node("a", head(100, "", 1000)), 95, "", 7),
            f3(node("b", head(100, "", 1000)), 95, "", 7),
            f3(node("c", head(100, "", 1000)), 95, "x", 7),
        ];
        let d = run(&rules(), vec![(t(100, 2), obs)]);
        assert!(matches!(
            d[0].verdict("c").and_then(|v| v.exclusion.clone()),
            Some(Exclusion::ConflictsWithFinality { reported: true, .. })
        ));
    }

    #[test]
    fn two_nodes_that_disagree_on_finality_exclude_nobody_and_say_so() {
        let round = || {
            vec![
                f3(node("a", head(100, "", 1000)), 95, "", 7),
                f3(node("b", head(100, "x", 1000)), 95, "x", 7),
            ]
        };
        let d = run(&rules(), vec![(t(100, 2), round()), (t(100, 7), round())]);
        let d = &d[1];
        assert_eq!(d.finalized, None);
        assert!(d
            .nodes
            .iter()
            .all(|v| !matches!(v.exclusion, Some(Exclusion::ConflictsWithFinality { .. }))));
        assert!(d
            .warnings
            .iter()
            .any(|w| w.kind == WarningKind::FinalityDisagreement));
        assert_eq!(
            d.primary.as_deref(),
            Some("a"),
            "the sticky first pick stays"
        );
    }

    #[test]
    fn nodes_one_certificate_apart_still_corroborate() {
        let d = run(
            &rules(),
            vec![
                (
                    t(100, 2),
                    vec![
                        f3(node("a", head(100, "", 1000)), 95, "", 7),
                        f3(node("b", head(100, "", 1000)), 95, "", 7),
                    ],
                ),
                (
                    t(101, 2),
                    vec![
                        f3(node("a", head(101, "", 1010)), 96, "", 8),
                        f3(node("b", head(101, "", 1010)), 95, "", 7),
                    ],
                ),
            ],
        );
        assert_eq!(d[1].finalized.as_ref().map(|f| f.epoch), Some(95));
        assert!(d[1].warnings.is_empty(), "{:?}", d[1].warnings);
    }

    #[test]
    fn a_finality_stall_is_one_warning_from_the_first_round_never_an_exclusion() {
        let round = |h: u64| {
            vec![
                f3(node("a", head(h, "", h as u128 * 10)), 100, "", 7),
                f3(node("b", head(h, "", h as u128 * 10)), 100, "", 7),
            ]
        };
        let d = run(
            &rules(),
            vec![(t(130, 2), round(130)), (t(131, 2), round(131))],
        );
        for d in &d {
            let stalls: Vec<&Warning> = d
                .warnings
                .iter()
                .filter(|w| w.kind == WarningKind::FinalityStalled)
                .collect();
            assert_eq!(stalls.len(), 1);
            assert!(stalls[0].text.contains("finality stalled since epoch 100"));
            assert!(d.nodes.iter().all(|v| v.healthy));
        }
        // Caught up: cleared.
        let d = run(
            &rules(),
            vec![
                (t(130, 2), round(130)),
                (t(131, 2), {
                    let mut r = round(131);
                    for o in &mut r {
                        *o = f3(o.clone(), 128, "", 9);
                    }
                    r
                }),
            ],
        );
        assert!(d[1].warnings.is_empty(), "{:?}", d[1].warnings);
    }

    #[test]
    fn a_trailing_f3_instance_warns_on_that_node_only() {
        let obs = vec![
            f3(node("a", head(100, "", 1000)), 95, "", 20),
            f3(node("b", head(100, "", 1000)), 95, "", 20),
            f3(node("c", head(100, "", 1000)), 95, "", 12),
        ];
        let d = run(&rules(), vec![(t(100, 2), obs)]);
        let kinds: Vec<&WarningKind> = d[0].warnings.iter().map(|w| &w.kind).collect();
        assert_eq!(kinds, vec![&WarningKind::F3Behind("c".into())]);
        assert!(d[0].verdict("c").is_some_and(|v| v.healthy));
    }

    #[test]
    fn one_node_s_huge_f3_instance_puts_no_warning_on_the_honest_ones() {
        let obs = vec![
            f3(node("a", head(100, "", 1000)), 95, "", 20),
            f3(node("b", head(100, "", 1000)), 95, "", 20),
            f3(node("c", head(100, "", 1000)), 95, "", u64::MAX),
        ];
        let d = run(&rules(), vec![(t(100, 2), obs)]);
        assert!(
            d[0].warnings
                .iter()
                .all(|w| !matches!(w.kind, WarningKind::F3Behind(_))),
            "{:?}",
            d[0].warnings
        );
    }

    fn on_f3_network(mut o: Observation, name: &str) -> Observation {
        if let Some(f) = o.finality.as_mut() {
            f.network = Some(Ok(name.into()));
        }
        o
    }

    #[test]
    fn a_node_on_another_f3_network_is_warned_about_alone() {
        let obs = |c: &str| {
            vec![
                on_f3_network(f3(node("a", head(100, "", 1000)), 95, "", 20), "filecoin"),
                on_f3_network(f3(node("b", head(100, "", 1000)), 95, "", 20), "filecoin"),
                on_f3_network(f3(node("c", head(100, "", 1000)), 95, "", 20), c),
            ]
        };
        let d = run(&rules(), vec![(t(100, 2), obs("calibrationnet"))]);
        let mismatch: Vec<&Warning> = d[0]
            .warnings
            .iter()
            .filter(|w| matches!(w.kind, WarningKind::F3Network(_)))
            .collect();
        assert_eq!(mismatch.len(), 1, "{:?}", d[0].warnings);
        assert_eq!(mismatch[0].kind, WarningKind::F3Network("c".into()));
        assert!(
            mismatch[0].text.contains("\"filecoin\""),
            "{}",
            mismatch[0].text
        );
        assert!(d[0].verdict("c").is_some_and(|v| v.healthy));
        let d = run(&rules(), vec![(t(100, 2), obs("filecoin"))]);
        assert!(d[0]
            .warnings
            .iter()
            .all(|w| !matches!(w.kind, WarningKind::F3Network(_))));
    }

    #[test]
    fn a_misreported_weight_is_excluded_by_the_majority_and_disputed_in_a_pair() {
        let liar = || node("c", head(100, "", 1001));
        let honest = |n: &str| node(n, head(100, "", 1000));
        let d = run(
            &rules(),
            vec![(t(100, 2), vec![honest("a"), honest("b"), liar()])],
        );
        assert!(matches!(
            d[0].verdict("c").and_then(|v| v.exclusion.clone()),
            Some(Exclusion::Misreported { others: 2, .. })
        ));
        assert!(reason(&d[0], "c").contains("lying or broken"));
        // A pair: nobody is excluded, neither outranks the other, the first stays.
        let d = run(
            &rules(),
            vec![
                (t(100, 2), vec![honest("a"), liar()]),
                (t(100, 8), vec![honest("a"), liar()]),
            ],
        );
        assert_eq!(d[1].primary.as_deref(), Some("a"));
        assert!(d[1].nodes.iter().all(|v| v.exclusion.is_none()));
        assert!(d[1]
            .warnings
            .iter()
            .any(|w| w.kind == WarningKind::HeadDisagreement));
    }

    #[test]
    fn a_lone_heavier_head_at_the_pools_height_never_takes_the_primary_or_evicts() {
        let round = |h: u64, s: u64| {
            (
                t(h, s),
                vec![
                    node("a", head(h, "", h as u128 * 10)),
                    node("b", head(h, "", h as u128 * 10)),
                    node("c", head(h, "liar", h as u128 * 10 + 1)),
                ],
            )
        };
        let rounds: Vec<_> = (100..110)
            .flat_map(|h| [round(h, 3), round(h, 20)])
            .collect();
        for d in run(&rules(), rounds) {
            assert_eq!(d.primary.as_deref(), Some("a"));
            for n in ["a", "b"] {
                assert!(
                    d.verdict(n).is_some_and(|v| v.healthy),
                    "{n}: {}",
                    reason(&d, n)
                );
            }
        }
    }

    #[test]
    fn a_pool_of_two_leaves_a_stalled_primary_by_the_clock() {
        // a stalls at 100; b moves on. b is alone at its height, but a is late by the clock.
        let rounds = vec![
            (
                t(100, 3),
                vec![
                    node("a", head(100, "", 1000)),
                    node("b", head(100, "", 1000)),
                ],
            ),
            (
                t(101, 3),
                vec![
                    node("a", head(100, "", 1000)),
                    node("b", head(101, "", 1010)),
                ],
            ),
            (
                t(101, 9),
                vec![
                    node("a", head(100, "", 1000)),
                    node("b", head(101, "", 1010)),
                ],
            ),
            (
                t(101, 25),
                vec![
                    node("a", head(100, "", 1000)),
                    node("b", head(101, "", 1010)),
                ],
            ),
        ];
        let d = run(&rules(), rounds);
        assert_eq!(
            d[1].primary.as_deref(),
            Some("a"),
            "b's new head is not yet confirmed"
        );
        assert_eq!(
            d[2].primary.as_deref(),
            Some("a"),
            "within the propagation cutoff"
        );
        assert_eq!(d[3].primary.as_deref(), Some("b"), "{:?}", d[3].nodes);
        assert!(reason(&d[3], "a").contains("behind the best head"));
    }

    #[test]
    fn a_new_head_seen_first_on_one_node_counts_from_its_first_sighting() {
        // b has 101 at +2 s, c at +4 s; a (primary) is stalled: a is behind since +2 s.
        let rounds = vec![
            (
                t(100, 3),
                vec![
                    node("a", head(100, "", 1000)),
                    node("b", head(100, "", 1000)),
                    node("c", head(100, "", 1000)),
                ],
            ),
            (
                t(101, 2),
                vec![
                    node("a", head(100, "", 1000)),
                    node("b", head(101, "", 1010)),
                    node("c", head(100, "", 1000)),
                ],
            ),
            (
                t(101, 4),
                vec![
                    node("a", head(100, "", 1000)),
                    node("b", head(101, "", 1010)),
                    node("c", head(101, "", 1010)),
                ],
            ),
            (
                t(101, 15),
                vec![
                    node("a", head(100, "", 1000)),
                    node("b", head(101, "", 1010)),
                    node("c", head(101, "", 1010)),
                ],
            ),
        ];
        let d = run(&rules(), rounds);
        assert_eq!(
            d[2].verdict("a").and_then(|v| v.behind),
            Some(Duration::from_secs(2))
        );
        assert_eq!(d[3].primary.as_deref(), Some("b"));
    }

    #[test]
    fn a_pool_without_f3_decides_as_before() {
        let obs = vec![
            node("a", head(100, "", 1000)),
            node("b", head(100, "", 1000)),
        ];
        let d = run(&rules(), vec![(t(100, 2), obs)]);
        assert_eq!(d[0].finalized, None);
        assert!(d[0].warnings.is_empty());
        assert_eq!(d[0].primary.as_deref(), Some("a"));
    }
}

//! Heads by proof: a head counts by what its headers prove, not by how many nodes say it.
//!
//! A block header hashes to its CID (checked where the head is read, `proof::HeaderCheck`), and
//! its `Timestamp` is genesis + `Height` × block delay. A node whose head fails either is lying
//! or broken, and is excluded **alone**, on its first failure: no vote is needed, so a pool of
//! two defends against a node that reports the other's tipset with another weight.
//!
//! Our encoder can be wrong where a daemon is right (a new header field after a network
//! upgrade, an address form we mis-parse), so a failure excludes only when it is proven:
//! - a header that verified for the same CID is known (this round from another node, or
//!   remembered): the failing one is a lie whatever our encoder does;
//! - headers of the node's implementation have verified this session;
//! - and not every node of its implementation fails at once (two or more).
//!
//! Otherwise the node is *unverified*, shown as such and judged as before, and a failure that
//! looks like ours (every node of one implementation, or several nodes on one block) is a
//! loud warning, never an exclusion. Verification never delays a switch: it only ever
//! removes a node's claim, never holds a primary in place.

use std::collections::BTreeSet;

use super::context::{Context, HeaderStatus};
use super::exclusion::Exclusion;
use super::warning::{Warning, WarningKind};
use crate::proof::{BlockFault, HeadProof};

/// Checks every candidate head's proof and its timestamp; excludes the proven liars.
pub(super) fn check_headers(cx: &mut Context) {
    let cands = cx.candidates();
    let mut verified_cids: BTreeSet<&str> = BTreeSet::new();
    let mut failures: Vec<(usize, BlockFault)> = Vec::new();
    for &i in &cands {
        let Some(h) = cx.head(i) else { continue };
        cx.work[i].headers = match &h.proof {
            HeadProof::Verified => {
                verified_cids.extend(h.key.iter().map(String::as_str));
                if let Some(imp) = implementation(cx, i) {
                    cx.verified_impls.insert(imp);
                }
                HeaderStatus::Verified
            }
            HeadProof::Unchecked => HeaderStatus::Unverified("not checked".into()),
            HeadProof::Failed(f) => {
                failures.push((i, f.clone()));
                HeaderStatus::Unverified(f.to_string())
            }
        };
    }
    let mut ours: BTreeSet<String> = BTreeSet::new();
    for (i, fault) in &failures {
        let imp = implementation(cx, *i);
        let proven = fault.known_good || verified_cids.contains(fault.cid.as_str());
        let impl_proven = imp.as_ref().is_some_and(|m| cx.verified_impls.contains(m));
        let whole_impl = whole_implementation_fails(cx, &cands, imp.as_deref(), &failures);
        if proven && impl_proven && !whole_impl {
            cx.work[*i].bad = Some(Exclusion::HeaderMismatch(fault.to_string()));
            // A proven lie is as sustained as a signal gets: out at once, not after `fall`.
            cx.work[*i].forced_down = true;
            cx.work[*i].headers = HeaderStatus::Failed(fault.to_string());
        } else if whole_impl || !impl_proven || shared_failure(&failures, fault) {
            ours.insert(format!(
                "{}: {fault}",
                imp.unwrap_or_else(|| "unidentified nodes".into())
            ));
        }
    }
    if !ours.is_empty() {
        cx.warnings.push(Warning::new(
            WarningKind::HeadersUnverifiable,
            format!(
                "cannot verify headers from {}; those nodes are judged unverified, as without the check (chain-co's encoder may be behind the network)",
                ours.into_iter().collect::<Vec<_>>().join("; ")
            ),
        ));
    }
    check_timestamps(cx);
}

/// A node's implementation, as its identity says.
fn implementation(cx: &Context, i: usize) -> Option<String> {
    cx.observations[i]
        .identity
        .as_ref()
        .map(|id| id.implementation.to_string())
}

/// Every node of `imp` with a head this round failed its check, and there are two or more.
fn whole_implementation_fails(
    cx: &Context,
    cands: &[usize],
    imp: Option<&str>,
    failures: &[(usize, BlockFault)],
) -> bool {
    let of_imp: Vec<usize> = cands
        .iter()
        .copied()
        .filter(|&j| implementation(cx, j).as_deref() == imp)
        .collect();
    of_imp.len() >= 2 && of_imp.iter().all(|j| failures.iter().any(|(f, _)| f == j))
}

/// Another node fails on the same block, or on a block of the same miner.
fn shared_failure(failures: &[(usize, BlockFault)], fault: &BlockFault) -> bool {
    failures
        .iter()
        .filter(|(_, f)| f.cid == fault.cid || (!f.miner.is_empty() && f.miner == fault.miner))
        .count()
        >= 2
}

/// A tipset's timestamp is its epoch's start: genesis + height × block delay (Lotus refuses
/// blocks that break it). A head that breaks it while another node's head keeps it is excluded
/// alone; when none keeps it, the formula (the configured clock) is what is wrong: a warning.
fn check_timestamps(cx: &mut Context) {
    let Some(genesis) = cx.exp.genesis_timestamp else {
        return;
    };
    let delay = cx.exp.block_delay;
    let expected = |height: u64| genesis.saturating_add(height.saturating_mul(delay));
    let cands = cx.candidates();
    let wrong: Vec<usize> = cands
        .iter()
        .copied()
        .filter(|&i| {
            cx.head(i)
                .is_some_and(|h| h.timestamp != expected(h.height))
        })
        .collect();
    if wrong.is_empty() {
        return;
    }
    if wrong.len() == cands.len() {
        cx.warnings.push(Warning::new(
            WarningKind::HeadersUnverifiable,
            format!(
                "no node's head is dated genesis ({genesis}) + height × {delay} s; check [chain] genesis_timestamp and block_delay"
            ),
        ));
        return;
    }
    for i in wrong {
        let h = cx.head(i).expect("candidate");
        let fault = format!(
            "its head at height {} is dated {}, not genesis + height × block delay = {}",
            h.height,
            h.timestamp,
            expected(h.height)
        );
        cx.work[i].bad = Some(Exclusion::HeaderMismatch(fault.clone()));
        cx.work[i].forced_down = true;
        cx.work[i].headers = HeaderStatus::Failed(fault);
    }
}

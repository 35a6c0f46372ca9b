//! Pool-wide trouble reported as warnings: implementations that agree among themselves but not
//! with each other.

use std::collections::BTreeMap;

use super::context::{short_key, Context, NodeWork};
use super::rules::SPLIT_REPORT_EPOCHS;
use super::warning::{Warning, WarningKind};
use crate::probe::Observation;

/// Pool-wide trouble: implementations that agree among themselves but not with each other.
pub(super) fn report_pool_warnings(cx: &mut Context) {
    let split = implementation_split(cx.observations, &cx.work);
    cx.split_since = match (&split, cx.best) {
        (Some(_), Some(b)) => Some(cx.prev.split_since.unwrap_or(b.height)),
        _ => None,
    };
    if let (Some(text), Some(since), Some(b)) = (&split, cx.split_since, cx.best) {
        if b.height.saturating_sub(since) >= SPLIT_REPORT_EPOCHS {
            cx.implementation_split = true;
            cx.warnings.push(Warning::new(
                WarningKind::ImplementationSplit,
                format!(
                    "implementation split for {} epochs: {text}; the heavier chain is used",
                    b.height - since
                ),
            ));
        }
    }
}

/// Describes a split between implementations: at some height, every node of one
/// implementation reports one tipset and every node of another a different one.
fn implementation_split(observations: &[Observation], work: &[NodeWork]) -> Option<String> {
    // (height, implementation) → the keys its nodes report there.
    let mut at: BTreeMap<(u64, String), Vec<&Vec<String>>> = BTreeMap::new();
    for (i, o) in observations.iter().enumerate() {
        // Lag and fork verdicts are exactly what a split produces: judge every node that is
        // on the right network and answered.
        if work[i]
            .bad
            .as_ref()
            .is_some_and(|r| !r.is_chain_disagreement())
        {
            continue;
        }
        if let (Ok(h), Some(id)) = (&o.result, &o.identity) {
            at.entry((h.height, id.implementation.to_string()))
                .or_default()
                .push(&h.key);
        }
    }
    let agreed: Vec<(u64, &String, &Vec<String>)> = at
        .iter()
        .filter(|(_, keys)| keys.windows(2).all(|w| w[0] == w[1]))
        .map(|((h, imp), keys)| (*h, imp, keys[0]))
        .collect();
    for (i, a) in agreed.iter().enumerate() {
        for b in &agreed[i + 1..] {
            if a.0 == b.0 && a.1 != b.1 && a.2 != b.2 {
                let short = |k: &Vec<String>| short_key(k);
                return Some(format!(
                    "at height {}, {} nodes on {} and {} nodes on {}",
                    a.0,
                    a.1,
                    short(a.2),
                    b.1,
                    short(b.2)
                ));
            }
        }
    }
    None
}

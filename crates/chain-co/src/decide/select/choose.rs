//! Rules 6 and 7: the operator's marks, the sticky primary, and the backups (the first of
//! another implementation when one is up).

use super::context::Context;
use super::decision::Role;

/// The operator's marks: up nodes in rank order (a good probe this round first, by head, then
/// config order), without drained ones unless nothing else is up; the preferred node.
pub(super) fn apply_operator_marks(cx: &mut Context) {
    let mut ranked: Vec<usize> = (0..cx.nodes.len())
        .filter(|&i| cx.nodes[i].healthy)
        .collect();
    // Confirmed heads first: an unconfirmed head is one node's claim and never outranks a
    // head the pool vouches for. Among equal heads, a node that holds all the provider's
    // pending messages comes before one that lacks some (a switch to it would have to carry
    // them); then a daemon that says it is ready before one that says nothing, and that
    // before one that says it is not.
    ranked.sort_by_key(|&i| {
        let h = cx.head(i).filter(|_| cx.work[i].bad.is_none());
        let vouched = cx.work[i].confirmed || !cx.best_confirmed;
        let has_messages = cx.observations[i].messages_behind.unwrap_or(0) == 0;
        let says_ready = match cx.observations[i].own_word.as_ref().and_then(|w| w.ready()) {
            Some(true) => 2,
            None => 1,
            Some(false) => 0,
        };
        (
            std::cmp::Reverse(h.map(|h| (vouched, cx.work[i].weight, h.height))),
            std::cmp::Reverse(has_messages),
            std::cmp::Reverse(says_ready),
            i,
        )
    });
    let drained = &cx.overrides.drained;
    let undrained_up = ranked
        .iter()
        .filter(|&&i| !drained.contains_key(&cx.nodes[i].name))
        .count();
    let nodes = &mut cx.nodes;
    ranked.retain(|&i| match drained.get(&nodes[i].name) {
        None => true,
        Some(m) if undrained_up > 0 => {
            nodes[i].reason = format!("drained by {} at {}", m.by, m.at);
            false
        }
        Some(m) => {
            nodes[i].reason = format!(
                "{}; drained by {}, but kept: no other healthy node",
                nodes[i].reason, m.by
            );
            true
        }
    });
    cx.preferred = cx.overrides.preferred.as_ref().and_then(|p| {
        ranked
            .iter()
            .copied()
            .find(|&i| cx.nodes[i].name == p.node)
            .map(|i| (i, p))
    });
    cx.ranked = ranked;
}

/// Rule 6: the sticky primary; a new one must be promotable if any up node is. A preferred
/// node that is up comes first.
pub(super) fn choose_primary(cx: &mut Context) {
    let kept = cx
        .prev
        .primary
        .as_ref()
        .and_then(|p| cx.ranked.iter().copied().find(|&i| &cx.nodes[i].name == p));
    cx.primary = cx
        .preferred
        .map(|(i, _)| i)
        .or(kept)
        .or_else(|| cx.ranked.iter().copied().find(|&i| cx.work[i].promotable))
        .or_else(|| cx.ranked.first().copied());
    if let Some((i, p)) = cx.preferred {
        cx.nodes[i].reason = format!(
            "{}; preferred by {} at {}",
            cx.nodes[i].reason, p.mark.by, p.mark.at
        );
    }
    if let Some(p) = cx.primary {
        cx.nodes[p].role = Role::Primary;
    }
}

/// Rule 7: the other up nodes are backups, the first of another implementation when one is.
pub(super) fn choose_backups(cx: &mut Context) {
    let primary = cx.primary;
    let mut backups: Vec<usize> = cx
        .ranked
        .iter()
        .copied()
        .filter(|&i| Some(i) != primary)
        .collect();
    if let Some(p) = primary {
        let imp = |i: usize| cx.nodes[i].implementation.clone();
        if backups.first().is_some_and(|&b| imp(b) == imp(p)) {
            if let Some(pos) = backups
                .iter()
                .position(|&b| imp(b).is_some() && imp(b) != imp(p))
            {
                let other = backups.remove(pos);
                backups.insert(0, other);
            }
        }
    }
    for &b in &backups {
        cx.nodes[b].role = Role::Backup;
    }
    cx.backups = backups;
}

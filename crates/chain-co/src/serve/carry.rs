//! At a switch, the provider's pending messages follow the miner to the new primary
//! ([`crate::apply::messages`]). Run beside the loop, never in its way: a slow or refusing node
//! delays no switch and stops nothing.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::apply::messages::{self, Daemon};
use crate::apply::senders::{self, Sender};
use crate::config::{Config, NodeConfig};
use crate::decide::select::Decision;
use crate::probe::rpc::{Endpoint, RpcClient, Transport};
use crate::serve::api::Shared;
use crate::serve::history::EventKind;

/// A node as the carrier reaches it: the probe's token for reads, the write token for
/// `MpoolPush` only.
fn daemon(n: &NodeConfig) -> Daemon {
    let endpoint = Endpoint {
        url: n.url.clone(),
        token: n.token.clone(),
        transport: n.transport.unwrap_or(Transport::Http),
    };
    let write = n.write_token.clone().map(|t| Endpoint {
        token: Some(t),
        ..endpoint.clone()
    });
    Daemon {
        name: n.name.clone(),
        endpoint,
        write,
    }
}

/// The configured node named `name`, as the carrier reaches it.
fn find(config: &Config, name: &str) -> Option<Daemon> {
    config.nodes.iter().find(|n| n.name == name).map(daemon)
}

/// The decision's backups, as the carrier reaches them.
fn backups(config: &Config, decision: &Decision) -> Vec<Daemon> {
    decision
        .backups
        .iter()
        .filter_map(|b| find(config, b))
        .collect()
}

/// Every node as the carrier reaches it.
pub(crate) fn daemons(config: &Config) -> Vec<Daemon> {
    config.nodes.iter().map(daemon).collect()
}

/// At start, with `[messages]`: whether the token `MpoolPush` would use on each node has
/// `write` (`AuthVerify`, asked with the probe's token: the write token only ever authorizes
/// `MpoolPush`, here it is the question). One that lacks it is said once, in the log and
/// `/status`; a node that cannot tell is left to its first carry. Never holds anything up.
pub(crate) async fn check_write(nodes: Vec<Daemon>, rpc: RpcClient, shared: Arc<Shared>) {
    for d in nodes {
        let problem = messages::write_problem(&rpc, &d).await;
        if let Some(p) = problem {
            warn!("{p}");
            {
                let mut m = shared.messages.lock().expect("messages lock");
                // The relays meet it too: said here, it is not said again each round.
                m.said
                    .insert(messages::lacks_write_about(&d.name), SystemTime::now());
                m.add(0, &[], std::slice::from_ref(&p));
            }
            shared.notice(p);
        }
    }
}

/// Every probe round: levels the pools of the primary and its backups ([`messages::level`]),
/// so that a message a broken-pubsub primary holds alone is relayed within one probe interval
/// and a switch finds nothing left to carry, and keeps what is
/// still missing in `/status` ("lotus-b is behind lotus-a by 2 messages of f3…"), for the
/// decision's tie-break and the operator. Beside the loop, one at a time, like the carry.
pub(crate) fn level_pools(
    config: &Config,
    decision: &Decision,
    shared: &Arc<Shared>,
    tasks: &TaskTracker,
    rpc: &RpcClient,
) {
    if !config.carries_messages() {
        return;
    }
    let Some(primary) = decision.primary.as_deref().and_then(|p| find(config, p)) else {
        return;
    };
    let mut nodes = vec![primary];
    nodes.extend(backups(config, decision));
    let targets = nodes.len();
    // Out of the upstream but still answering on the pool's chain: they lend what they hold.
    nodes.extend(
        decision
            .nodes
            .iter()
            .filter(|v| v.on_pool_chain() && !nodes.iter().any(|d| d.name == v.name))
            .filter_map(|v| find(config, &v.name))
            .collect::<Vec<_>>(),
    );
    let senders = senders_of(shared);
    let (shared, rpc) = (shared.clone(), rpc.clone());
    if shared.gap_check.swap(true, Ordering::AcqRel) {
        return;
    }
    tasks.spawn(async move {
        let lagging = shared
            .messages
            .lock()
            .expect("messages lock")
            .lagging
            .clone();
        let done = messages::level(&rpc, &senders, &nodes, targets, &lagging).await;
        shared.messages.lock().expect("messages lock").lagging = done.lagging.clone();
        let primary = &nodes[0].name;
        report(&shared, primary, &done.carried);
        // A primary that no longer answers leaves the last comparison standing: it is the
        // one the next promotion needs (which backup holds the dying primary's messages).
        if done.complete {
            let mut gaps = Vec::new();
            let mut behind: BTreeMap<String, u64> = BTreeMap::new();
            for (node, address, missing) in &done.behind {
                *behind.entry(node.clone()).or_default() += missing;
                if *missing > 0 {
                    gaps.push(format!(
                        "{node} is behind {primary} by {missing} message{} of {address}",
                        if *missing == 1 { "" } else { "s" }
                    ));
                }
            }
            let mut m = shared.messages.lock().expect("messages lock");
            m.gaps = gaps;
            m.behind = behind;
        }
        shared.gap_check.store(false, Ordering::Release);
    });
}

/// A problem met again by the levelling is said again after this long (a node refusing
/// every message is said once an hour, not every round).
const SAY_AGAIN: Duration = Duration::from_secs(3600);

/// Says what a carry or a relay did: the log, the journal, the counter and `/status`. A
/// problem said within [`SAY_AGAIN`] is not said again (a levelling meets the same one
/// every round; a token without write is said at start).
fn report(shared: &Shared, to: &str, done: &messages::Carried) {
    let mut m = shared.messages.lock().expect("messages lock");
    let now = SystemTime::now();
    let mut problems: Vec<String> = Vec::new();
    for p in &done.problems {
        let said = m.said.get(&p.about).copied();
        if said.is_some_and(|t| now.duration_since(t).unwrap_or_default() < SAY_AGAIN) {
            continue;
        }
        m.said.insert(p.about.clone(), now);
        problems.push(p.text.clone());
    }
    for line in &done.lines {
        info!(to = %to, "{line}");
    }
    for p in &problems {
        warn!(to = %to, "{p}");
    }
    {
        let mut journal = shared.history.lock().expect("history lock");
        for text in done.lines.iter().chain(&problems) {
            journal.record(now, EventKind::Messages, Some(to), text.clone());
        }
    }
    shared.metrics.messages_carried(done.messages);
    m.add(done.messages, &done.lines, &problems);
}

/// Starts carrying, when `decision` made a new primary and `[messages]` names addresses.
pub(crate) fn after_switch(
    config: &Config,
    decision: &Decision,
    shared: &Arc<Shared>,
    tasks: &TaskTracker,
    rpc: &RpcClient,
) {
    let Some(switch) = &decision.switch else {
        return;
    };
    let (Some(to), true) = (&switch.to, config.carries_messages()) else {
        return;
    };
    let Some(to) = find(config, to) else { return };
    let from = switch.from.as_deref().and_then(|f| find(config, f));
    let others = backups(config, decision);
    let senders = senders_of(shared);
    let (shared, rpc) = (shared.clone(), rpc.clone());
    tasks.spawn(async move {
        let done = messages::carry(&rpc, &senders, from.as_ref(), &others, &to).await;
        report(&shared, &to.name, &done);
    });
}

/// The accounts whose messages are followed, as last resolved.
fn senders_of(shared: &Shared) -> Vec<Sender> {
    shared
        .messages
        .lock()
        .expect("messages lock")
        .senders
        .clone()
}

/// How often the sending accounts are resolved again once they were (a worker can change),
/// and how soon after a failure.
pub(crate) const SENDERS_EVERY: Duration = Duration::from_secs(600);
pub(crate) const SENDERS_RETRY: Duration = Duration::from_secs(30);

/// Resolves the sending accounts ([`senders`]): each configured address's other form, and
/// `[messages] miner`'s owner, worker and control addresses. Asks the primary first, then
/// the other nodes in config order; the first that answers every call is believed. Beside
/// the loop; a failure is said once, and the accounts known so far stay in use.
pub(crate) fn refresh_senders(
    config: &Config,
    decision: &Decision,
    shared: &Arc<Shared>,
    tasks: &TaskTracker,
    rpc: &RpcClient,
) {
    if !config.carries_messages() || shared.senders_check.swap(true, Ordering::AcqRel) {
        return;
    }
    let mut nodes = daemons(config);
    nodes.sort_by_key(|d| Some(d.name.as_str()) != decision.primary.as_deref());
    let configured = config.message_addresses.clone();
    let miner = config.message_miner.clone();
    let (shared, rpc) = (shared.clone(), rpc.clone());
    tasks.spawn(async move {
        let found = senders::resolve_on_any(&rpc, &nodes, &configured, miner.as_deref()).await;
        let mut m = shared.messages.lock().expect("messages lock");
        m.senders_resolved = found.is_ok();
        match found {
            Ok(list) if list != m.senders => {
                info!(senders = %senders::describe(&list), "messages of these accounts follow a switch");
                m.senders = list;
            }
            Ok(_) => {}
            Err(p) => {
                if !m.problems.contains(&p) {
                    warn!("{p}");
                    m.add(0, &[], std::slice::from_ref(&p));
                }
            }
        }
        drop(m);
        shared.senders_check.store(false, Ordering::Release);
    });
}

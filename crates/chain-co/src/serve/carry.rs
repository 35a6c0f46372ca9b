//! At a switch, the provider's pending messages follow the miner to the new primary
//! ([`crate::apply::messages`]). Run beside the loop, never in its way: a slow or refusing node
//! delays no switch and stops nothing.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::apply::messages::{self, Daemon};
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
/// `write` (`AuthVerify`). One that lacks it is said once, in the log and `/status`; a node
/// that cannot tell is left to its first carry. Never holds anything up.
pub(crate) async fn check_write(nodes: Vec<Daemon>, rpc: RpcClient, shared: Arc<Shared>) {
    for d in nodes {
        let endpoint = d.write.as_ref().unwrap_or(&d.endpoint);
        let problem = match &endpoint.token {
            None => Some(format!(
                "cannot carry messages to {}: no token with write (set [[node]] write_token_file)",
                d.name
            )),
            Some(t) => match rpc
                .call::<Vec<String>>(endpoint, "Filecoin.AuthVerify", serde_json::json!([t.expose()]))
                .await
            {
                Ok(perms) if !perms.iter().any(|p| p == "write" || p == "admin") => Some(format!(
                    "cannot carry messages to {}: its token lacks write (set [[node]] write_token_file)",
                    d.name
                )),
                _ => None,
            },
        };
        if let Some(p) = problem {
            warn!("{p}");
            shared
                .messages
                .lock()
                .expect("messages lock")
                .add(0, &[], std::slice::from_ref(&p));
            shared.notice(p);
        }
    }
}

/// Every this many probe rounds, each backup's nonces are compared with the primary's.
pub(crate) const GAP_EVERY: u64 = 3;

/// Compares, for every configured address, each backup's `MpoolGetNonce` with the primary's,
/// and keeps the gaps in `/status` ("lotus-b is behind lotus-a by 2 messages of f3…"): the
/// messages a switch to that backup would have to carry. Beside the loop, like the carry.
pub(crate) fn check_gaps(
    config: &Config,
    decision: &Decision,
    shared: &Arc<Shared>,
    tasks: &TaskTracker,
    rpc: &RpcClient,
) {
    if config.message_addresses.is_empty() {
        return;
    }
    let Some(primary) = decision.primary.as_deref().and_then(|p| find(config, p)) else {
        return;
    };
    let backups = backups(config, decision);
    let addresses = config.message_addresses.clone();
    let (shared, rpc) = (shared.clone(), rpc.clone());
    if shared.gap_check.swap(true, Ordering::AcqRel) {
        return;
    }
    tasks.spawn(async move {
        let mut gaps = Vec::new();
        let mut behind: BTreeMap<String, u64> = BTreeMap::new();
        let mut complete = true;
        for address in &addresses {
            let Ok(want) = messages::nonce(&rpc, &primary.endpoint, address).await else {
                complete = false;
                continue;
            };
            for b in &backups {
                if let Ok(have) = messages::nonce(&rpc, &b.endpoint, address).await {
                    let missing = want.saturating_sub(have);
                    *behind.entry(b.name.clone()).or_default() += missing;
                    if missing > 0 {
                        gaps.push(format!(
                            "{} is behind {} by {missing} message{} of {address}",
                            b.name,
                            primary.name,
                            if missing == 1 { "" } else { "s" }
                        ));
                    }
                }
            }
        }
        // A primary that no longer answers leaves the last comparison standing: it is the one
        // the next promotion needs (which backup holds the dying primary's messages).
        if complete {
            let mut m = shared.messages.lock().expect("messages lock");
            m.gaps = gaps;
            m.behind = behind;
        }
        shared.gap_check.store(false, Ordering::Release);
    });
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
    let (Some(to), false) = (&switch.to, config.message_addresses.is_empty()) else {
        return;
    };
    let Some(to) = find(config, to) else { return };
    let from = switch.from.as_deref().and_then(|f| find(config, f));
    let others = backups(config, decision);
    let addresses = config.message_addresses.clone();
    let (shared, rpc) = (shared.clone(), rpc.clone());
    tasks.spawn(async move {
        let done = messages::carry(&rpc, &addresses, from.as_ref(), &others, &to).await;
        for line in &done.lines {
            info!(to = %to.name, "{line}");
        }
        for p in &done.problems {
            warn!(to = %to.name, "{p}");
        }
        let now = SystemTime::now();
        {
            let mut journal = shared.history.lock().expect("history lock");
            for text in done.lines.iter().chain(&done.problems) {
                journal.record(now, EventKind::Messages, Some(&to.name), text.clone());
            }
        }
        shared.metrics.messages_carried(done.messages);
        shared.messages.lock().expect("messages lock").add(
            done.messages,
            &done.lines,
            &done.problems,
        );
    });
}

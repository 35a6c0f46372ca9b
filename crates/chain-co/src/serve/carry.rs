//! At a switch, the provider's pending messages follow the miner to the new primary
//! ([`crate::apply::messages`]). Run beside the loop, never in its way: a slow or refusing node
//! delays no switch and stops nothing.

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
    let find = |name: &str| config.nodes.iter().find(|n| n.name == name).map(daemon);
    let Some(to) = find(to) else { return };
    let from = switch.from.as_deref().and_then(find);
    let others: Vec<Daemon> = decision.backups.iter().filter_map(|b| find(b)).collect();
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

//! A simulated pool of Filecoin daemons: the test bed and the demo.
//!
//! Each node listens on its own loopback port and answers JSON-RPC 2.0 at `/rpc/v0` and
//! `/rpc/v1`, over HTTP POST and WebSocket, as the implementation it plays ([`Profile`]: Lotus,
//! Venus, Forest or Fuhon, with their differences in version replies, missing methods, error
//! shapes, auth and transport): `Filecoin.ChainHead`, `ChainGetGenesis`, `Version`,
//! `StateNetworkName`, `SyncState` / `Forest.SyncStatus`, `NetPeers`, `ChainTipSetWeight`. All
//! nodes follow one simulated chain whose height follows the wall clock. Every HTTP reply
//! carries `X-Sim-Node: <name>` so a test can see which node nginx picked.
//!
//! A control endpoint changes a node at run time (see [`Op`]): stall (head stops), lag by N
//! epochs, run ahead of the clock, fork off, change network, lose peers, catch up, die (port
//! closed, open connections cut) and revive, answer slowly, answer garbage, JSON-RPC errors or
//! HTTP errors, require a token.

pub mod actors;
mod chain;
mod finality;
mod keys;
mod mpool;
mod node;
mod profile;
pub mod testbed;

pub use chain::ChainClock;
pub use node::{ForkF3, NodeStatus, Op, SIM_NETWORK};
pub use profile::Profile;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use node::SimNode;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimSpec {
    pub nodes: Vec<(String, Profile)>,
    pub block_delay: Duration,
    /// Skip about one epoch in ten, as null rounds do.
    pub null_rounds: bool,
    /// The token every node accepts (and Venus requires).
    pub token: Option<String>,
    pub listen: IpAddr,
    /// Where the control endpoint listens; port 0 picks a free one.
    pub control: SocketAddr,
    /// The network's height when the pool starts (0: at genesis, as the recorded Forest).
    pub start_height: u64,
}

/// The addresses of a running pool, as printed by `chain-co sim` on its first line.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SimReady {
    pub control: SocketAddr,
    pub block_delay_secs: u64,
    pub nodes: Vec<SimNodeAddr>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SimNodeAddr {
    pub name: String,
    pub implementation: Profile,
    pub addr: SocketAddr,
    /// Where to reach its JSON-RPC API: `ws://` for Fuhon, which has no HTTP POST.
    pub url: String,
    /// Its own health endpoint, where the implementation has one (Lotus `/health/readyz`;
    /// Forest `/readyz?verbose`, on its RPC port here rather than a port of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_url: Option<String>,
}

/// A running pool. Dropping it does not stop it; call [`SimPool::shutdown`].
pub struct SimPool {
    clock: ChainClock,
    nodes: Arc<BTreeMap<String, Arc<SimNode>>>,
    ready: SimReady,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl SimPool {
    pub async fn start(spec: SimSpec) -> std::io::Result<SimPool> {
        let clock = ChainClock::starting_now(spec.block_delay, spec.start_height);
        // The chain's keys are real CIDs, each from its parents': computed before any node
        // answers.
        keys::warm_up(&clock, spec.null_rounds);
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut nodes = BTreeMap::new();
        let mut addrs = Vec::new();
        let shared = node::Shared {
            clock,
            null_rounds: spec.null_rounds,
            token: spec.token.clone(),
            f3: Default::default(),
            mpools: Default::default(),
        };
        for (name, _) in &spec.nodes {
            shared.mpools.join(name);
        }
        for (name, profile) in &spec.nodes {
            let node =
                SimNode::start(name.clone(), *profile, shared.clone(), spec.listen, &tasks).await?;
            let scheme = if node.profile().serves_http_post() {
                "http"
            } else {
                "ws"
            };
            addrs.push(SimNodeAddr {
                name: name.clone(),
                implementation: node.profile(),
                addr: node.addr(),
                url: format!("{scheme}://{}/rpc/v1", node.addr()),
                health_url: node
                    .profile()
                    .health_path()
                    .map(|p| format!("http://{}{p}", node.addr())),
            });
            nodes.insert(name.clone(), node);
        }
        let nodes = Arc::new(nodes);
        let listener = TcpListener::bind(spec.control).await?;
        let control = listener.local_addr()?;
        let app = Router::new()
            .route("/nodes", get(list))
            .route("/nodes/{name}", post(change))
            .with_state(nodes.clone());
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Ok(SimPool {
            clock,
            nodes,
            ready: SimReady {
                control,
                block_delay_secs: clock.block_delay,
                nodes: addrs,
            },
            shutdown,
            tasks,
        })
    }

    /// The simulated network's clock: the height every healthy node is at.
    pub fn clock(&self) -> ChainClock {
        self.clock
    }

    pub fn ready(&self) -> &SimReady {
        &self.ready
    }

    /// Changes a node; the same as a POST to the control endpoint.
    pub async fn apply(&self, name: &str, op: Op) -> Result<NodeStatus, String> {
        let node = self
            .nodes
            .get(name)
            .ok_or_else(|| format!("no simulated node named {name:?}"))?;
        node.apply(op).await.map_err(|e| e.to_string())?;
        Ok(node.status())
    }

    pub fn status(&self) -> Vec<NodeStatus> {
        self.nodes.values().map(|n| n.status()).collect()
    }

    pub async fn shutdown(self) {
        for n in self.nodes.values() {
            n.kill().await;
        }
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

async fn list(State(nodes): State<Arc<BTreeMap<String, Arc<SimNode>>>>) -> Json<Vec<NodeStatus>> {
    Json(nodes.values().map(|n| n.status()).collect())
}

/// Takes the op as JSON whatever the Content-Type says, so that `curl -d '{"op":"stall"}'`
/// works as the docs show.
async fn change(
    State(nodes): State<Arc<BTreeMap<String, Arc<SimNode>>>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<NodeStatus>, (StatusCode, String)> {
    let op: Op = serde_json::from_slice(&body).map_err(|e| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("not an op ({e}); e.g. {{\"op\":\"stall\"}}\n"),
        )
    })?;
    let node = nodes
        .get(&name)
        .ok_or((StatusCode::NOT_FOUND, format!("no node named {name:?}\n")))?;
    node.apply(op)
        .await
        .map_err(|e| (StatusCode::CONFLICT, format!("{e}\n")))?;
    Ok(Json(node.status()))
}

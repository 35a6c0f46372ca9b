//! One simulated daemon: its HTTP server, its faults, and its JSON-RPC methods.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::chain::{self, ChainClock};

/// A change to a simulated node, as sent to `POST /nodes/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The head stops advancing; the node still answers.
    Stall,
    /// The head follows the network again (it catches up at once).
    Resume,
    /// The head is this many epochs behind the network.
    Lag { epochs: u64 },
    /// The port closes and open connections are cut.
    Die,
    /// The port opens again.
    Revive,
    /// Every reply waits this long first.
    Slow {
        #[serde(with = "humantime_serde")]
        delay: Duration,
    },
    /// Replies are an HTML error page with status 200.
    Garbage,
    /// Replies are JSON-RPC errors (code 1, HTTP 200, as go-jsonrpc sends method errors).
    RpcError,
    /// Replies are this HTTP status with an empty body.
    HttpError { status: u16 },
    /// Requests without `Authorization: Bearer <token>` get HTTP 401, as Venus does.
    RequireToken { token: String },
    /// Back to a healthy, following, fast, open node.
    Heal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Normal,
    Garbage,
    RpcError,
    Http(u16),
}

#[derive(Debug, Clone)]
struct Faults {
    stalled_at: Option<u64>,
    lag: u64,
    delay: Duration,
    reply: Reply,
    token: Option<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            stalled_at: None,
            lag: 0,
            delay: Duration::ZERO,
            reply: Reply::Normal,
            token: None,
        }
    }
}

/// What `GET /nodes` shows of a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub addr: SocketAddr,
    pub alive: bool,
    pub height: u64,
    pub stalled: bool,
    pub lag: u64,
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    pub reply: String,
    pub requests: u64,
}

/// The current incarnation of the node's server; replaced on revive.
struct Server {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

pub(super) struct SimNode {
    name: String,
    addr: SocketAddr,
    clock: ChainClock,
    faults: Mutex<Faults>,
    requests: Mutex<u64>,
    server: tokio::sync::Mutex<Option<Server>>,
    tracker: TaskTracker,
}

impl SimNode {
    pub(super) async fn start(
        name: String,
        clock: ChainClock,
        ip: IpAddr,
        tracker: &TaskTracker,
    ) -> std::io::Result<Arc<SimNode>> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let addr = listener.local_addr()?;
        let node = Arc::new(SimNode {
            name,
            addr,
            clock,
            faults: Mutex::default(),
            requests: Mutex::new(0),
            server: tokio::sync::Mutex::new(None),
            tracker: tracker.clone(),
        });
        let server = node.serve(listener);
        *node.server.lock().await = Some(server);
        Ok(node)
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn serve(self: &Arc<Self>, listener: TcpListener) -> Server {
        let stop = CancellationToken::new();
        let app = Router::new()
            .route("/rpc/v0", post(rpc_v0))
            .route("/rpc/v1", post(rpc_v1))
            .with_state(self.clone());
        let cancelled = stop.clone();
        let task = self.tracker.spawn(async move {
            // Connections live in this set: when the node dies, dropping the set aborts them
            // all, so keep-alive connections (nginx keeps some) are cut like a dead process's.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    _ = cancelled.cancelled() => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let svc = TowerToHyperService::new(app.clone());
                        conns.spawn(async move {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
            // Close the port first, so that no connection lands in the backlog of a dying
            // listener (it would be accepted by the kernel, then reset), then cut the open ones.
            drop(listener);
            conns.shutdown().await;
        });
        Server { stop, task }
    }

    /// Closes the port and every connection; returns once they are closed.
    pub(super) async fn kill(&self) {
        if let Some(server) = self.server.lock().await.take() {
            server.stop.cancel();
            let _ = server.task.await;
        }
    }

    pub(super) async fn apply(self: &Arc<Self>, op: Op) -> std::io::Result<()> {
        let now = SystemTime::now();
        match op {
            Op::Die => {
                self.kill().await;
                return Ok(());
            }
            Op::Revive | Op::Heal => {
                let mut server = self.server.lock().await;
                if server.is_none() {
                    let listener = TcpListener::bind(self.addr).await?;
                    *server = Some(self.serve(listener));
                }
            }
            _ => {}
        }
        let mut f = self.faults.lock().expect("faults lock");
        match op {
            Op::Stall => f.stalled_at = Some(self.height_with(&f, now)),
            Op::Resume => f.stalled_at = None,
            Op::Lag { epochs } => f.lag = epochs,
            Op::Slow { delay } => f.delay = delay,
            Op::Garbage => f.reply = Reply::Garbage,
            Op::RpcError => f.reply = Reply::RpcError,
            Op::HttpError { status } => f.reply = Reply::Http(status),
            Op::RequireToken { token } => f.token = Some(token),
            Op::Heal => *f = Faults::default(),
            Op::Die | Op::Revive => {}
        }
        Ok(())
    }

    fn height_with(&self, f: &Faults, now: SystemTime) -> u64 {
        f.stalled_at
            .unwrap_or_else(|| self.clock.height_at(now).saturating_sub(f.lag))
    }

    pub(super) fn status(&self) -> NodeStatus {
        let f = self.faults.lock().expect("faults lock").clone();
        let alive = self.server.try_lock().map(|s| s.is_some()).unwrap_or(true);
        NodeStatus {
            name: self.name.clone(),
            addr: self.addr,
            alive,
            height: self.height_with(&f, SystemTime::now()),
            stalled: f.stalled_at.is_some(),
            lag: f.lag,
            delay: f.delay,
            reply: match f.reply {
                Reply::Normal => "normal".into(),
                Reply::Garbage => "garbage".into(),
                Reply::RpcError => "rpc_error".into(),
                Reply::Http(s) => format!("http_{s}"),
            },
            requests: *self.requests.lock().expect("requests lock"),
        }
    }

    async fn handle(&self, api: ApiVersion, headers: &HeaderMap, body: &[u8]) -> Response {
        *self.requests.lock().expect("requests lock") += 1;
        let f = self.faults.lock().expect("faults lock").clone();
        if !f.delay.is_zero() {
            tokio::time::sleep(f.delay).await;
        }
        let mut resp = self.reply(api, &f, headers, body);
        if let Ok(v) = HeaderValue::from_str(&self.name) {
            resp.headers_mut().insert("x-sim-node", v);
        }
        resp
    }

    fn reply(&self, api: ApiVersion, f: &Faults, headers: &HeaderMap, body: &[u8]) -> Response {
        if let Some(token) = &f.token {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given != Some(token.as_str()) {
                return StatusCode::UNAUTHORIZED.into_response();
            }
        }
        match f.reply {
            Reply::Normal => {}
            Reply::Garbage => {
                return (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html><head><title>502 Bad Gateway</title></head><body>oops</body></html>\n",
                )
                    .into_response()
            }
            Reply::Http(status) => {
                return StatusCode::from_u16(status)
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                    .into_response()
            }
            Reply::RpcError => {
                return rpc_response(
                    StatusCode::OK,
                    json!({"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"simulated failure: blockstore: database is closed"}}),
                )
            }
        }
        let req: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return rpc_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":format!("unmarshaling request: {e}")}}),
                )
            }
        };
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        let method = req.get("method").and_then(Value::as_str).unwrap_or("");
        let height = self.height_with(f, SystemTime::now());
        let result = match method {
            "Filecoin.ChainHead" => chain::tipset_json(&self.clock, height),
            "Filecoin.ChainGetGenesis" => chain::tipset_json(&self.clock, 0),
            "Filecoin.ChainTipSetWeight" => Value::String(chain::weight(height).to_string()),
            "Filecoin.Version" => json!({
                "Version": "1.28.1+mainnet+git.9e4b1e5a0",
                // Lotus's /rpc/v0 wrapper reports FullAPIVersion0 (1.5.0), /rpc/v1 2.3.0.
                "APIVersion": match api { ApiVersion::V0 => 66816, ApiVersion::V1 => 131840 },
                "BlockDelay": self.clock.block_delay,
                "Agent": "lotus",
            }),
            "Filecoin.StateNetworkName" => Value::String("simnet".into()),
            "Filecoin.NetPeers" => Value::Array(
                (0..8)
                    .map(|i| {
                        json!({
                            "ID": format!("12D3KooWSim{}{i}", self.name.len()),
                            "Addrs": [format!("/ip4/127.0.0.1/tcp/{}/p2p/12D3KooWSim{i}", 24000 + i)]
                        })
                    })
                    .collect(),
            ),
            "Filecoin.SyncState" => json!({
                "ActiveSyncs": [{
                    "WorkerID": 1,
                    "Base": chain::tipset_json(&self.clock, height.saturating_sub(1)),
                    "Target": chain::tipset_json(&self.clock, height),
                    "Stage": 4,
                    "Height": height,
                    "Start": "0001-01-01T00:00:00Z",
                    "End": "0001-01-01T00:00:00Z",
                    "Message": ""
                }],
                "VMApplied": height * 120
            }),
            _ => {
                return rpc_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"jsonrpc":"2.0","id":id,"error":{"code":-32601,"message":format!("method '{method}' not found")}}),
                )
            }
        };
        rpc_response(
            StatusCode::OK,
            json!({"jsonrpc":"2.0","id":id,"result":result}),
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum ApiVersion {
    V0,
    V1,
}

fn rpc_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn rpc_v0(State(node): State<Arc<SimNode>>, headers: HeaderMap, body: Bytes) -> Response {
    node.handle(ApiVersion::V0, &headers, &body).await
}

async fn rpc_v1(State(node): State<Arc<SimNode>>, headers: HeaderMap, body: Bytes) -> Response {
    node.handle(ApiVersion::V1, &headers, &body).await
}

//! One simulated daemon: its server (HTTP POST and WebSocket on `/rpc/v0` and `/rpc/v1`), its
//! faults, and its JSON-RPC methods.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::chain::{self, Branch, ChainClock};
use super::finality::{F3Network, EC_FINALITY, F3_NETWORK};
use super::profile::{ApiPath, Profile};

mod recorded;

/// A change to a simulated node, as sent to `POST /nodes/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The head stops advancing; the node still answers.
    Stall,
    /// Its pubsub is broken: messages pushed to it are not gossiped, and it hears none.
    GossipCut,
    /// The head follows the network again (it catches up at once).
    Resume,
    /// The head is this many epochs behind the network.
    Lag { epochs: u64 },
    /// The head is this many epochs *ahead* of the wall clock (a rogue or broken node).
    Future { epochs: u64 },
    /// The node leaves the main chain here and follows a lighter fork of its own.
    Fork,
    /// The node reports another network (name and genesis), e.g. "calibrationnet".
    Network { name: String },
    /// The node has this many peers.
    Peers { count: u64 },
    /// The node is catching up: its head is this many epochs behind and SyncState (or
    /// Forest.SyncStatus) says it is syncing towards the network's head.
    Syncing { epochs: u64 },
    /// The port closes and open connections (HTTP and WebSocket) are cut.
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
    /// Every request must carry `Authorization: Bearer <token>` (401 otherwise).
    RequireToken { token: String },
    /// The node also accepts `token`, with `read` only (a token made with `lotus auth
    /// create-token --perm read`): `MpoolPush` and `MpoolPushMessage` are refused with it,
    /// and `AuthVerify` says `["read"]`, as go-jsonrpc's permission proxy does.
    ReadToken { token: String },
    /// ChainNotify subscriptions stay open but deliver nothing; polls still answer (a
    /// half-broken node).
    PushSilent,
    /// ChainNotify does not exist (method not found), as on a node without push.
    NoPush,
    /// The node receives each new tipset up to this long after the network made it (a
    /// different, repeatable delay per epoch): the arrival jitter of real gossip.
    Jitter {
        #[serde(with = "humantime_serde")]
        max: Duration,
    },
    /// F3 stops finalizing network-wide: every node's certificate stays where it is.
    FinalityStall,
    /// F3 finalizes again, network-wide.
    FinalityResume,
    /// This node's F3 is not running (Forest: its sidecar gone, every F3 method -32603; Lotus:
    /// `F3IsRunning` false, the others code 1 "f3 is not running"); the finalized tipset falls
    /// back to EC finality.
    F3Down,
    /// This node's F3 runs and has no certificate yet (Lotus: `F3GetLatestCertificate` is
    /// `null`; a fresh start).
    F3Fresh,
    /// F3 is turned off in this node's configuration (Lotus: code 4 "f3 is disabled"; Forest
    /// as for `F3Down`).
    F3Disabled,
    /// This node's F3 follows the network again.
    F3Up,
    /// This node's F3 manifest names this network (another F3 network's certificates).
    F3Network { name: String },
    /// The node leaves the chain a few epochs *before* the finalized tipset, onto a fork
    /// heavier than the network's: dead by F3, heavier by weight. `f3`: "down" (its own F3
    /// is down too) or "network" (it still reports the network's certificate).
    HeavyFork { f3: ForkF3 },
    /// The node reports the network's tipsets, their keys kept, with this much extra
    /// `ParentWeight` (by poll and by push): a lying or broken node, whose headers then no
    /// longer hash to the keys it reports.
    Inflate { weight: u64 },
    /// The node answers its head from the network's chain and from a heavier fork of its own
    /// (left one epoch ago) on alternate requests: a fork flipper.
    FlipFork,
    /// `Filecoin.Version` says this `Version` (a hostile or odd daemon's words).
    Version { version: String },
    /// ChainNotify sends its current head this many times a second (a flooding daemon);
    /// `inflate`: each one with one more `ParentWeight` than the last. 0 stops.
    PushFlood {
        per_second: u64,
        #[serde(default)]
        inflate: bool,
    },
    /// This method answers this JSON-RPC error, in these words (a Lotus-API server of another
    /// project refusing what it lacks its own way).
    Refuse {
        method: String,
        code: i64,
        message: String,
    },
    /// Back to a healthy, following, fast, open node of the pool's network.
    Heal,
}

/// A node's own F3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum F3State {
    Running,
    /// Running, no certificate yet.
    Fresh,
    NotRunning,
    Disabled,
}

impl F3State {
    /// Whether the node's finality is F3's (else EC finality).
    fn finalizes(self) -> bool {
        self == F3State::Running
    }
}

/// What a node on a heavy fork says about F3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForkF3 {
    Down,
    Network,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Normal,
    Garbage,
    RpcError,
    Http(u16),
}

/// Everything about a node that an op can change.
#[derive(Debug, Clone)]
struct Faults {
    stalled_at: Option<u64>,
    /// Epochs relative to the wall clock: negative behind, positive ahead.
    offset: i64,
    branch: Branch,
    network: String,
    peers: u64,
    syncing: bool,
    delay: Duration,
    reply: Reply,
    /// The token a request must carry when it carries one (or always, when `required`).
    token: Option<String>,
    required: bool,
    /// A token accepted with `read` only.
    read_token: Option<String>,
    push: Push,
    jitter: Duration,
    f3: F3State,
    /// The F3 network its manifest names, where an op changed it.
    f3_network: Option<String>,
    /// Extra ParentWeight reported on heads.
    inflate: u128,
    /// A fork of its own that every other head comes from (see [`Op::FlipFork`]).
    flip: Option<Branch>,
    /// `Version` as the node says it, instead of its profile's.
    version: Option<String>,
    /// Methods refused with (code, message).
    refused: Vec<(String, i64, String)>,
    /// ChainNotify floods: notifications per second, and whether each weighs one more.
    flood: (u64, bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Push {
    Normal,
    Silent,
    Unavailable,
}

/// The network every node of a pool starts on.
pub const SIM_NETWORK: &str = "simnet";

impl Faults {
    fn healthy(profile: Profile, token: Option<String>) -> Faults {
        Faults {
            stalled_at: None,
            offset: 0,
            branch: Branch::MAIN,
            network: SIM_NETWORK.into(),
            peers: 12,
            syncing: false,
            delay: Duration::ZERO,
            reply: Reply::Normal,
            required: profile.requires_token() && token.is_some(),
            token,
            read_token: None,
            push: Push::Normal,
            jitter: Duration::ZERO,
            f3: F3State::Running,
            f3_network: None,
            inflate: 0,
            flip: None,
            version: None,
            refused: Vec::new(),
            flood: (0, false),
        }
    }
}

/// What `GET /nodes` shows of a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub implementation: Profile,
    pub addr: SocketAddr,
    pub alive: bool,
    pub height: u64,
    pub stalled: bool,
    pub offset: i64,
    pub forked: bool,
    pub network: String,
    pub peers: u64,
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    pub reply: String,
    pub requests: u64,
    /// WebSocket connections opened to it (links, subscriptions).
    #[serde(default)]
    pub websockets: u64,
    /// Messages in its pool.
    #[serde(default)]
    pub mpool_pending: u64,
    /// Messages refused or gossiped to it with a nonce another message already had.
    #[serde(default)]
    pub nonce_conflicts: u64,
    /// Its pubsub is broken: what it is given stays with it.
    #[serde(default)]
    pub gossip_cut: bool,
}

/// The current incarnation of the node's server; replaced on revive.
struct Server {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Pool-wide settings every node shares.
#[derive(Debug, Clone)]
pub(super) struct Shared {
    pub clock: ChainClock,
    pub null_rounds: bool,
    pub token: Option<String>,
    pub f3: Arc<F3Network>,
    pub mpools: Arc<super::mpool::Mpools>,
}

pub(super) struct SimNode {
    name: String,
    profile: Profile,
    addr: SocketAddr,
    shared: Shared,
    faults: Mutex<Faults>,
    requests: Mutex<u64>,
    websockets: std::sync::atomic::AtomicU64,
    /// Heads answered, for [`Op::FlipFork`]'s alternation.
    flips: std::sync::atomic::AtomicU64,
    server: tokio::sync::Mutex<Option<Server>>,
    /// Cancelled when the node dies; WebSocket sessions watch it (they outlive the HTTP
    /// connection task that upgraded them).
    alive: Mutex<CancellationToken>,
    tracker: TaskTracker,
}

impl SimNode {
    pub(super) async fn start(
        name: String,
        profile: Profile,
        shared: Shared,
        ip: IpAddr,
        tracker: &TaskTracker,
    ) -> std::io::Result<Arc<SimNode>> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let addr = listener.local_addr()?;
        let faults = Faults::healthy(profile, shared.token.clone());
        let node = Arc::new(SimNode {
            name,
            profile,
            addr,
            shared,
            faults: Mutex::new(faults),
            requests: Mutex::new(0),
            websockets: Default::default(),
            flips: Default::default(),
            server: tokio::sync::Mutex::new(None),
            alive: Mutex::new(CancellationToken::new()),
            tracker: tracker.clone(),
        });
        let server = node.serve(listener);
        *node.server.lock().await = Some(server);
        Ok(node)
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(super) fn profile(&self) -> Profile {
        self.profile
    }

    fn serve(self: &Arc<Self>, listener: TcpListener) -> Server {
        let stop = CancellationToken::new();
        *self.alive.lock().expect("alive lock") = stop.clone();
        let app = Router::new()
            .route("/rpc/v0", post(rpc_v0).get(ws_v0))
            .route("/rpc/v1", post(rpc_v1).get(ws_v1))
            .route("/rpc/v2", post(rpc_v2))
            .route("/health", get(health));
        let app = match self.profile {
            Profile::Forest => app
                .route("/livez", get(own_health))
                .route("/readyz", get(own_health))
                .route("/healthz", get(own_health)),
            Profile::Lotus => app
                .route("/health/livez", get(own_health))
                .route("/health/readyz", get(own_health)),
            _ => app,
        };
        let app = app.with_state(self.clone());
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
        let now = SystemTime::now();
        let mut f = self.faults.lock().expect("faults lock");
        match op {
            Op::Stall => f.stalled_at = Some(self.height_with(&f, now)),
            Op::Resume => {
                f.stalled_at = None;
                f.syncing = false;
                f.offset = 0;
            }
            Op::Lag { epochs } => f.offset = -(epochs as i64),
            Op::Future { epochs } => f.offset = epochs as i64,
            Op::Fork => {
                let at = self.height_with(&f, now);
                f.branch = Branch {
                    id: 1 + self.addr.port() as u64,
                    fork_at: at,
                    heavy: false,
                }
            }
            Op::HeavyFork { f3 } => {
                let finalized =
                    self.shared
                        .f3
                        .finalized(&self.shared.clock, now, self.shared.null_rounds);
                f.branch = Branch {
                    id: 1 + self.addr.port() as u64,
                    fork_at: finalized.saturating_sub(2),
                    heavy: true,
                };
                if f3 == ForkF3::Down {
                    f.f3 = F3State::NotRunning;
                }
            }
            Op::FinalityStall => {
                self.shared
                    .f3
                    .stall(&self.shared.clock, now, self.shared.null_rounds)
            }
            Op::FinalityResume => self.shared.f3.resume(),
            Op::F3Down => f.f3 = F3State::NotRunning,
            Op::F3Fresh => f.f3 = F3State::Fresh,
            Op::F3Disabled => f.f3 = F3State::Disabled,
            Op::F3Up => f.f3 = F3State::Running,
            Op::F3Network { name } => f.f3_network = Some(name),
            Op::Inflate { weight } => f.inflate = u128::from(weight),
            Op::FlipFork => {
                let at = self.height_with(&f, now);
                f.flip = Some(Branch {
                    id: 1 + self.addr.port() as u64,
                    fork_at: at.saturating_sub(1),
                    heavy: true,
                });
            }
            Op::Version { version } => f.version = Some(version),
            Op::PushFlood {
                per_second,
                inflate,
            } => f.flood = (per_second, inflate),
            Op::Refuse {
                method,
                code,
                message,
            } => f.refused.push((method, code, message)),
            Op::Network { name } => f.network = name,
            Op::Peers { count } => f.peers = count,
            Op::Syncing { epochs } => {
                f.offset = -(epochs as i64);
                f.syncing = true;
            }
            Op::Slow { delay } => f.delay = delay,
            Op::Garbage => f.reply = Reply::Garbage,
            Op::RpcError => f.reply = Reply::RpcError,
            Op::HttpError { status } => f.reply = Reply::Http(status),
            Op::RequireToken { token } => {
                f.token = Some(token);
                f.required = true;
            }
            Op::ReadToken { token } => f.read_token = Some(token),
            Op::PushSilent => f.push = Push::Silent,
            Op::Jitter { max } => f.jitter = max,
            Op::NoPush => f.push = Push::Unavailable,
            Op::Heal => {
                *f = Faults::healthy(self.profile, self.shared.token.clone());
                self.shared.mpools.set_cut(&self.name, false);
            }
            Op::GossipCut => self.shared.mpools.set_cut(&self.name, true),
            Op::Die | Op::Revive => {}
        }
        Ok(())
    }

    fn height_with(&self, f: &Faults, now: SystemTime) -> u64 {
        f.stalled_at.unwrap_or_else(|| {
            let mut wall = self.shared.clock.height_at(now);
            // With jitter, epoch h reaches this node at its timestamp plus a delay of its own.
            let max_ms = f.jitter.as_millis() as u64;
            if max_ms > 0 {
                let seed = u64::from(self.addr.port());
                let now_ms = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                while wall > 0 {
                    let delay = chain::spread(wall ^ seed.rotate_left(17)) % max_ms;
                    if self.shared.clock.timestamp(wall) * 1000 + delay <= now_ms {
                        break;
                    }
                    wall -= 1;
                }
            }
            (wall as i64 + f.offset).max(0) as u64
        })
    }

    pub(super) fn status(&self) -> NodeStatus {
        let f = self.faults.lock().expect("faults lock").clone();
        let alive = !self.alive.lock().expect("alive lock").is_cancelled();
        NodeStatus {
            name: self.name.clone(),
            implementation: self.profile,
            addr: self.addr,
            alive,
            height: self.height_with(&f, SystemTime::now()),
            stalled: f.stalled_at.is_some(),
            offset: f.offset,
            forked: f.branch != Branch::MAIN,
            network: f.network.clone(),
            peers: f.peers,
            delay: f.delay,
            reply: match f.reply {
                Reply::Normal => "normal".into(),
                Reply::Garbage => "garbage".into(),
                Reply::RpcError => "rpc_error".into(),
                Reply::Http(s) => format!("http_{s}"),
            },
            requests: *self.requests.lock().expect("requests lock"),
            websockets: self.websockets.load(std::sync::atomic::Ordering::Relaxed),
            mpool_pending: self.shared.mpools.stats(&self.name).0,
            nonce_conflicts: self.shared.mpools.stats(&self.name).1,
            gossip_cut: self.shared.mpools.is_cut(&self.name),
        }
    }

    /// Checks the bearer token as the implementations do: a header without `Bearer ` or with
    /// a wrong token is 401 everywhere; no token is 401 only where one is required (Venus).
    fn authorized(&self, f: &Faults, presented: Option<&str>) -> bool {
        if read_only(f, presented) {
            return true;
        }
        match (presented, &f.token) {
            (None, _) => !f.required,
            (Some(p), Some(t)) => p.strip_prefix("Bearer ") == Some(t.as_str()),
            (Some(p), None) => p.starts_with("Bearer "),
        }
    }

    fn count_request(&self) {
        *self.requests.lock().expect("requests lock") += 1;
    }

    async fn http(&self, api: ApiPath, headers: &HeaderMap, body: &[u8]) -> Response {
        self.count_request();
        let f = self.faults.lock().expect("faults lock").clone();
        if !f.delay.is_zero() {
            tokio::time::sleep(f.delay).await;
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let mut resp = if !self.authorized(&f, presented) {
            StatusCode::UNAUTHORIZED.into_response()
        } else if !self.profile.serves_http_post() {
            StatusCode::BAD_REQUEST.into_response()
        } else {
            match f.reply {
                Reply::Garbage => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/html")],
                    GARBAGE,
                )
                    .into_response(),
                Reply::Http(status) => StatusCode::from_u16(status)
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                    .into_response(),
                Reply::Normal | Reply::RpcError => {
                    let (status, body) = self.answer(api, &f, body, read_only(&f, presented));
                    (
                        status,
                        [(header::CONTENT_TYPE, "application/json")],
                        body.to_string(),
                    )
                        .into_response()
                }
            }
        };
        if let Ok(v) = HeaderValue::from_str(&self.name) {
            resp.headers_mut().insert("x-sim-node", v);
        }
        resp
    }

    /// One JSON-RPC request → (HTTP status, reply). Shared by HTTP and WebSocket.
    fn answer(
        &self,
        api: ApiPath,
        f: &Faults,
        body: &[u8],
        read_only: bool,
    ) -> (StatusCode, Value) {
        let req: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":format!("unmarshaling request: {e}")}}),
                )
            }
        };
        // go-jsonrpc echoes the request's id, on errors too (clients match replies by it).
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        if f.reply == Reply::RpcError {
            return (
                StatusCode::OK,
                json!({"jsonrpc":"2.0","id":id,"error":{"code":1,"message":"simulated failure: blockstore: database is closed"}}),
            );
        }
        let method = req.get("method").and_then(Value::as_str).unwrap_or("");
        if let Some((_, code, message)) = f.refused.iter().find(|(m, _, _)| m == method) {
            return (
                StatusCode::OK,
                json!({"jsonrpc":"2.0","id":id,"error":{"code":code,"message":message}}),
            );
        }
        if !self.profile.has_method(method) || !self.profile.has_method_on(method, api) {
            return self.profile.method_not_found(&id, method);
        }
        if let Some(need) = needs(method).filter(|_| read_only) {
            return self.profile.missing_permission(&id, method, need);
        }
        if let Some(refusal) = self.profile.f3_refusal(f.f3, method) {
            return (
                StatusCode::OK,
                json!({"jsonrpc":"2.0","id":id,"error":refusal}),
            );
        }
        let params = req.get("params").cloned().unwrap_or(Value::Null);
        let network_height = self.shared.clock.height_at(SystemTime::now());
        if let Some(result) = self
            .shared
            .mpools
            .call(&self.name, method, &params, network_height)
        {
            return match result {
                Ok(v) => (StatusCode::OK, json!({"jsonrpc":"2.0","id":id,"result":v})),
                Err((code, message)) => (
                    StatusCode::OK,
                    json!({"jsonrpc":"2.0","id":id,"error":{"code":code,"message":message}}),
                ),
            };
        }
        if let Some(result) = self.recorded_result(api, f, method, &params) {
            return match result {
                Ok(v) => (StatusCode::OK, json!({"jsonrpc":"2.0","id":id,"result":v})),
                Err((code, message)) => (
                    StatusCode::OK,
                    json!({"jsonrpc":"2.0","id":id,"error":{"code":code,"message":message}}),
                ),
            };
        }
        if let Some(result) = self.finality_result(f, method, &params) {
            return match result {
                Ok(v) => (StatusCode::OK, json!({"jsonrpc":"2.0","id":id,"result":v})),
                Err(message) => (
                    StatusCode::OK,
                    json!({"jsonrpc":"2.0","id":id,"error":{"code":1,"message":message}}),
                ),
            };
        }
        match self.result(api, f, method) {
            Some(result) => (
                StatusCode::OK,
                json!({"jsonrpc":"2.0","id":id,"result":result}),
            ),
            None => self.profile.method_not_found(&id, method),
        }
    }

    fn tipset(&self, f: &Faults, height: u64) -> Value {
        let mut t = chain::tipset_json(
            &self.shared.clock,
            &f.branch,
            height,
            self.shared.null_rounds,
            self.profile.tipset_style(),
        );
        self.profile.loosen_tipset(&mut t);
        t
    }

    /// A head as the node reports it: with its extra weight when it inflates; from its own
    /// fork every other time when it flips.
    fn head_tipset(&self, f: &Faults, height: u64) -> Value {
        let flipped = f.flip.filter(|_| {
            self.flips
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                % 2
                == 1
        });
        let mut t = match flipped {
            Some(branch) => self.tipset(
                &Faults {
                    branch,
                    ..f.clone()
                },
                height,
            ),
            None => self.tipset(f, height),
        };
        if f.inflate > 0 {
            if let Some(blocks) = t.get_mut("Blocks").and_then(Value::as_array_mut) {
                for b in blocks {
                    let w: u128 = b["ParentWeight"]
                        .as_str()
                        .and_then(|w| w.parse().ok())
                        .unwrap_or(0);
                    b["ParentWeight"] = Value::String((w + f.inflate).to_string());
                }
            }
        }
        t
    }

    /// The finality methods (see `sim/finality.rs`): `None` for any other method; `Err` with
    /// the daemon's words for a call it refuses.
    fn finality_result(
        &self,
        f: &Faults,
        method: &str,
        params: &Value,
    ) -> Option<Result<Value, String>> {
        let now = SystemTime::now();
        let head = chain::last_tipset_height(self.height_with(f, now), self.shared.null_rounds);
        let clock = &self.shared.clock;
        let f3_epoch = self
            .shared
            .f3
            .finalized(clock, now, self.shared.null_rounds);
        let ec_epoch =
            chain::last_tipset_height(head.saturating_sub(EC_FINALITY), self.shared.null_rounds);
        // Where the node's F3 runs, its finalized tipset is F3's (on its own chain, as Lotus
        // and Forest read it from their chain store); else EC finality.
        let finalized = if f.f3.finalizes() {
            f3_epoch.min(head)
        } else {
            ec_epoch
        };
        Some(Ok(match method {
            // Running without a certificate yet: `null`, as go-f3's GetLatestCert.
            "Filecoin.F3GetLatestCertificate" if f.f3 == F3State::Fresh => Value::Null,
            "Filecoin.F3GetLatestCertificate" => {
                // The network's certificate: the main chain's tipsets.
                let main = Faults {
                    branch: Branch::MAIN,
                    ..f.clone()
                };
                let entry = |e: u64| {
                    json!({
                        "Key": self.tipset(&main, e)["Cids"],
                        "Commitments": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                        "Epoch": e,
                        "PowerTable": {"/": chain::cid(0x907e_7ab1)}
                    })
                };
                let base =
                    chain::last_tipset_height(f3_epoch.saturating_sub(1), self.shared.null_rounds);
                json!({
                    "GPBFTInstance": F3Network::instance(f3_epoch),
                    "ECChain": [entry(base), entry(f3_epoch)],
                    "SupplementalData": {
                        "Commitments": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                        "PowerTable": {"/": chain::cid(0x907e_7ab1)}
                    },
                    "Signers": [0, 3],
                    "Signature": "uYtvw/NWm2jKQj+d99UAG4aiPnpOMSZoXjcaOq5ArJ3zpwDx0d9iL5l2QqBgj2c4",
                    "PowerTableDelta": null
                })
            }
            // The instance in progress and its input (go-f3 `InstanceProgress`); Lotus answers
            // the zero value with `"Input": null` while its F3 is not running.
            "Filecoin.F3GetProgress" if f.f3 == F3State::NotRunning => {
                json!({"ID": 0, "Round": 0, "Phase": 0, "Input": null})
            }
            "Filecoin.F3GetProgress" => {
                let main = Faults {
                    branch: Branch::MAIN,
                    ..f.clone()
                };
                json!({
                    "ID": F3Network::instance(f3_epoch) + 1,
                    "Round": 0,
                    "Phase": if self.shared.f3.is_stalled() { 3 } else { 1 },
                    "Input": [{
                        "Key": self.tipset(&main, f3_epoch)["Cids"],
                        "Commitments": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                        "Epoch": f3_epoch,
                        "PowerTable": {"/": chain::cid(0x907e_7ab1)}
                    }]
                })
            }
            "Filecoin.F3IsRunning" => Value::Bool(f.f3 != F3State::NotRunning),
            "Filecoin.F3GetManifest" => F3Network::manifest(
                f.f3_network.as_deref().unwrap_or(F3_NETWORK),
                self.shared.clock.block_delay,
            ),
            "Filecoin.ChainGetFinalizedTipSet" => self.tipset(f, finalized),
            "Filecoin.ChainGetTipSetByHeight" => {
                let Some(epoch) = params.get(0).and_then(Value::as_u64) else {
                    return Some(Err("expected an epoch".into()));
                };
                if epoch > head {
                    return Some(Err(format!(
                        "looking for tipset with height greater than start point, req: {epoch}, head: {head}"
                    )));
                }
                self.tipset(f, epoch)
            }
            // /rpc/v2 (Forest; Lotus v1.35+): F3's finalized tipset, null while its F3 is
            // down; `ecFinalityThresholdDepth` -1 as recorded from a real Forest.
            "Filecoin.ChainGetTipSetFinalityStatus" => json!({
                "ecFinalityThresholdDepth": -1,
                "ecFinalizedTipSet": self.tipset(f, ec_epoch),
                "f3FinalizedTipSet": if f.f3.finalizes() { self.tipset(f, f3_epoch.min(head)) } else { Value::Null },
                "finalizedTipSet": self.tipset(f, finalized),
                "head": self.head_tipset(f, head),
            }),
            _ => return None,
        }))
    }

    fn result(&self, api: ApiPath, f: &Faults, method: &str) -> Option<Value> {
        let now = SystemTime::now();
        let height = self.height_with(f, now);
        let network_height = self.shared.clock.height_at(now);
        Some(match method {
            "Filecoin.ChainHead" => self.head_tipset(f, height),
            "Filecoin.ChainGetGenesis" => {
                let mut g = self.tipset(f, 0);
                // Another network has another genesis block.
                if f.network != SIM_NETWORK {
                    let other = chain::cid(f.network.len() as u64 ^ 0x6e65_7477);
                    g["Cids"] = json!([{ "/": other }]);
                }
                g
            }
            "Filecoin.ChainTipSetWeight" => Value::String(f.branch.weight(height).to_string()),
            "Filecoin.Version" => {
                let mut v = self.profile.version(api, self.shared.clock.block_delay);
                if let Some(said) = &f.version {
                    v["Version"] = Value::String(said.clone());
                }
                v
            }
            "Filecoin.StateNetworkName" => Value::String(f.network.clone()),
            "Filecoin.NetPeers" if f.peers == 0 => self.profile.no_peers(),
            "Filecoin.NetPeers" => Value::Array(
                (0..f.peers)
                    .map(|i| {
                        json!({
                            "ID": format!("12D3KooWSimPeer{i:04}"),
                            "Addrs": [format!("/ip4/10.1.0.{}/tcp/24001", i % 250 + 1)]
                        })
                    })
                    .collect(),
            ),
            "Filecoin.SyncState" => {
                let (stage, target) = if f.syncing {
                    (3, network_height)
                } else {
                    (4, height)
                };
                json!({
                    "ActiveSyncs": [{
                        "WorkerID": 1,
                        "Base": self.tipset(f, height.saturating_sub(1)),
                        "Target": self.tipset(f, target),
                        "Stage": stage,
                        "Height": height,
                        "Start": "2026-11-25T09:00:00Z",
                        "End": "0001-01-01T00:00:00Z",
                        "Message": ""
                    }],
                    "VMApplied": height * 120
                })
            }
            _ => return None,
        })
    }

    /// The tipset a node has now, for ChainNotify: (height, branch, JSON).
    fn current_tipset(&self) -> (u64, Branch, Value) {
        let f = self.faults.lock().expect("faults lock").clone();
        let h = chain::last_tipset_height(
            self.height_with(&f, SystemTime::now()),
            self.shared.null_rounds,
        );
        (h, f.branch, self.head_tipset(&f, h))
    }

    /// A WebSocket session: one JSON-RPC request per text frame, one reply per request; and,
    /// after `Filecoin.ChainNotify`, the go-jsonrpc channel protocol: the channel id as the
    /// call's result, then `xrpc.ch.val` notifications — one `current`, then `apply` for each
    /// new head, `revert` + `apply` when the node moved to another branch or down.
    async fn ws_session(self: Arc<Self>, api: ApiPath, mut socket: WebSocket, read_only: bool) {
        let dead = self.alive.lock().expect("alive lock").clone();
        // (channel id, height and branch last notified)
        let mut subscription: Option<(u64, u64, Branch, Value)> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        // Notifications sent by a flood so far (its weights grow with them).
        let mut flooded: u64 = 0;
        loop {
            let msg = tokio::select! {
                _ = dead.cancelled() => return,
                _ = tick.tick(), if subscription.is_some() => {
                    let Some((chan, h, b, last)) = subscription.as_mut() else { continue };
                    let (push, flood) = {
                        let f = self.faults.lock().expect("faults lock");
                        (f.push, f.flood)
                    };
                    if flood.0 > 0 {
                        if self.flood(&mut socket, *chan, flood, &mut flooded).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let silent = push != Push::Normal;
                    let (nh, nb, ts) = self.current_tipset();
                    if silent || (nh == *h && nb == *b) {
                        continue;
                    }
                    let changes = if nb != *b || nh < *h {
                        json!([{"Type": "revert", "Val": last.clone()}, {"Type": "apply", "Val": ts.clone()}])
                    } else {
                        json!([{"Type": "apply", "Val": ts.clone()}])
                    };
                    let frame = json!({"jsonrpc": "2.0", "method": "xrpc.ch.val", "params": [*chan, changes]});
                    (*h, *b, *last) = (nh, nb, ts);
                    if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
                        return;
                    }
                    continue;
                }
                m = socket.recv() => m,
            };
            let body = match msg {
                Some(Ok(Message::Text(t))) => t.as_str().as_bytes().to_vec(),
                Some(Ok(Message::Binary(b))) => b.to_vec(),
                Some(Ok(_)) => continue,
                _ => return,
            };
            self.count_request();
            let f = self.faults.lock().expect("faults lock").clone();
            if !f.delay.is_zero() {
                tokio::select! {
                    _ = dead.cancelled() => return,
                    _ = tokio::time::sleep(f.delay) => {}
                }
            }
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if request["method"] == "Filecoin.ChainNotify"
                && f.reply == Reply::Normal
                && f.push != Push::Unavailable
                && subscription.is_none()
            {
                let chan = 1;
                let (h, b, ts) = self.current_tipset();
                let reply = json!({"jsonrpc": "2.0", "id": request["id"], "result": chan});
                let first = json!({"jsonrpc": "2.0", "method": "xrpc.ch.val", "params": [chan, [{"Type": "current", "Val": ts.clone()}]]});
                for frame in [reply, first] {
                    if socket
                        .send(Message::Text(frame.to_string().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                subscription = Some((chan, h, b, ts));
                continue;
            }
            let reply = match f.reply {
                Reply::Garbage => GARBAGE.to_string(),
                // An HTTP error has no WebSocket form: the server drops the connection.
                Reply::Http(_) => return,
                Reply::Normal | Reply::RpcError => {
                    if request["method"] == "Filecoin.ChainNotify" {
                        self.profile
                            .method_not_found(&request["id"], "Filecoin.ChainNotify")
                            .1
                            .to_string()
                    } else {
                        self.answer(api, &f, &body, read_only).1.to_string()
                    }
                }
            };
            if socket.send(Message::Text(reply.into())).await.is_err() {
                return;
            }
        }
    }

    /// One tick's share of a ChainNotify flood: the current head, again and again.
    async fn flood(
        &self,
        socket: &mut WebSocket,
        chan: u64,
        (per_second, inflate): (u64, bool),
        sent: &mut u64,
    ) -> Result<(), axum::Error> {
        let (_, _, ts) = self.current_tipset();
        for _ in 0..per_second.div_ceil(20) {
            let mut ts = ts.clone();
            if inflate {
                *sent += 1;
                if let Some(blocks) = ts.get_mut("Blocks").and_then(Value::as_array_mut) {
                    for b in blocks {
                        let w: u128 = b["ParentWeight"]
                            .as_str()
                            .and_then(|w| w.parse().ok())
                            .unwrap_or(0);
                        b["ParentWeight"] = Value::String((w + u128::from(*sent)).to_string());
                    }
                }
            }
            let frame = json!({"jsonrpc": "2.0", "method": "xrpc.ch.val", "params": [chan, [{"Type": "apply", "Val": ts}]]});
            socket.send(Message::Text(frame.to_string().into())).await?;
        }
        Ok(())
    }

    fn upgrade(
        self: Arc<Self>,
        api: ApiPath,
        headers: &HeaderMap,
        query: &TokenQuery,
        ws: WebSocketUpgrade,
    ) -> Response {
        self.count_request();
        let f = self.faults.lock().expect("faults lock").clone();
        let header_token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // go-jsonrpc and Fuhon also take the token from `?token=`.
        let presented =
            header_token.or_else(|| query.token.as_ref().map(|t| format!("Bearer {t}")));
        if !self.authorized(&f, presented.as_deref()) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let read_only = read_only(&f, presented.as_deref());
        self.websockets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = HeaderValue::from_str(&self.name).ok();
        let mut resp = ws
            .max_message_size(64 << 20)
            .on_upgrade(move |socket| self.ws_session(api, socket, read_only));
        // As on every HTTP reply: which node nginx picked for this session.
        if let Some(v) = name {
            resp.headers_mut().insert("x-sim-node", v);
        }
        resp
    }
}

/// Whether the request carries the node's read-only token.
fn read_only(f: &Faults, presented: Option<&str>) -> bool {
    match (
        presented.and_then(|p| p.strip_prefix("Bearer ")),
        &f.read_token,
    ) {
        (Some(p), Some(r)) => p == r,
        _ => false,
    }
}

/// The permission a method needs beyond `read` (go-jsonrpc's `perm` tags in Lotus's API).
fn needs(method: &str) -> Option<&'static str> {
    match method {
        "Filecoin.MpoolPush" => Some("write"),
        "Filecoin.MpoolPushMessage" => Some("sign"),
        _ => None,
    }
}

const GARBAGE: &str = "<html><head><title>502 Bad Gateway</title></head><body>oops</body></html>\n";

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn rpc_v0(State(node): State<Arc<SimNode>>, headers: HeaderMap, body: Bytes) -> Response {
    node.http(ApiPath::V0, &headers, &body).await
}

async fn rpc_v1(State(node): State<Arc<SimNode>>, headers: HeaderMap, body: Bytes) -> Response {
    node.http(ApiPath::V1, &headers, &body).await
}

async fn rpc_v2(State(node): State<Arc<SimNode>>, headers: HeaderMap, body: Bytes) -> Response {
    node.http(ApiPath::V2, &headers, &body).await
}

async fn ws_v0(
    State(node): State<Arc<SimNode>>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    node.upgrade(ApiPath::V0, &headers, &q, ws)
}

async fn ws_v1(
    State(node): State<Arc<SimNode>>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    node.upgrade(ApiPath::V1, &headers, &q, ws)
}

/// The daemon's own health check (see `recorded.rs`).
async fn own_health(State(node): State<Arc<SimNode>>, uri: axum::http::Uri) -> Response {
    node.count_request();
    let verbose = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p.starts_with("verbose="))
    });
    let (code, body) = node.health_reply(uri.path(), verbose);
    (code, body).into_response()
}

/// Fuhon's plain-HTTP health route; harmless on the others.
async fn health() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"UP"}"#,
    )
        .into_response()
}

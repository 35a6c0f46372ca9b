//! The status API: what chain-co sees and why, for operators (`chain-co status`), monitoring
//! (`/metrics`) and keepalived (`/healthz`); and the operator's marks (drain, prefer).
//!
//! It listens on localhost unless configured otherwise. With `[api] token_file`, every endpoint
//! but `/healthz` needs `Authorization: Bearer <token>`. Nothing it returns contains a secret.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::decide::overrides::{Mark, Overrides, Preferred};
use crate::decide::select::{NodeVerdict, Role};
use crate::secret::Secret;
use crate::serve::metrics::Metrics;
use crate::serve::report::{ApplyRecord, Report};

/// What the loop and the API share.
pub struct Shared {
    pub reports: watch::Receiver<Option<Report>>,
    pub overrides: Mutex<Overrides>,
    pub metrics: Metrics,
    pub state_file: PathBuf,
    /// Swapped by a configuration reload: a rotated token never stays valid.
    pub token: std::sync::RwLock<Option<Secret>>,
    /// A report older than this makes `/healthz` fail: the loop is stuck.
    pub max_report_age: Duration,
    /// What an operator must know about chain-co's own setup (a damaged state file set aside,
    /// a setting that needs a restart, an API open without a token), shown in `/status`.
    pub notices: Mutex<Vec<String>>,
    /// Serialises changes to the operator's marks (each saved to the state file).
    pub mark_writes: tokio::sync::Mutex<()>,
    /// The journal of events and the heads of the last hour (`/history`, `/heads`, `/`).
    pub history: Mutex<crate::serve::history::History>,
    /// `[api] allowed_hosts`: names a request's `Host` may carry besides IP addresses and
    /// `localhost`.
    pub allowed_hosts: std::sync::RwLock<Vec<String>>,
    /// What carrying pending messages at switches did (`[messages]`).
    pub messages: Mutex<Messages>,
    /// Whether `[messages]` is configured (read at start).
    pub carries_messages: bool,
    /// A nonce-gap check is under way: the next one waits (a hung node never piles them up).
    pub gap_check: std::sync::atomic::AtomicBool,
    /// A resolution of the sending accounts is under way.
    pub senders_check: std::sync::atomic::AtomicBool,
}

/// `/status.messages`: pending messages carried to new primaries at switches.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Messages {
    /// Messages carried since start.
    pub carried: u64,
    /// The latest carries, in words ("carried 2 messages of f3…, nonces 7–8, from lotus-a
    /// to lotus-b"), newest last.
    pub recent: Vec<String>,
    /// What kept messages from being carried ("cannot carry messages to lotus-b: its token
    /// lacks write"), newest last.
    pub problems: Vec<String>,
    /// Backups whose nonces trail the primary's, as last compared ("lotus-b is behind
    /// lotus-a by 2 messages of f3…"): what a switch to them would carry.
    #[serde(default)]
    pub gaps: Vec<String>,
    /// The same comparison in numbers: per backup, the messages it lacks (summed over the
    /// addresses). Among equal heads, a node lacking none is promoted first.
    #[serde(default)]
    pub behind: std::collections::BTreeMap<String, u64>,
    /// The accounts whose messages follow a switch: the configured addresses and the
    /// miner's, each with its other form once resolved.
    #[serde(default)]
    pub senders: Vec<crate::apply::senders::Sender>,
    /// Whether the last resolution of the accounts succeeded.
    #[serde(default)]
    pub senders_resolved: bool,
    /// When each kind of problem was last said, so that one met every round is said once.
    #[serde(skip)]
    pub(crate) said: std::collections::BTreeMap<String, SystemTime>,
    /// (node, address) found behind at the last levelling: relayed to if still behind.
    #[serde(skip)]
    pub(crate) lagging: crate::apply::messages::Lagging,
}

impl Messages {
    /// What a configuration's `[messages]` starts with: its addresses as they are, until
    /// resolved.
    pub(crate) fn for_config(config: &crate::config::Config) -> Messages {
        let mut m = Messages::default();
        m.follow(config);
        m
    }

    /// After a reload: the new configuration's addresses, resolved again; comparisons made
    /// for the old ones are dropped. What was carried stays.
    pub(crate) fn follow(&mut self, config: &crate::config::Config) {
        self.senders = config
            .message_addresses
            .iter()
            .map(|a| crate::apply::senders::Sender::configured(a))
            .collect();
        self.senders_resolved = false;
        self.gaps.clear();
        self.behind.clear();
        self.lagging.clear();
    }

    /// Keeps the last few of each.
    pub(crate) fn add(&mut self, carried: u64, lines: &[String], problems: &[String]) {
        self.carried += carried;
        for (list, new) in [(&mut self.recent, lines), (&mut self.problems, problems)] {
            list.extend(new.iter().cloned());
            let over = list.len().saturating_sub(10);
            list.drain(..over);
        }
    }
}

impl Shared {
    /// Adds a notice once.
    pub(crate) fn notice(&self, text: impl Into<String>) {
        let text = text.into();
        let mut n = self.notices.lock().expect("notices lock");
        if !n.contains(&text) {
            n.push(text);
        }
    }
}

/// Where a node's head comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadSource {
    /// A live ChainNotify subscription.
    Push,
    /// Polls only.
    Poll,
}

/// `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub round: u64,
    pub updated_at: Option<String>,
    pub primary: Option<String>,
    pub primary_since: Option<String>,
    pub backups: Vec<String>,
    pub excluded: Vec<Excluded>,
    pub network: Option<String>,
    pub best_height: Option<u64>,
    pub expected_height: Option<u64>,
    pub warnings: Vec<String>,
    /// The newest tipset at least two nodes' F3 finalized; absent in a pool without F3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalized: Option<crate::probe::f3::TipsetRef>,
    pub nodes: Vec<NodeStatus>,
    pub last_apply: Option<ApplyEvent>,
    pub reloads: u64,
    pub failed_applies: u64,
    pub switches: u64,
    pub overrides: Overrides,
    /// The VRRP role, when chain-co runs in a keepalived pair.
    pub role: Option<crate::apply::ha::VrrpRole>,
    /// How sessions leave a node that stops being primary (`destroy`,
    /// `worker_shutdown_timeout`, ...).
    #[serde(default)]
    pub session_mode: Option<crate::apply::SessionMode>,
    /// Session moves waiting for a drain's grace period.
    #[serde(default)]
    pub pending_session_moves: Vec<PendingMove>,
    /// chain-co's own setup: a damaged state file set aside, a setting that needs a restart,
    /// an API open without a token.
    #[serde(default)]
    pub notices: Vec<String>,
    /// Pending messages carried at switches; absent without `[messages]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Messages>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingMove {
    pub node: String,
    #[serde(with = "crate::duration::plain")]
    pub after: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Excluded {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    #[serde(flatten)]
    pub verdict: NodeVerdict,
    #[serde(with = "crate::duration::opt")]
    pub latency: Option<Duration>,
    /// The same, in milliseconds, for machines.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
    /// `push` when a ChainNotify subscription is up, else `poll`.
    pub source: HeadSource,
    pub push: Option<crate::probe::push::PushStatus>,
    /// Age of the last pushed head.
    #[serde(with = "crate::duration::opt", default)]
    pub pushed_age: Option<Duration>,
    #[serde(default)]
    pub pushed_age_ms: Option<f64>,
}

/// The last apply that did something (or failed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyEvent {
    pub at: String,
    #[serde(flatten)]
    pub record: ApplyRecord,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Status {
    fn build(report: Option<&Report>, overrides: &Overrides) -> Status {
        let Some(r) = report else {
            return Status {
                version: env!("CARGO_PKG_VERSION").into(),
                round: 0,
                updated_at: None,
                primary: None,
                primary_since: None,
                backups: vec![],
                excluded: vec![],
                network: None,
                best_height: None,
                expected_height: None,
                warnings: vec!["no probe round has completed yet".into()],
                finalized: None,
                nodes: vec![],
                last_apply: None,
                reloads: 0,
                failed_applies: 0,
                switches: 0,
                overrides: overrides.clone(),
                role: None,
                session_mode: None,
                pending_session_moves: vec![],
                notices: vec![],
                messages: None,
            };
        };
        let d = &r.decision;
        Status {
            version: env!("CARGO_PKG_VERSION").into(),
            round: r.round,
            updated_at: Some(rfc3339(r.at)),
            primary: d.primary.clone(),
            primary_since: r.primary_since.map(rfc3339),
            backups: d.backups.clone(),
            excluded: d
                .nodes
                .iter()
                .filter(|v| v.role == Role::Excluded)
                .map(|v| Excluded {
                    name: v.name.clone(),
                    reason: v.reason.clone(),
                })
                .collect(),
            network: d.network.clone(),
            best_height: d.best_height,
            expected_height: d.expected_height,
            warnings: d.warnings.iter().map(|w| w.text.clone()).collect(),
            finalized: d.finalized.clone(),
            nodes: d
                .nodes
                .iter()
                .map(|v| {
                    let probe = r.probes.get(&v.name);
                    let push = r.push.get(&v.name);
                    NodeStatus {
                        verdict: v.clone(),
                        latency: probe.map(|p| p.0),
                        latency_ms: probe.map(|p| crate::duration::ms(p.0)),
                        error: probe.and_then(|p| p.1.clone()),
                        source: match push {
                            Some((crate::probe::push::PushStatus::Subscribed, _)) => {
                                HeadSource::Push
                            }
                            _ => HeadSource::Poll,
                        },
                        push: push.map(|p| p.0.clone()),
                        pushed_age: push.and_then(|p| p.1),
                        pushed_age_ms: push.and_then(|p| p.1).map(crate::duration::ms),
                    }
                })
                .collect(),
            last_apply: r.last_apply.as_ref().map(|(at, record)| ApplyEvent {
                at: rfc3339(*at),
                record: record.clone(),
            }),
            reloads: r.reloads,
            failed_applies: r.failed_applies,
            switches: r.switches,
            overrides: overrides.clone(),
            role: r.role,
            session_mode: Some(r.session_mode),
            pending_session_moves: r
                .pending_moves
                .iter()
                .map(|(node, after)| PendingMove {
                    node: node.clone(),
                    after: Duration::from_secs(after.as_secs()),
                })
                .collect(),
            notices: vec![],
            messages: None,
        }
    }
}

/// A client has this long to send its request headers (a half-sent request holds a socket).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer: an idle keep-alive connection is closed by then, and a client
/// that wants more simply connects again.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// How many API connections may be open at once: half of what the file-descriptor limit leaves
/// after the daemon's own work (probe and push connections per node, nginx, files), between 16
/// and 1024. A flood of idle or half-sent connections then cannot take the descriptors the
/// upstream write needs.
pub(crate) fn connection_cap(nodes: usize) -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    let reserve = 64 + 4 * nodes as u64;
    (soft.saturating_sub(reserve) / 2).clamp(16, 1024) as usize
}

/// Serves the API until `shutdown`, with at most `cap` connections. At the cap the oldest
/// connection is closed to make room, so that a flood of idle or half-sent connections cannot
/// keep keepalived's `/healthz` from being answered: a real request takes milliseconds and is
/// never the oldest for long.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    cap: usize,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let app = router(shared);
    let tasks = tokio_util::task::TaskTracker::new();
    let mut live: std::collections::VecDeque<CancellationToken> = Default::default();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset before accept: wait a
                    // moment instead of spinning; connections closing will free some.
                    tracing::debug!(error = %e, "status API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        live.retain(|t| !t.is_cancelled());
        while live.len() >= cap {
            if let Some(oldest) = live.pop_front() {
                oldest.cancel();
            }
        }
        let done = CancellationToken::new();
        live.push_back(done.clone());
        let service = TowerToHyperService::new(app.clone());
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = done.cancelled() => {}
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {}
                _ = stop.cancelled() => {
                    // Let a request in flight finish, briefly.
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                }
            }
            done.cancel();
        });
    }
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
    Ok(())
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Every route but `/healthz` sits behind the token layer: a route added to `guarded` cannot
/// forget the check.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    // Changing marks moves the miners' traffic: JSON only (a form or a no-CORS fetch from
    // another site cannot send it) and never from a foreign origin.
    let marks = Router::new()
        .route("/nodes/{name}/drain", post(drain))
        .route("/nodes/{name}/undrain", post(undrain))
        .route("/nodes/{name}/prefer", post(prefer))
        .route("/prefer", axum::routing::delete(unprefer))
        .route_layer(axum::middleware::from_fn(same_origin_json));
    let guarded = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .merge(marks)
        .route("/history", get(history))
        .route("/heads", get(heads))
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        // The page holds no data: it fetches the guarded routes with the token it asks for.
        .route("/", get(page))
        .merge(guarded)
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            known_host,
        ))
        .with_state(shared)
}

/// `Host` must be an IP address, `localhost`, or a name in `[api] allowed_hosts`: a page
/// whose name was re-pointed at this host (DNS rebinding) names itself and is refused.
/// `/healthz` is left open to any name (it says nothing and changes nothing).
async fn known_host(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let ok = request.uri().path() == "/healthz" || {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        host_allowed(host, &shared.allowed_hosts.read().expect("hosts lock"))
    };
    if ok {
        return next.run(request).await;
    }
    (
        StatusCode::FORBIDDEN,
        "unknown Host: use an IP address or localhost, or list the name in [api] allowed_hosts\n",
    )
        .into_response()
}

/// The name part of a `Host` header (without the port), lower-cased.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.to_ascii_lowercase()
}

fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = host_name(host);
    name.parse::<std::net::IpAddr>().is_ok() || name == "localhost" || allowed.contains(&name)
}

/// Mark changes carry `Content-Type: application/json`, and an `Origin`, when a browser sends
/// one, is this API's own.
async fn same_origin_json(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "changes need Content-Type: application/json (chain-co drain/prefer send it)\n",
        )
            .into_response();
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let foreign = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|origin| {
            let own = origin
                .split_once("://")
                .map(|(_, rest)| rest.trim_end_matches('/'));
            own.is_none() || own != host
        });
    if foreign {
        return (
            StatusCode::FORBIDDEN,
            "refused: the request comes from another site's page (Origin)\n",
        )
            .into_response();
    }
    next.run(request).await
}

/// `GET /history`: the journal, oldest first (repeats folded), how far back it reaches and
/// where it is kept (`file`: `null` when in memory only, lost at restart).
async fn history(State(shared): State<Arc<Shared>>) -> Response {
    let h = shared.history.lock().expect("history lock");
    let body = serde_json::json!({
        "events": h.events(),
        "since": h.since(),
        "file": h.file().map(|p| p.display().to_string()),
        "bound_bytes": crate::serve::history::JOURNAL_BYTES,
    });
    drop(h);
    Json(body).into_response()
}

/// `GET /heads`: per node, `[unix seconds, height, lag, latency ms]` over the last hour
/// (65535: unknown).
async fn heads(State(shared): State<Arc<Shared>>) -> Response {
    let heads = shared.history.lock().expect("history lock").heads();
    Json(serde_json::json!({ "nodes": heads })).into_response()
}

/// `GET /`: the status page. One file, no external assets.
async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("status.html"),
    )
        .into_response()
}

async fn require_token(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match unauthorized(&shared, request.headers()) {
        Some(refusal) => refusal,
        None => next.run(request).await,
    }
}

/// Compares in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The credentials of an `Authorization` header: the auth scheme is case-insensitive
/// (RFC 7235 §2.1), so `bearer x` and `BEARER x` carry token `x` as `Bearer x` does.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start())
}

/// `Some(401 response)` when a token is configured and the request does not carry it. A
/// missing token and a wrong one get different words: the first is a usage mistake, the
/// second a stale or rotated token file.
fn unauthorized(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let token = shared.token.read().expect("token lock").clone()?;
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let message = match header.map(bearer) {
        Some(Some(g)) if same(g, token.expose()) => return None,
        Some(Some(_)) => {
            "the bearer token does not match [api] token_file of the running chain-co (rotated?)\n"
        }
        Some(None) => "the Authorization header must be `Bearer <token>`\n",
        None => "a bearer token is required: chain-co status --token-file FILE\n",
    };
    let mut response = (StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    Some(response)
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let overrides = shared.overrides.lock().expect("overrides lock").clone();
    let report = shared.reports.borrow().clone();
    let mut status = Status::build(report.as_ref(), &overrides);
    status.notices = shared.notices.lock().expect("notices lock").clone();
    let messages = shared.messages.lock().expect("messages lock").clone();
    if shared.carries_messages {
        status.messages = Some(messages);
    }
    Json(status).into_response()
}

/// Healthy when the last round is recent, a primary is published and the last apply worked.
/// The one-line reason is what keepalived's check script and an operator see.
pub fn health(
    report: Option<&Report>,
    max_age: Duration,
    now: SystemTime,
) -> Result<String, String> {
    let r = report.ok_or("no probe round has completed yet")?;
    let age = now.duration_since(r.at).unwrap_or_default();
    if age > max_age {
        return Err(format!(
            "the last probe round ended {} ago; the loop is stuck",
            humantime::format_duration(Duration::from_secs(age.as_secs()))
        ));
    }
    match &r.apply {
        ApplyRecord::Failed { error } => Err(format!("the last apply failed: {error}")),
        ApplyRecord::Held { reason } => Err(format!("no primary: {reason}")),
        _ => Ok(format!(
            "ok: primary {}",
            r.decision.primary.as_deref().unwrap_or("none")
        )),
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let report = shared.reports.borrow().clone();
    match health(report.as_ref(), shared.max_report_age, SystemTime::now()) {
        Ok(msg) => (StatusCode::OK, format!("{msg}\n")).into_response(),
        Err(msg) => (StatusCode::SERVICE_UNAVAILABLE, format!("{msg}\n")).into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MarkRequest {
    #[serde(default)]
    pub by: String,
    /// For a drain: how long its sessions may stay before they are moved.
    #[serde(with = "humantime_serde", default)]
    pub grace: Option<std::time::Duration>,
}

/// The body of a mark change: empty, or a JSON object with `by` and (for a drain) `grace` as
/// a duration ("30s"). Anything else is refused with the reason: a drain must never happen at
/// once because its grace was misspelt.
fn body_mark(body: &[u8]) -> Result<MarkRequest, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(MarkRequest::default());
    }
    serde_json::from_slice::<MarkRequest>(body).map_err(|e| {
        Box::new(
            (
                StatusCode::BAD_REQUEST,
                format!(
                    "{}; send e.g. {{\"by\": \"alice\", \"grace\": \"30s\"}}; nothing changed\n",
                    crate::text::inert(&e.to_string(), 200)
                ),
            )
                .into_response(),
        )
    })
}

/// Applies a change to the marks and saves them; on a failed save the change is undone.
/// Applies a change to the marks: computed on a copy, saved durably on a blocking thread (an
/// fsync must not stall the async workers that answer `/healthz`), and only then put in force.
/// Changes are serialised, so that two operators cannot save over each other.
async fn change(
    shared: &Shared,
    f: impl FnOnce(&mut Overrides) -> Result<String, (StatusCode, String)>,
) -> Response {
    let _one_at_a_time = shared.mark_writes.lock().await;
    let mut next = shared.overrides.lock().expect("overrides lock").clone();
    let msg = match f(&mut next) {
        Ok(m) => m,
        Err((code, msg)) => return (code, format!("{msg}\n")).into_response(),
    };
    let path = shared.state_file.clone();
    let to_save = next.clone();
    let saved = tokio::task::spawn_blocking(move || to_save.save(&path))
        .await
        .unwrap_or_else(|e| {
            Err(crate::decide::overrides::StateFileError::Write {
                path: shared.state_file.display().to_string(),
                message: e.to_string(),
            })
        });
    if let Err(e) = saved {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{e}; nothing changed\n"),
        )
            .into_response();
    }
    *shared.overrides.lock().expect("overrides lock") = next;
    tracing::info!(change = %msg, "operator override");
    shared.history.lock().expect("history lock").record(
        SystemTime::now(),
        crate::serve::history::EventKind::Mark,
        None,
        msg.clone(),
    );
    (
        StatusCode::OK,
        format!("{msg}; takes effect at the next probe round\n"),
    )
        .into_response()
}

fn known_nodes(shared: &Shared) -> BTreeMap<String, NodeVerdict> {
    shared
        .reports
        .borrow()
        .as_ref()
        .map(|r| {
            r.decision
                .nodes
                .iter()
                .map(|v| (v.name.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

async fn drain(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let nodes = known_nodes(&shared);
    if !nodes.contains_key(&name) {
        return (StatusCode::NOT_FOUND, format!("no node named {name:?}\n")).into_response();
    }
    let request = match body_mark(&body) {
        Ok(r) => r,
        Err(refusal) => return *refusal,
    };
    change(&shared, |o| {
        let others = nodes
            .values()
            .filter(|v| v.name != name && v.healthy && !o.drained.contains_key(&v.name))
            .count();
        if others == 0 {
            return Err((
                StatusCode::CONFLICT,
                format!("refused: {name} is the last healthy node not drained; drain it once another node is healthy"),
            ));
        }
        let mark = Mark {
            grace: request.grace,
            ..Mark::now(&request.by)
        };
        o.drained.insert(name.clone(), mark);
        Ok(match request.grace {
            Some(g) => format!(
                "{name} drained; its sessions move in {}",
                humantime::format_duration(g)
            ),
            None => format!("{name} drained"),
        })
    })
    .await
}

async fn undrain(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    change(&shared, |o| match o.drained.remove(&name) {
        Some(_) => Ok(format!("{name} undrained")),
        None => Err((StatusCode::NOT_FOUND, format!("{name} is not drained"))),
    })
    .await
}

async fn prefer(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if !known_nodes(&shared).contains_key(&name) {
        return (StatusCode::NOT_FOUND, format!("no node named {name:?}\n")).into_response();
    }
    let by = match body_mark(&body) {
        Ok(r) => r.by,
        Err(refusal) => return *refusal,
    };
    change(&shared, |o| {
        if let Some(m) = o.drained.get(&name) {
            return Err((
                StatusCode::CONFLICT,
                format!(
                    "refused: {name} is drained (by {} at {}); undrain it first",
                    m.by, m.at
                ),
            ));
        }
        o.preferred = Some(Preferred {
            node: name.clone(),
            mark: Mark::now(&by),
        });
        Ok(format!("{name} preferred as primary while it is healthy"))
    })
    .await
}

async fn unprefer(State(shared): State<Arc<Shared>>) -> Response {
    change(&shared, |o| match o.preferred.take() {
        Some(p) => Ok(format!("{} no longer preferred", p.node)),
        None => Err((StatusCode::NOT_FOUND, "no node is preferred".into())),
    })
    .await
}

//! One probe round: ask every node what it knows, concurrently, and turn the replies into
//! [`Observation`]s for `select`.
//!
//! A round never takes longer than the probe timeout (every call is bounded in `rpc`), and one
//! node's failure is that node's observation, never the round's.
//!
//! Per node and round: `Filecoin.ChainHead` always; `Version`, `StateNetworkName` and
//! `ChainGetGenesis` at first contact and again after the node was unreachable (it may have
//! been replaced or upgraded); `NetPeers` and the sync state each round when `sync_checks` is
//! on. What differs between implementations is learned once and remembered here:
//! - the transport: a daemon that answers an HTTP POST with 400 (Fuhon serves JSON-RPC over
//!   WebSocket only) is probed over WebSocket from then on;
//! - the sync method: Forest has no `Filecoin.SyncState` but `Forest.SyncStatus`.
//!
//! Each such fallback is logged once, when it is learned, not on every probe.
//!
//! Finality (see [`crate::probe::f3`]) is asked every [`FINALITY_EVERY`] rounds, not every round, so
//! the cost of probing stays flat: the F3 certificate and progress, the finalized tipset, and
//! the tipset the node's chain holds at the pool's finalized epoch. The last answers are
//! attached to every observation until the next ask. A method the node lacks is asked again
//! every [`ASK_LACKING_AGAIN`].

pub mod f3;
pub mod frames;
pub mod health;
pub mod link;
pub mod push;
pub mod rpc;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use serde_json::value::RawValue;
use tokio::task::JoinSet;
use tracing::{debug, info, info_span, Instrument};

use crate::probe::link::ViaLink;
use crate::probe::push::PushHub;
use crate::probe::rpc::{
    read, Call, Endpoint, ForestSyncStatus, Head, Identity, Implementation, Raw, RpcClient,
    RpcError, SyncState, TipSet, Transport, VersionInfo,
};
use crate::proof::HeaderCheck;
use crate::secret::Secret;
use f3::{F3View, Finality};
use health::{ClientToken, OwnWord};

/// A node as the prober sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub endpoint: Endpoint,
    /// `false`: the transport of `endpoint` is a first guess, to be corrected by detection.
    pub transport_fixed: bool,
    /// The daemon's own health endpoint (`[[node]] health_url`); `None`: its implementation's
    /// default, once it is known.
    pub health_url: Option<reqwest::Url>,
}

/// The result of one round: observations in target order, with their latencies.
#[derive(Debug, Clone)]
pub struct Round {
    /// When the round started: its observations were true then.
    pub at: std::time::SystemTime,
    pub observations: Vec<Observation>,
    pub latencies: Vec<Duration>,
    pub took: Duration,
    /// The per-node tokens are not all the same, and no `[chain] client_token_file` lets
    /// chain-co check the one clients use: a client's token may be refused after a switch.
    pub tokens_differ: bool,
}

/// An optional method a node may lack (or refuse): its check is then off for that node.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum OptionalMethod {
    #[serde(rename = "Filecoin.StateNetworkName")]
    StateNetworkName,
    #[serde(rename = "Filecoin.NetPeers")]
    NetPeers,
    #[serde(rename = "Filecoin.SyncState")]
    SyncState,
    #[serde(rename = "Filecoin.NodeStatus")]
    NodeStatus,
    /// The F3 methods (`F3IsRunning`, `F3GetLatestCertificate`, ...): no F3 on this node.
    #[serde(rename = "Filecoin.F3IsRunning")]
    F3,
}

impl std::fmt::Display for OptionalMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OptionalMethod::StateNetworkName => "Filecoin.StateNetworkName",
            OptionalMethod::NetPeers => "Filecoin.NetPeers",
            OptionalMethod::SyncState => "Filecoin.SyncState",
            OptionalMethod::NodeStatus => "Filecoin.NodeStatus",
            OptionalMethod::F3 => "Filecoin.F3IsRunning",
        })
    }
}

/// What one probe of one node found.
#[derive(Debug, Clone)]
pub struct Observation {
    pub node: String,
    pub result: Result<crate::probe::rpc::Head, RpcError>,
    /// Who the node is; `None` until its first-contact calls have answered.
    pub identity: Option<Identity>,
    /// Number of peers, where asked.
    pub peers: Option<u64>,
    /// The height a sync in progress is heading to, where the node reports one.
    pub syncing_to: Option<u64>,
    /// The head came from a ChainNotify push, fresher than the last poll.
    pub via_push: bool,
    /// Optional methods the node lacks (their checks are off for it).
    pub unsupported: Vec<OptionalMethod>,
    /// When the head was known to be the node's head; `None`: now (a poll just made, or a live
    /// subscription that would have pushed a change). Lag in time is only counted up to here:
    /// after it, the node may have caught up unseen.
    pub observed_at: Option<std::time::SystemTime>,
    /// What the node last said about finality (asked every few rounds); `None`: not asked yet,
    /// or the node has no finality methods.
    pub finality: Option<Finality>,
    /// What the daemon last said about itself (its health endpoint, `NodeStatus`): a
    /// tie-break and a warning, never a reason to exclude.
    pub own_word: Option<crate::probe::health::OwnWord>,
    /// Whether it accepted the clients' token (`[chain] client_token_file`) when last asked.
    pub client_token: Option<crate::probe::health::ClientToken>,
    /// With `[messages]`: how many of the provider's pending messages this node lacks next to
    /// the primary, as last compared (`None`: not compared). A tie-break among equal heads,
    /// never a reason to exclude: a switch to it would have to carry them.
    pub messages_behind: Option<u64>,
}

impl Observation {
    pub fn new(node: &str, result: Result<crate::probe::rpc::Head, RpcError>) -> Observation {
        Observation {
            node: node.to_string(),
            result,
            identity: None,
            peers: None,
            syncing_to: None,
            via_push: false,
            unsupported: Vec::new(),
            observed_at: None,
            finality: None,
            own_word: None,
            client_token: None,
            messages_behind: None,
        }
    }
}

/// Where a node's sync state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncMethod {
    SyncState,
    ForestSyncStatus,
    /// Neither exists: the sync rule does not apply to this node.
    Unavailable,
}

impl SyncMethod {
    fn method(&self) -> Option<&'static str> {
        match self {
            SyncMethod::SyncState => Some("Filecoin.SyncState"),
            SyncMethod::ForestSyncStatus => Some("Forest.SyncStatus"),
            SyncMethod::Unavailable => None,
        }
    }
}

/// Finality is asked every this many rounds (the first round included).
pub(crate) const FINALITY_EVERY: u32 = 3;
/// A finality method a node lacks is asked again after this long (it may be upgraded).
pub(crate) const ASK_LACKING_AGAIN: Duration = Duration::from_secs(300);

/// What the prober has learned about one node.
#[derive(Debug, Clone)]
struct Learned {
    identity: Option<Identity>,
    transport: Transport,
    sync: SyncMethod,
    /// Optional methods the node lacks; their checks are off for it (shown in status).
    unsupported: std::collections::BTreeSet<OptionalMethod>,
    /// The node's finality as last asked.
    finality: Option<Finality>,
    /// Rounds until finality is asked again (0: this round).
    finality_in: u32,
    /// Until when the F3 certificate, and the finalized tipset, are not asked (lacking).
    f3_lacking_until: Option<Instant>,
    /// Until when the F3 manifest is not asked again (it changes rarely).
    f3_manifest_until: Option<Instant>,
    finalized_lacking_until: Option<Instant>,
    /// What the daemon last said about itself, and until when its health URL is not asked (a
    /// default URL that nothing serves).
    own_word: OwnWord,
    health_lacking_until: Option<Instant>,
    /// Whether it accepted the clients' token when last asked.
    client_token: Option<ClientToken>,
}

/// Which finality calls a round makes, in this order after the others.
#[derive(Debug, Clone, Copy, Default)]
struct FinalityAsk {
    certificate: bool,
    finalized: bool,
    /// The pool's finalized epoch, to see which tipset the node's chain holds there.
    chain_at: Option<u64>,
    /// A slow round for this node: its own word and the clients' token are asked too.
    slow: bool,
}

/// Probes a fixed set of targets, remembering what it learns about each between rounds.
#[derive(Debug, Clone)]
pub struct Prober {
    client: RpcClient,
    targets: Arc<Vec<Target>>,
    sync_checks: bool,
    learned: Arc<Mutex<HashMap<String, Learned>>>,
    /// The nodes' links (the push connections), used while open instead of HTTP.
    links: Option<PushHub>,
    /// The pool's finalized epoch from the last decision: each node's chain is checked there.
    pool_finalized: Arc<Mutex<Option<u64>>>,
    /// The token clients send (`[chain] client_token_file`), tried on every node.
    client_token: Option<Secret>,
    /// Every head's block headers are checked against their CIDs (shared with push).
    headers: Arc<HeaderCheck>,
}

fn method_missing<T>(r: &Result<T, RpcError>) -> bool {
    matches!(r, Err(e) if e.is_method_missing())
}

/// An optional method (`StateNetworkName`, `NetPeers`, the sync state, `NodeStatus`) the node
/// refused with any JSON-RPC error while it answered `ChainHead`: Lotus-API servers of other
/// projects word "no such method" their own way, with their own codes, so the check is turned
/// off for it whatever the words. A transport failure, or a node failing everything, says
/// nothing about the method.
fn optional_refused<T, H>(r: &Result<T, RpcError>, head: &Result<H, RpcError>) -> bool {
    method_missing(r) || (head.is_ok() && matches!(r, Err(RpcError::Rpc { .. })))
}

impl Prober {
    pub fn new(client: RpcClient, targets: Vec<Target>, sync_checks: bool) -> Self {
        let learned = targets
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    Learned {
                        identity: None,
                        transport: t.endpoint.transport,
                        sync: SyncMethod::SyncState,
                        unsupported: Default::default(),
                        finality: None,
                        finality_in: 0,
                        f3_lacking_until: None,
                        f3_manifest_until: None,
                        finalized_lacking_until: None,
                        own_word: OwnWord::default(),
                        health_lacking_until: None,
                        client_token: None,
                    },
                )
            })
            .collect();
        Prober {
            client,
            targets: Arc::new(targets),
            sync_checks,
            learned: Arc::new(Mutex::new(learned)),
            links: None,
            pool_finalized: Arc::new(Mutex::new(None)),
            client_token: None,
            headers: Arc::default(),
        }
    }

    /// Tries the clients' token (`[chain] client_token_file`) on every node in slow rounds.
    pub(crate) fn with_client_token(mut self, token: Option<Secret>) -> Self {
        self.client_token = token;
        self
    }

    /// The nodes' own tokens differ (compared here, never shown) and nothing checks the one
    /// clients use.
    fn tokens_differ(&self) -> bool {
        if self.client_token.is_some() {
            return false;
        }
        let mut tokens = self
            .targets
            .iter()
            .filter_map(|t| t.endpoint.token.as_ref().map(Secret::expose));
        let Some(first) = tokens.next() else {
            return false;
        };
        tokens.any(|t| t != first)
    }

    /// The header check pushed heads share with polled ones.
    pub(crate) fn headers(&self) -> Arc<HeaderCheck> {
        self.headers.clone()
    }

    /// The pool's finalized epoch, as the last decision found it.
    pub(crate) fn set_pool_finalized(&self, epoch: Option<u64>) {
        *self.pool_finalized.lock().expect("pool finalized lock") = epoch;
    }

    /// Which finality calls to make of this node this round, if any; counts the rounds.
    fn finality_ask(&self, name: &str, learned: &Learned) -> FinalityAsk {
        let now = Instant::now();
        if learned.finality_in > 0 {
            self.update(name, |l| l.finality_in -= 1);
            return FinalityAsk::default();
        }
        self.update(name, |l| l.finality_in = FINALITY_EVERY - 1);
        let due = |until: Option<Instant>| until.is_none_or(|u| now >= u);
        FinalityAsk {
            certificate: due(learned.f3_lacking_until),
            finalized: due(learned.finalized_lacking_until),
            chain_at: *self.pool_finalized.lock().expect("pool finalized lock"),
            slow: true,
        }
    }

    /// Probes over the nodes' open links from now on (`None`: HTTP only).
    pub(crate) fn use_links(&mut self, links: Option<PushHub>) {
        self.links = links;
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Probes every target once, concurrently.
    pub async fn round(&self) -> Round {
        let started = Instant::now();
        let at = std::time::SystemTime::now();
        let mut set = JoinSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let this = self.clone();
            let span = info_span!("probe", node = %t.name);
            set.spawn(async move { (i, this.probe_one(&this.targets[i]).await) }.instrument(span));
        }
        let n = self.targets.len();
        let mut results: Vec<Option<(Observation, Duration)>> = vec![None; n];
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((i, r)) => results[i] = Some(r),
                // A panic in one probe must not take the round down; that node reads as failed.
                Err(e) => debug!(error = %e, "probe task failed"),
            }
        }
        let mut round = Round {
            at,
            observations: Vec::with_capacity(n),
            latencies: Vec::with_capacity(n),
            took: started.elapsed(),
            tokens_differ: self.tokens_differ(),
        };
        for (t, r) in self.targets.iter().zip(results) {
            let (obs, latency) = r.unwrap_or_else(|| {
                (
                    Observation::new(
                        &t.name,
                        Err(RpcError::Transport("probe task failed".into())),
                    ),
                    Duration::ZERO,
                )
            });
            round.observations.push(obs);
            round.latencies.push(latency);
        }
        round
    }

    /// Asks one node for its head now (`Filecoin.ChainHead` only), to confirm what a push
    /// evaluation suspects.
    pub(crate) async fn head_of(
        &self,
        name: &str,
    ) -> Option<Result<crate::probe::rpc::Head, RpcError>> {
        let t = self.targets.iter().find(|t| t.name == name)?;
        let learned = self.learned(name);
        let calls = vec![("Filecoin.ChainHead".to_string(), json!([]))];
        let reply = self
            .exchange(t, &learned, calls, Instant::now())
            .await
            .and_then(|mut r| r.pop().expect("one call, one reply"));
        Some(reply.and_then(|raw| read_head(&raw, &self.headers)))
    }

    /// Makes `calls` over the node's link, or over HTTP when it has none open (within what is
    /// left of the probe's time since `started`). The outer error is a WebSocket probe that
    /// could not be made at all (see [`RpcClient::batch`]).
    async fn exchange(
        &self,
        t: &Target,
        learned: &Learned,
        calls: Vec<Call>,
        started: Instant,
    ) -> Result<Vec<Result<Raw, RpcError>>, RpcError> {
        let n = calls.len();
        let calls = match self.via_link(t, learned, calls).await {
            Ok(replies) => return Ok(replies),
            Err(calls) => calls,
        };
        // Boxed: the HTTP client's state is large and, with links open, rarely needed.
        let left = self.client.timeout().saturating_sub(started.elapsed());
        let endpoint = t.endpoint.with_transport(learned.transport);
        match tokio::time::timeout(left, Box::pin(self.client.batch(&endpoint, calls))).await {
            Ok(r) => r,
            Err(_) => Ok((0..n)
                .map(|_| Err(RpcError::Timeout(self.client.timeout())))
                .collect()),
        }
    }

    /// Makes `calls` over the node's link if it is open and the operator did not pin HTTP;
    /// gives them back to be made over HTTP when the link was closed or lost on the way.
    async fn via_link(
        &self,
        t: &Target,
        learned: &Learned,
        calls: Vec<Call>,
    ) -> Result<Vec<Result<Raw, RpcError>>, Vec<Call>> {
        if t.transport_fixed && learned.transport == Transport::Http {
            return Err(calls);
        }
        let Some(link) = self.links.as_ref().and_then(|l| l.link(&t.name)) else {
            return Err(calls);
        };
        if !link.is_open() {
            return Err(calls);
        }
        match link.call(calls.clone(), self.client.timeout()).await {
            ViaLink::Done(replies) => Ok(replies),
            ViaLink::NotOpen | ViaLink::Lost => Err(calls),
        }
    }

    fn learned(&self, name: &str) -> Learned {
        self.learned
            .lock()
            .expect("learned lock")
            .get(name)
            .cloned()
            .expect("every target has an entry")
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut Learned)) {
        if let Some(l) = self.learned.lock().expect("learned lock").get_mut(name) {
            f(l);
        }
    }

    async fn probe_one(&self, t: &Target) -> (Observation, Duration) {
        let started = Instant::now();
        let mut learned = self.learned(&t.name);
        let ProbePlan {
            calls,
            wants_identity,
            asked_sync,
            sync_method,
            asks_peers,
            finality,
            slow,
            asks_status,
        } = self.plan(&t.name, &learned);

        // The daemon's health endpoint and the clients' token, beside the calls.
        // The latency is the calls' alone.
        let main = async {
            let r = self.exchange(t, &learned, calls.clone(), started).await;
            (r, started.elapsed())
        };
        let ((mut replies, mut latency), mut side, manifest) = tokio::join!(
            main,
            self.side_checks(t, &learned, slow),
            self.manifest(t, &learned, &finality)
        );
        if let Some(retry) = self.ws_fallback(t, &mut learned, &replies, calls).await {
            replies = retry;
            latency = started.elapsed();
        }
        let mut replies = match replies {
            Ok(r) => r.into_iter(),
            Err(e) => {
                self.forget_identity_after(&t.name, &e);
                debug!(error = %e, "probe failed");
                let mut obs = Observation::new(&t.name, Err(e));
                obs.identity = learned.identity;
                return (obs, latency);
            }
        };
        let head = replies
            .next()
            .expect("ChainHead was asked")
            .and_then(|raw| read_head(&raw, &self.headers));

        if wants_identity {
            self.read_identity(&t.name, &mut learned, &mut replies, &head);
        }
        let peers = if asks_peers {
            let reply = replies.next().expect("asked");
            self.read_peers(&t.name, &mut learned, reply, &head)
        } else {
            None
        };
        let syncing_to = match sync_method {
            None => None,
            Some(_) => {
                let reply = replies.next().expect("asked");
                self.read_sync(&t.name, &learned, asked_sync, reply, &head)
            }
        };
        let head_height = head.as_ref().ok().map(|h| h.height);
        let finality = self.read_finality(&t.name, &finality, &mut replies, head_height, manifest);
        let status = asks_status.then(|| replies.next().expect("asked"));
        if slow && wants_identity && side.health.is_none() {
            // Identified just now: its implementation's default health URL is known.
            side.health = self.health_check(t, &learned).await;
        }
        let status = status.map(|r| match r {
            // Refused as an optional method is: read below as "lacks it".
            r if optional_refused(&r, &head) => Err(RpcError::Rpc {
                code: -32601,
                message: "refused".into(),
            }),
            r => r,
        });
        let (own_word, client_token) = self.own_word(&t.name, &mut learned, status, side);
        match &head {
            Ok(h) => debug!(height = h.height, latency = ?latency, "head"),
            Err(e) => {
                debug!(error = %e, "probe failed");
                self.forget_identity_after(&t.name, e);
            }
        }
        let mut obs = Observation::new(&t.name, head);
        obs.identity = learned.identity;
        obs.peers = peers;
        obs.syncing_to = syncing_to;
        obs.finality = finality;
        obs.own_word = (!own_word.is_empty()).then_some(own_word);
        obs.client_token = client_token;
        obs.unsupported = self.learned(&t.name).unsupported.into_iter().collect();
        (obs, latency)
    }

    /// What to ask a node this round, in the order the replies are read.
    fn plan(&self, name: &str, learned: &Learned) -> ProbePlan {
        let mut calls: Vec<Call> = vec![("Filecoin.ChainHead".into(), json!([]))];
        let wants_identity = learned.identity.is_none();
        if wants_identity {
            for m in [
                "Filecoin.Version",
                "Filecoin.StateNetworkName",
                "Filecoin.ChainGetGenesis",
            ] {
                calls.push((m.into(), json!([])));
            }
        }
        // The sync method asked this round; identification may change the one to ask next.
        let asked_sync = learned.sync;
        let sync_method = if self.sync_checks {
            asked_sync.method()
        } else {
            None
        };
        let asks_peers =
            self.sync_checks && !learned.unsupported.contains(&OptionalMethod::NetPeers);
        if asks_peers {
            calls.push(("Filecoin.NetPeers".into(), json!([])));
        }
        if let Some(m) = sync_method {
            calls.push((m.into(), json!([])));
        }
        let finality = self.finality_ask(name, learned);
        finality_calls(&finality, &mut calls);
        let slow = finality.slow;
        let asks_status = slow && !learned.unsupported.contains(&OptionalMethod::NodeStatus);
        if asks_status {
            calls.push(("Filecoin.NodeStatus".into(), json!([true])));
        }
        ProbePlan {
            calls,
            wants_identity,
            asked_sync,
            sync_method,
            asks_peers,
            finality,
            slow,
            asks_status,
        }
    }

    /// Fuhon answers a POST with 400 and an empty body: the same calls over WebSocket, and
    /// WebSocket from then on when that works.
    async fn ws_fallback(
        &self,
        t: &Target,
        learned: &mut Learned,
        replies: &Result<Vec<Result<Raw, RpcError>>, RpcError>,
        calls: Vec<Call>,
    ) -> Option<Result<Vec<Result<Raw, RpcError>>, RpcError>> {
        let refused_post =
            matches!(replies, Ok(r) if matches!(r[0], Err(RpcError::Http { status: 400 })));
        if t.transport_fixed || learned.transport != Transport::Http || !refused_post {
            return None;
        }
        let ws = t.endpoint.with_transport(Transport::Ws);
        let retry = Box::pin(self.client.batch(&ws, calls)).await;
        if !matches!(&retry, Ok(r) if r[0].is_ok()) {
            return None;
        }
        info!(url = %crate::secret::redact_url(ws.url.as_str()), "answers JSON-RPC over WebSocket only (as Fuhon does); probing it over ws from now on");
        learned.transport = Transport::Ws;
        self.update(&t.name, |l| l.transport = Transport::Ws);
        Some(retry)
    }

    /// Reads the first-contact replies (`Version`, `StateNetworkName`, `ChainGetGenesis`) and
    /// remembers who the node is.
    fn read_identity(
        &self,
        name: &str,
        learned: &mut Learned,
        replies: &mut impl Iterator<Item = Result<Raw, RpcError>>,
        head: &Result<crate::probe::rpc::Head, RpcError>,
    ) {
        let version = replies.next().expect("asked");
        let network = replies.next().expect("asked");
        let genesis = replies.next().expect("asked");
        if optional_refused(&network, head) {
            self.unsupported(
                name,
                learned,
                OptionalMethod::StateNetworkName,
                "has no Filecoin.StateNetworkName; it is judged by its genesis block alone",
            );
        }
        if let Some(id) = identity(version, network, genesis) {
            info!(
                implementation = %id.implementation,
                version = %id.version,
                network = %id.network.as_deref().unwrap_or("(unnamed)"),
                transport = %learned.transport,
                "node identified"
            );
            if id.implementation == Implementation::Forest && learned.sync == SyncMethod::SyncState
            {
                learned.sync = SyncMethod::ForestSyncStatus;
            }
            let sync = learned.sync;
            let stored = id.clone();
            self.update(name, |l| {
                l.identity = Some(stored);
                l.sync = sync;
            });
            learned.identity = Some(id);
        }
    }

    /// `NetPeers`, counted without reading the peers; a node that refuses it has the
    /// min_peers rule off.
    fn read_peers(
        &self,
        name: &str,
        learned: &mut Learned,
        reply: Result<Raw, RpcError>,
        head: &Result<crate::probe::rpc::Head, RpcError>,
    ) -> Option<u64> {
        // Counted without reading the peers. Forest writes an empty list as null.
        match reply.map(|raw| read::<Option<Vec<serde::de::IgnoredAny>>>(&raw)) {
            Ok(Ok(peers)) => Some(peers.map_or(0, |p| p.len() as u64)),
            r if optional_refused(&r, head) => {
                self.unsupported(
                    name,
                    learned,
                    OptionalMethod::NetPeers,
                    "has no Filecoin.NetPeers; the min_peers rule does not apply to it",
                );
                None
            }
            _ => None,
        }
    }

    /// The sync state: the height a sync in progress heads to; a node that refuses the method
    /// gets the other one next time, or none.
    fn read_sync(
        &self,
        name: &str,
        learned: &Learned,
        asked_sync: SyncMethod,
        reply: Result<Raw, RpcError>,
        head: &Result<crate::probe::rpc::Head, RpcError>,
    ) -> Option<u64> {
        if optional_refused(&reply, head) {
            if asked_sync == learned.sync {
                self.sync_method_missing(name, asked_sync);
            }
            None
        } else {
            reply.ok().and_then(|raw| match asked_sync {
                SyncMethod::SyncState => read::<SyncState>(&raw).ok().and_then(|s| s.syncing_to()),
                SyncMethod::ForestSyncStatus => read::<ForestSyncStatus>(&raw)
                    .ok()
                    .and_then(|s| s.syncing_to()),
                SyncMethod::Unavailable => None,
            })
        }
    }

    /// Reads this round's finality replies (the calls `ask` added), remembers what they say,
    /// and gives the node's finality as known now.
    fn read_finality(
        &self,
        name: &str,
        ask: &FinalityAsk,
        replies: &mut impl Iterator<Item = Result<Raw, RpcError>>,
        head: Option<u64>,
        manifest: Option<Result<Raw, RpcError>>,
    ) -> Option<Finality> {
        let mut known = self.learned(name).finality.unwrap_or(Finality {
            f3: F3View::Lacking,
            finalized: None,
            chain_at: None,
            instance: None,
            network: None,
        });
        let mut asked = false;
        let lacking_until = Some(Instant::now() + ASK_LACKING_AGAIN);
        if ask.certificate {
            asked = true;
            let running = replies.next().expect("asked");
            let cert = replies.next().expect("asked");
            let progress = replies.next().expect("asked");
            if let Some((view, instance)) = f3::read_f3(running, cert, progress, head) {
                let absent = view == F3View::Lacking;
                self.update(name, |l| {
                    if view.lasting() {
                        l.f3_lacking_until = lacking_until;
                    }
                    if absent {
                        l.unsupported.insert(OptionalMethod::F3);
                    } else {
                        l.unsupported.remove(&OptionalMethod::F3);
                    }
                });
                known.f3 = view;
                known.instance = instance;
            }
        }
        if let Some(network) = manifest.and_then(f3::read_manifest_reply) {
            known.network = network;
        }
        if ask.finalized {
            asked = true;
            match replies.next().expect("asked") {
                Ok(raw) => known.finalized = f3::read_tipset(raw.get(), head).ok(),
                Err(RpcError::Rpc { .. }) => {
                    known.finalized = None;
                    self.update(name, |l| l.finalized_lacking_until = lacking_until);
                }
                Err(_) => {}
            }
        }
        if ask.chain_at.is_some() {
            asked = true;
            known.chain_at = match replies.next().expect("asked") {
                Ok(raw) => f3::read_tipset(raw.get(), head).ok(),
                // Below the epoch asked, or an error: nothing to compare.
                Err(_) => None,
            };
        }
        let nothing = known.f3 == F3View::Lacking && known.finalized.is_none();
        if asked {
            let stored = (!nothing).then(|| known.clone());
            self.update(name, |l| l.finality = stored);
        }
        (!nothing).then_some(known)
    }

    /// `F3GetManifest`, asked on its own (a huge manifest costs this reading only, never the
    /// head) in finality rounds of nodes whose F3 is not known absent, every few minutes.
    async fn manifest(
        &self,
        t: &Target,
        learned: &Learned,
        ask: &FinalityAsk,
    ) -> Option<Result<Raw, RpcError>> {
        let due = learned
            .f3_manifest_until
            .is_none_or(|u| Instant::now() >= u);
        if !(ask.certificate && due) {
            return None;
        }
        let until = Some(Instant::now() + ASK_LACKING_AGAIN);
        self.update(&t.name, |l| l.f3_manifest_until = until);
        let calls = vec![("Filecoin.F3GetManifest".to_string(), json!([]))];
        Some(
            self.exchange(t, learned, calls, Instant::now())
                .await
                .and_then(|mut r| r.pop().expect("one call, one reply")),
        )
    }

    /// The daemon's health endpoint (configured, or its implementation's default) and whether
    /// it accepts the clients' token; asked in slow rounds only. `None`: not asked, or no
    /// answer worth keeping (the last one stands).
    async fn side_checks(&self, t: &Target, learned: &Learned, slow: bool) -> SideChecks {
        if !slow {
            return SideChecks::default();
        }
        let (health, client_token) =
            tokio::join!(self.health_check(t, learned), self.token_check(t, learned));
        SideChecks {
            health,
            configured: t.health_url.is_some(),
            client_token,
        }
    }

    /// `GET` the node's health URL; `None` when it has none (yet: a default needs the
    /// implementation) or a default that nothing served is not due again.
    async fn health_check(
        &self,
        t: &Target,
        learned: &Learned,
    ) -> Option<Result<(u16, Vec<u8>), RpcError>> {
        let url = t.health_url.clone().or_else(|| {
            let imp = learned.identity.as_ref()?.implementation;
            let due = learned
                .health_lacking_until
                .is_none_or(|u| Instant::now() >= u);
            due.then(|| health::default_health_url(&t.endpoint.url, imp))
                .flatten()
        })?;
        Some(self.client.get_capped(&url, health::MAX_HEALTH_BYTES).await)
    }

    /// Tries the clients' token with a read call: refused (401/403), accepted, or `None`
    /// (no client token, or no answer that tells).
    async fn token_check(&self, t: &Target, learned: &Learned) -> Option<ClientToken> {
        let token = self.client_token.clone()?;
        let endpoint = Endpoint {
            url: t.endpoint.url.clone(),
            token: Some(token),
            transport: learned.transport,
        };
        let r = self
            .client
            .call::<serde::de::IgnoredAny>(&endpoint, "Filecoin.Version", json!([]))
            .await;
        match r {
            Ok(_) => Some(ClientToken::Accepted),
            Err(RpcError::Http { status: 401 | 403 }) => Some(ClientToken::Refused),
            Err(_) => None,
        }
    }

    /// Reads this round's own word (health reply, `NodeStatus`), remembers it, and gives what
    /// is known now.
    fn own_word(
        &self,
        name: &str,
        learned: &mut Learned,
        status: Option<Result<Raw, RpcError>>,
        side: SideChecks,
    ) -> (OwnWord, Option<ClientToken>) {
        let mut word = learned.own_word.clone();
        match status {
            Some(Ok(raw)) => word.node_status = health::read_node_status(raw.get()),
            Some(r) if method_missing(&r) => {
                self.unsupported(
                    name,
                    learned,
                    OptionalMethod::NodeStatus,
                    "has no Filecoin.NodeStatus; its own view of its sync and peers is not shown",
                );
                word.node_status = None;
            }
            _ => {}
        }
        match side.health {
            Some(Ok((status, body))) if side.configured || status != 404 => {
                word.readiness = Some(health::read_health(status, &body));
            }
            Some(Err(e)) if side.configured => {
                word.readiness = Some(health::Readiness::NotReady {
                    status: 0,
                    failing: vec![format!("its health endpoint does not answer: {e}")],
                });
            }
            // A default URL that nothing serves: the daemon has no health endpoint there.
            Some(_) => {
                word.readiness = None;
                learned.health_lacking_until = Some(Instant::now() + ASK_LACKING_AGAIN);
            }
            None => {}
        }
        let client_token = side.client_token.or(learned.client_token);
        let (stored, until) = (word.clone(), learned.health_lacking_until);
        self.update(name, |l| {
            l.own_word = stored;
            l.health_lacking_until = until;
            l.client_token = client_token;
        });
        (word, client_token)
    }

    /// Records once that a node lacks an optional method, and says so once.
    fn unsupported(&self, name: &str, learned: &mut Learned, method: OptionalMethod, why: &str) {
        if learned.unsupported.insert(method) {
            info!(node = %name, "{why}");
            self.update(name, |l| {
                l.unsupported.insert(method);
            });
        }
    }

    /// After a node was unreachable it may come back as another node: ask who it is again.
    fn forget_identity_after(&self, name: &str, e: &RpcError) {
        if matches!(e, RpcError::Connect(_) | RpcError::Timeout(_)) {
            // What it lacked may be there now (an upgrade): learn it again.
            self.update(name, |l| {
                l.identity = None;
                l.unsupported.clear();
                l.sync = SyncMethod::SyncState;
            });
        }
    }

    /// The sync method the node lacks: switch to the other one, or give up on the signal.
    fn sync_method_missing(&self, name: &str, tried: SyncMethod) {
        let next = match tried {
            SyncMethod::SyncState => SyncMethod::ForestSyncStatus,
            _ => SyncMethod::Unavailable,
        };
        match next {
            SyncMethod::ForestSyncStatus => info!(
                node = %name,
                "has no Filecoin.SyncState (as Forest since v0.26.1); asking Forest.SyncStatus instead"
            ),
            _ => info!(
                node = %name,
                "has neither Filecoin.SyncState nor Forest.SyncStatus; the catching-up rule does not apply to it"
            ),
        }
        self.update(name, |l| {
            l.sync = next;
            if next == SyncMethod::Unavailable {
                l.unsupported.insert(OptionalMethod::SyncState);
            }
        });
    }
}

/// One round's calls to one node and what they are for; the replies are read in this order.
struct ProbePlan {
    calls: Vec<Call>,
    wants_identity: bool,
    asked_sync: SyncMethod,
    sync_method: Option<&'static str>,
    asks_peers: bool,
    finality: FinalityAsk,
    slow: bool,
    asks_status: bool,
}

/// What a slow round asked beside the JSON-RPC calls.
#[derive(Debug, Default)]
struct SideChecks {
    /// The health endpoint's status and (capped) body; `None`: not asked.
    health: Option<Result<(u16, Vec<u8>), RpcError>>,
    /// The health URL was configured (a failure is news), not derived (a failure means none).
    configured: bool,
    client_token: Option<ClientToken>,
}

/// The finality calls of `ask`, in the order [`Prober::read_finality`] reads them.
fn finality_calls(ask: &FinalityAsk, calls: &mut Vec<Call>) {
    if ask.certificate {
        // F3IsRunning first: the other two are read in its light (see `f3`).
        calls.push(("Filecoin.F3IsRunning".into(), json!([])));
        calls.push(("Filecoin.F3GetLatestCertificate".into(), json!([])));
        calls.push(("Filecoin.F3GetProgress".into(), json!([])));
    }
    if ask.finalized {
        calls.push(("Filecoin.ChainGetFinalizedTipSet".into(), json!([])));
    }
    if let Some(epoch) = ask.chain_at {
        // `null`: from the node's own head, so the answer is on the node's own chain.
        calls.push((
            "Filecoin.ChainGetTipSetByHeight".into(),
            json!([epoch, null]),
        ));
    }
}

/// A head from a tipset reply (`ChainHead`, a pushed change), its block headers checked
/// against their CIDs.
pub(crate) fn read_head(raw: &RawValue, headers: &HeaderCheck) -> Result<Head, RpcError> {
    let mut head = read::<TipSet>(raw).and_then(TipSet::into_head)?;
    head.proof = headers.check_tipset(raw.get());
    Ok(head)
}

/// Builds an identity from the three first-contact replies, or `None` if any is missing.
fn identity(
    version: Result<Raw, RpcError>,
    network: Result<Raw, RpcError>,
    genesis: Result<Raw, RpcError>,
) -> Option<Identity> {
    let version: VersionInfo = read(&version.ok()?).ok()?;
    // A node that refuses the method (any JSON-RPC error) is judged by its genesis; a
    // transport failure means: ask again.
    let network: Option<String> = match network {
        Ok(raw) => Some(read(&raw).ok()?),
        Err(RpcError::Rpc { .. }) => None,
        Err(_) => return None,
    };
    let genesis: TipSet = read(&genesis.ok()?).ok()?;
    // The daemon's words, made inert once here: they reach logs, terminals, the page and
    // `init`'s config.
    Some(Identity {
        implementation: version.implementation(),
        version: crate::text::inert(&version.version, 80),
        network: network.map(|n| crate::text::inert(&n, 64)),
        genesis: crate::text::inert(&genesis.cids.first()?.cid, 100),
        genesis_timestamp: genesis.blocks.first()?.timestamp,
        block_delay: version.block_delay,
    })
}

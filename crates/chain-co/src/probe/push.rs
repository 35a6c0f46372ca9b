//! Push: a `Filecoin.ChainNotify` subscription per node, so that a new head is known the moment
//! the node has it, not at the next poll.
//!
//! The protocol is go-jsonrpc's channel scheme over WebSocket, which Lotus, Venus and Forest
//! share (`shared/filecoin-rpc.md` §7): the call's result is a channel id, then
//! `xrpc.ch.val` notifications carry `[chanId, [HeadChange…]]` — one `current` first, then
//! batches of `revert` and `apply`; `xrpc.ch.close` ends the channel. Each change of head
//! updates that node's [`PushState`] and wakes the loop.
//!
//! The same connection is the node's [`Link`]: while it is open, the probe's calls travel on
//! it too (ids from 2 up; 1 is the subscription), so each node costs one socket, one task and
//! one read buffer, not a WebSocket plus a kept-alive HTTP connection (`crate::probe::link`).
//!
//! A subscription that drops is made again with exponential backoff and jitter. A node that has
//! no ChainNotify (method not found) keeps the connection for the probe's calls and is asked
//! again every few minutes.
//! Polling always goes on: it is the fallback and the cross-check (a subscription that has
//! delivered nothing for several block delays is reported as silent).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::probe::frames::{self, FrameReader, Incoming};
use crate::probe::link::{Link, LinkCall, LinkEnd, Pending};
use crate::probe::rpc::{Frame, Head, RpcError, Transport};
use crate::probe::Target;
use crate::proof::HeaderCheck;

/// How a node's subscription is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PushStatus {
    Connecting,
    Subscribed,
    /// The node has no ChainNotify; polling only.
    Unavailable {
        reason: String,
    },
    /// The subscription dropped; trying again.
    Retrying {
        reason: String,
    },
}

/// The latest pushed head of one node.
#[derive(Debug, Clone)]
pub(crate) struct PushState {
    pub status: PushStatus,
    pub head: Option<Head>,
    pub received_at: Option<SystemTime>,
}

/// The subscriptions of a pool, shared with the loop, and each node's [`Link`] for the probe.
#[derive(Debug, Clone)]
pub(crate) struct PushHub {
    states: Arc<Mutex<BTreeMap<String, PushState>>>,
    /// Woken at every new head.
    pub changed: Arc<Notify>,
    /// Per node: its link, and the subscription's target and stop (see [`PushHub::update`]).
    links: Arc<Mutex<BTreeMap<String, NodeLink>>>,
    /// Nodes whose first connection attempt is still under way, and a wake-up when that
    /// reaches zero.
    first_tries: Arc<(AtomicUsize, Notify)>,
    /// Handshakes under way at once (see [`CONNECTING_AT_ONCE`]).
    connecting: Arc<Semaphore>,
    /// Pushed heads' block headers are checked against their CIDs, as polled ones are.
    headers: Arc<HeaderCheck>,
}

/// One node's link and what its subscription was started with.
#[derive(Debug)]
struct NodeLink {
    link: Link,
    target: Target,
    max_frame: usize,
    stop: CancellationToken,
}

/// How many handshakes may be under way at once. Each holds buffers and TLS state for its few
/// milliseconds; a thousand at once (start, or every daemon restarted together) made a peak of
/// ~14 MB that the allocator kept afterwards (issue #17). 64 at a time still opens a thousand
/// loopback links in about a second.
const CONNECTING_AT_ONCE: usize = 64;

/// How long to wait before asking a node without ChainNotify again, on the same connection.
const ASK_AGAIN: Duration = Duration::from_secs(300);

impl PushHub {
    pub fn get(&self, node: &str) -> Option<PushState> {
        self.states.lock().expect("push lock").get(node).cloned()
    }

    /// Every subscription's state now, for one evaluation.
    pub fn snapshot(&self) -> BTreeMap<String, PushState> {
        self.states.lock().expect("push lock").clone()
    }

    /// The node's link, which the probe uses while it is open.
    pub fn link(&self, node: &str) -> Option<Link> {
        self.links
            .lock()
            .expect("links lock")
            .get(node)
            .map(|n| n.link.clone())
    }

    /// Waits until every node's first connection attempt has ended (or `within` passed), so
    /// that the first probe round finds the links open instead of opening an HTTP connection
    /// per node that nothing needs afterwards.
    pub(crate) async fn first_tries_done(&self, within: Duration) {
        let (left, done) = &*self.first_tries;
        let wait = async {
            loop {
                let notified = done.notified();
                if left.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(within, wait).await;
    }

    fn first_try_done(&self) {
        let (left, done) = &*self.first_tries;
        if left.fetch_sub(1, Ordering::AcqRel) == 1 {
            done.notify_waiters();
        }
    }

    fn set(&self, node: &str, f: impl FnOnce(&mut PushState)) {
        let mut states = self.states.lock().expect("push lock");
        let s = states.entry(node.to_string()).or_insert(PushState {
            status: PushStatus::Connecting,
            head: None,
            received_at: None,
        });
        f(s);
    }

    /// Starts one subscription (and link) per target; they end with `shutdown`.
    pub fn start(
        targets: &[Target],
        max_frame: usize,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        headers: Arc<HeaderCheck>,
    ) -> PushHub {
        let hub = PushHub {
            states: Arc::default(),
            changed: Arc::default(),
            links: Arc::default(),
            first_tries: Arc::new((AtomicUsize::new(0), Notify::new())),
            connecting: Arc::new(Semaphore::new(CONNECTING_AT_ONCE)),
            headers,
        };
        hub.update(targets, max_frame, tracker, shutdown);
        hub
    }

    /// Makes the subscriptions those of `targets`: a node whose settings did not change keeps
    /// its link and subscription (a reload of an unchanged config reconnects nothing); a node
    /// removed or changed has its subscription ended; a new or changed one gets one.
    pub(crate) fn update(
        &self,
        targets: &[Target],
        max_frame: usize,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let mut links = self.links.lock().expect("links lock");
        links.retain(|name, n| {
            let keep = targets
                .iter()
                .any(|t| &t.name == name && *t == n.target && n.max_frame == max_frame);
            if !keep {
                n.stop.cancel();
                self.states.lock().expect("push lock").remove(name);
            }
            keep
        });
        let new: Vec<&Target> = targets
            .iter()
            .filter(|t| !links.contains_key(&t.name))
            .collect();
        for t in new {
            let (link, end) = Link::new();
            let stop = shutdown.child_token();
            links.insert(
                t.name.clone(),
                NodeLink {
                    link,
                    target: t.clone(),
                    max_frame,
                    stop: stop.clone(),
                },
            );
            self.first_tries.0.fetch_add(1, Ordering::AcqRel);
            self.set(&t.name, |_| {});
            let (hub, t2) = (self.clone(), t.clone());
            let span = info_span!("push", node = %t.name);
            tracker.spawn(async move { hub.run(t2, end, max_frame, stop).await }.instrument(span));
        }
    }

    async fn run(
        self,
        target: Target,
        mut end: LinkEnd,
        max_frame: usize,
        shutdown: CancellationToken,
    ) {
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut first = true;
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.subscribe(&target, &mut end, max_frame, &mut first) => r,
            };
            end.set_open(false);
            if std::mem::take(&mut first) {
                self.first_try_done();
            }
            let (status, wait) = match result {
                Ok(()) => (
                    PushStatus::Retrying {
                        reason: "the node closed the channel".into(),
                    },
                    Duration::from_millis(500),
                ),
                Err(e) => {
                    if e.is_flood() {
                        warn!(reason = %e, "subscription dropped");
                    } else {
                        debug!(reason = %e, "subscription failed");
                    }
                    let reason = crate::text::inert(&e.to_string(), 200);
                    (PushStatus::Retrying { reason }, backoff.step())
                }
            };
            let subscribed_long = matches!(
                self.get(&target.name),
                Some(PushState {
                    status: PushStatus::Subscribed | PushStatus::Unavailable { .. },
                    ..
                })
            );
            if subscribed_long {
                backoff.reset();
            }
            self.set(&target.name, |s| s.status = status);
            // Nodes restarted together do not reconnect in lockstep.
            let sleep = tokio::time::sleep(crate::backoff::jitter(wait));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = &mut sleep => break,
                    // A call that raced the close: turned away, it goes over HTTP.
                    Some(job) = end.rx.recv() => drop(job),
                }
            }
        }
    }

    /// One connection: subscribes, and carries the probe's calls, until it ends. `Ok` when the
    /// node closed it, `Err` with the reason otherwise.
    async fn subscribe(
        &self,
        target: &Target,
        end: &mut LinkEnd,
        max_frame: usize,
        first: &mut bool,
    ) -> Result<(), PushError> {
        // The handshake only: after it, frames are read by `frames`.
        let (request, config) = target
            .endpoint
            .with_transport(Transport::Ws)
            .ws_request(max_frame)
            .map_err(PushError::Request)?;
        // Boxed: the handshake's state (TLS included) is large and needed only once; inline,
        // it would size every node's task for its whole life.
        let connect = Box::pin(tokio_tungstenite::connect_async_with_config(
            request,
            Some(config),
            true,
        ));
        let connected = {
            // The semaphore is never closed.
            let _turn = self.connecting.acquire().await.ok();
            tokio::time::timeout(Duration::from_secs(10), connect).await
        };
        let ws = connected
            .map_err(|_| PushError::ConnectTimeout)
            .and_then(|r| r.map_err(PushError::Handshake));
        if std::mem::take(first) {
            self.first_try_done();
        }
        // After the handshake, frames are read by `frames` (no buffer kept between messages);
        // a go-jsonrpc server sends nothing before the first request, so no byte is lost here.
        let (ws, _) = ws?;
        let (mut rd, mut wr) = tokio::io::split(ws.into_inner());
        let mut reader = FrameReader::new(max_frame);
        let mut pending = Pending::new(1);
        let notify_id = pending.reserve();
        let ask = |id: u64| {
            frames::text(
                json!({"jsonrpc": "2.0", "id": id, "method": "Filecoin.ChainNotify", "params": []})
                    .to_string(),
            )
        };
        wr.write_all(&ask(notify_id)).await?;
        end.set_open(true);
        let mut sub = Subscription {
            notify_id,
            channel: None,
            ask_again: None,
            flood: FloodGuard::default(),
        };
        loop {
            tokio::select! {
                incoming = reader.next(&mut rd) => {
                    let message = match incoming? {
                        Incoming::Message(m) => m,
                        Incoming::Ping(p) => {
                            wr.write_all(&frames::pong(p)).await?;
                            continue;
                        }
                        Incoming::Close => {
                            let _ = wr.write_all(&frames::close()).await;
                            return Ok(());
                        }
                        Incoming::Closed => return Ok(()),
                    };
                    if self.on_message(&target.name, &message, &mut sub, &mut pending)? {
                        return Ok(());
                    }
                }
                Some(job) = end.rx.recv() => {
                    let LinkCall { calls, reply } = *job;
                    let first_id = pending.open(calls.len(), reply);
                    let mut out = Vec::new();
                    for (i, (method, params)) in calls.into_iter().enumerate() {
                        let call = json!({"jsonrpc": "2.0", "id": first_id + i as u64, "method": method, "params": params});
                        out.extend(frames::text(call.to_string()));
                    }
                    wr.write_all(&out).await?;
                }
                _ = crate::backoff::until(sub.ask_again) => {
                    sub.ask_again = None;
                    sub.notify_id = pending.reserve();
                    wr.write_all(&ask(sub.notify_id)).await?;
                }
            }
        }
    }
    /// One message of the subscription's WebSocket: a reply to a probe's call, the channel's
    /// id, or a notification. `Ok(true)`: the node closed the channel.
    fn on_message(
        &self,
        node: &str,
        message: &[u8],
        sub: &mut Subscription,
        pending: &mut Pending,
    ) -> Result<bool, PushError> {
        let lossy = String::from_utf8_lossy(message);
        let text: &str = &lossy;
        let Ok(msg) = Frame::parse(text) else {
            return Err(PushError::NotJson);
        };
        if let Some(id) = msg.id {
            if id != sub.notify_id {
                pending.settle(id, msg.into_result());
                return Ok(false);
            }
            match msg.into_result() {
                Ok(chan) => {
                    sub.channel = serde_json::from_str(chan.get()).ok();
                    self.set(node, |s| s.status = PushStatus::Subscribed);
                }
                Err(RpcError::Rpc {
                    code: -32601,
                    message,
                }) => {
                    let was = self.get(node).map(|s| s.status);
                    if !matches!(was, Some(PushStatus::Unavailable { .. })) {
                        info!(reason = %message, "no ChainNotify push; polling only (asking again in 5 min)");
                    }
                    self.set(node, |s| {
                        s.status = PushStatus::Unavailable { reason: message }
                    });
                    sub.ask_again = Some(tokio::time::Instant::now() + ASK_AGAIN);
                }
                Err(RpcError::Rpc { message, .. }) => return Err(PushError::Refused(message)),
                Err(e) => return Err(PushError::Request(e)),
            }
            return Ok(false);
        }
        fn ours<'a>(channel: &Option<Value>, params: Option<&'a RawValue>) -> Option<&'a RawValue> {
            let (chan, changes): (Value, &RawValue) = serde_json::from_str(params?.get()).ok()?;
            (channel.as_ref() == Some(&chan)).then_some(changes)
        }
        match msg.method.as_deref() {
            Some("xrpc.ch.val") => {
                let Some(changes) = ours(&sub.channel, msg.params) else {
                    return Ok(false);
                };
                sub.flood.count()?;
                if let Some(head) = newest_head(changes.get(), &self.headers) {
                    self.pushed(node, head);
                }
            }
            Some("xrpc.ch.close") if ours(&sub.channel, msg.params).is_some() => return Ok(true),
            _ => {}
        }
        Ok(false)
    }
}

/// What a live subscription keeps between messages.
struct Subscription {
    /// The id of the `ChainNotify` call (asked again after it was refused).
    notify_id: u64,
    channel: Option<Value>,
    ask_again: Option<tokio::time::Instant>,
    flood: FloodGuard,
}

/// Why a subscription ended other than by the node closing it: a value, so that the loop
/// can tell a flood (said loudly) from a node that went away (said at debug level).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PushError {
    #[error("{0}")]
    Request(RpcError),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("{0}")]
    Handshake(#[source] tokio_tungstenite::tungstenite::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frames(#[from] crate::probe::frames::FrameError),
    #[error("a frame is not JSON")]
    NotJson,
    #[error("ChainNotify refused: {0}")]
    Refused(String),
    #[error("flood: more than {MAX_NOTIFICATIONS_PER_SECOND} notifications in a second; polling until the link is made again")]
    Flood,
}

impl PushError {
    /// A cap passed: the node floods us.
    fn is_flood(&self) -> bool {
        matches!(
            self,
            PushError::Flood | PushError::Frames(crate::probe::frames::FrameError::Flood(_))
        )
    }
}

/// More notifications than this within one second drop the subscription (polls carry on): a
/// real daemon sends one per tipset, a few more around a reorg.
pub(crate) const MAX_NOTIFICATIONS_PER_SECOND: u32 = 50;

/// Counts a subscription's notifications per second.
#[derive(Debug)]
struct FloodGuard {
    since: tokio::time::Instant,
    seen: u32,
}

impl Default for FloodGuard {
    fn default() -> Self {
        FloodGuard {
            since: tokio::time::Instant::now(),
            seen: 0,
        }
    }
}

impl FloodGuard {
    fn count(&mut self) -> Result<(), PushError> {
        if self.since.elapsed() >= Duration::from_secs(1) {
            *self = FloodGuard::default();
        }
        self.seen += 1;
        if self.seen > MAX_NOTIFICATIONS_PER_SECOND {
            return Err(PushError::Flood);
        }
        Ok(())
    }
}

impl PushHub {
    /// A pushed head: kept, and the loop woken, only when it differs from the last one (the
    /// same head again only says the subscription lives).
    fn pushed(&self, node: &str, head: Head) {
        let mut changed = false;
        self.set(node, |s| {
            changed = s.head.as_ref().is_none_or(|h| {
                (h.weight, h.height, &h.key) != (head.weight, head.height, &head.key)
            });
            if changed {
                debug!(height = head.height, "pushed head");
                s.head = Some(head);
            }
            s.received_at = Some(SystemTime::now());
            s.status = PushStatus::Subscribed;
        });
        if changed {
            self.changed.notify_one();
        }
    }
}

/// The head after a batch of changes: the last `current` or `apply`. A batch of reverts alone
/// (rare: the next batch applies) changes nothing here.
fn newest_head(changes: &str, headers: &HeaderCheck) -> Option<Head> {
    #[derive(Deserialize)]
    struct HeadChange<'a> {
        #[serde(rename = "Type")]
        kind: String,
        #[serde(rename = "Val", borrow)]
        val: &'a RawValue,
    }
    let changes: Vec<HeadChange> = serde_json::from_str(changes).ok()?;
    changes
        .into_iter()
        .rfind(|c| c.kind == "current" || c.kind == "apply")
        .and_then(|c| crate::probe::read_head(c.val, headers).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(h: i64, w: &str) -> Value {
        json!({"Cids":[{"/":format!("bafy{h}")}],"Blocks":[{"ParentWeight":w,"Timestamp":h}],"Height":h})
    }

    #[test]
    fn the_last_apply_of_a_batch_is_the_head() {
        let batch = json!([{"Type":"revert","Val":ts(10,"5")},{"Type":"apply","Val":ts(10,"6")},{"Type":"apply","Val":ts(11,"7")}]);
        let check = HeaderCheck::default();
        let h = newest_head(&batch.to_string(), &check).expect("a head");
        assert_eq!((h.height, h.weight), (11, 7));
        assert!(newest_head(
            &json!([{"Type":"revert","Val":ts(10,"5")}]).to_string(),
            &check
        )
        .is_none());
        assert_eq!(
            newest_head(
                &json!([{"Type":"current","Val":ts(9,"4")}]).to_string(),
                &check
            )
            .expect("current")
            .height,
            9
        );
        assert!(newest_head("\"garbage\"", &check).is_none());
    }
}

//! A node's link: the one WebSocket that chain-co keeps open to each daemon carries both the
//! ChainNotify subscription ([`crate::probe::push`]) and the probe's calls ([`crate::probe`]).
//!
//! Why share it: a second, kept-alive HTTP connection per node for the probes doubled the
//! sockets, buffers and tasks per node (issue #17: 135 KB per node, two thirds of it connection
//! state). go-jsonrpc, Forest and Fuhon all answer any call on a WebSocket and match replies by
//! id, which is how lotus-miner itself talks to its daemon.
//!
//! The rule that keeps behaviour unchanged: the link is used only while it is open. A call that
//! finds it closed, or that the link loses on the way (the daemon died, cut the connection, sent
//! a frame that is not JSON, or one over the size cap), is made over HTTP instead, so that its
//! reason is exactly what a plain probe would say. A late reply to a call whose caller gave up
//! is dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::probe::rpc::{Call, Raw, RpcError, Slots};

/// Replies to a batch of calls, in the order of the calls.
pub type Replies = Vec<Result<Raw, RpcError>>;

/// A batch of calls handed to the link's task.
#[derive(Debug)]
pub(crate) struct LinkCall {
    pub calls: Vec<Call>,
    pub reply: oneshot::Sender<Replies>,
}

/// What came of a call offered to the link.
#[derive(Debug)]
pub(crate) enum ViaLink {
    /// The link was not open: make the call another way.
    NotOpen,
    /// The link closed before every reply came: make the call another way.
    Lost,
    /// One reply per call (a call that ran out of time is a timeout).
    Done(Replies),
}

/// The probe's handle on one node's link. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    tx: mpsc::Sender<Box<LinkCall>>,
    open: Arc<AtomicBool>,
}

/// The link task's side of a [`Link`].
#[derive(Debug)]
pub(crate) struct LinkEnd {
    pub rx: mpsc::Receiver<Box<LinkCall>>,
    open: Arc<AtomicBool>,
}

/// Batches queued but not yet sent; a caller beyond them waits for room (a busy link is not a
/// broken one).
const QUEUE: usize = 8;

impl Link {
    pub fn new() -> (Link, LinkEnd) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let open = Arc::new(AtomicBool::new(false));
        (
            Link {
                tx,
                open: open.clone(),
            },
            LinkEnd { rx, open },
        )
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Makes `calls` over the link if it is open, each bounded by `timeout` from now. A busy
    /// link is waited for (within the timeout): only a closed one sends the call elsewhere.
    pub async fn call(&self, calls: Vec<Call>, timeout: Duration) -> ViaLink {
        if !self.is_open() {
            return ViaLink::NotOpen;
        }
        let n = calls.len();
        let timed_out = || ViaLink::Done((0..n).map(|_| Err(RpcError::Timeout(timeout))).collect());
        let deadline = tokio::time::Instant::now() + timeout;
        let (reply, answer) = oneshot::channel();
        let job = Box::new(LinkCall { calls, reply });
        match tokio::time::timeout_at(deadline, self.tx.send(job)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return ViaLink::NotOpen,
            Err(_) => return timed_out(),
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(replies)) => ViaLink::Done(replies),
            Ok(Err(_)) => ViaLink::Lost,
            Err(_) => timed_out(),
        }
    }
}

impl LinkEnd {
    /// Marks the link open (a connection is up and its task reads calls) or closed. Closing
    /// also turns away every call already queued, so that none waits for the next connection.
    pub(crate) fn set_open(&mut self, open: bool) {
        self.open.store(open, Ordering::Release);
        if !open {
            while self.rx.try_recv().is_ok() {}
        }
    }
}

/// Calls sent on one connection and waiting for their replies. Ids are unique per connection;
/// id 1 and any other id the caller reserves are never handed out twice.
#[derive(Debug)]
pub(crate) struct Pending {
    next_id: u64,
    batches: Vec<Batch>,
}

#[derive(Debug)]
struct Batch {
    slots: Slots,
    reply: oneshot::Sender<Replies>,
}

impl Pending {
    /// Ids start at `first_id`; lower ones are the caller's own (the subscription).
    pub fn new(first_id: u64) -> Pending {
        Pending {
            next_id: first_id,
            batches: Vec::new(),
        }
    }

    /// Reserves one id for the caller's own use (a new subscription request).
    pub(crate) fn reserve(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    /// Registers a batch of `n` calls; returns the id of the first (the others follow).
    /// Batches whose caller gave up are forgotten here.
    pub fn open(&mut self, n: usize, reply: oneshot::Sender<Replies>) -> u64 {
        self.batches.retain(|b| !b.reply.is_closed());
        let first = self.next_id;
        self.next_id += n as u64;
        if n == 0 {
            let _ = reply.send(Vec::new());
        } else {
            self.batches.push(Batch {
                slots: Slots::new(first, n),
                reply,
            });
        }
        first
    }

    /// Files the reply to `id`. `false`: no call is waiting for that id (a late reply to a
    /// caller that gave up, or an id we never sent).
    pub(crate) fn settle(&mut self, id: u64, result: Result<Raw, RpcError>) -> bool {
        let Some(at) = self.batches.iter().position(|b| b.slots.covers(id)) else {
            return false;
        };
        self.batches[at].slots.fill(id, result);
        if self.batches[at].slots.is_full() {
            let batch = self.batches.swap_remove(at);
            let _ = batch.reply.send(batch.slots.into_replies());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(v: serde_json::Value) -> Result<Raw, RpcError> {
        Ok(serde_json::value::to_raw_value(&v).expect("raw"))
    }

    #[test]
    fn replies_in_any_order_complete_their_batch_in_call_order() {
        let mut p = Pending::new(2);
        let (tx, mut rx) = oneshot::channel();
        let first = p.open(3, tx);
        assert_eq!(first, 2);
        assert!(p.settle(4, raw(json!("c"))));
        assert!(p.settle(2, raw(json!("a"))));
        assert!(rx.try_recv().is_err(), "not complete yet");
        assert!(p.settle(3, Err(RpcError::Shape("x".into()))));
        let r = rx.try_recv().expect("complete");
        assert_eq!(r[0].as_ref().map(|v| v.get()).ok(), Some("\"a\""));
        assert!(r[1].is_err());
        assert_eq!(r[2].as_ref().map(|v| v.get()).ok(), Some("\"c\""));
        assert!(p.batches.is_empty(), "a complete batch is forgotten");
    }

    #[test]
    fn unknown_and_late_ids_are_not_filed() {
        let mut p = Pending::new(2);
        assert_eq!(p.reserve(), 2);
        assert!(!p.settle(2, raw(json!(1))), "a reserved id is the caller's");
        let (tx, rx) = oneshot::channel();
        let first = p.open(1, tx);
        assert_eq!(first, 3);
        assert!(!p.settle(99, raw(json!(1))));
        // The caller gives up; its batch is forgotten at the next open.
        drop(rx);
        let (tx2, _rx2) = oneshot::channel();
        let second = p.open(2, tx2);
        assert_eq!(second, 4);
        assert!(!p.settle(3, raw(json!(1))), "the abandoned batch is gone");
        assert!(p.settle(4, raw(json!(1))));
    }

    #[tokio::test]
    async fn a_closed_link_turns_calls_away_at_once() {
        let (link, mut end) = Link::new();
        assert!(matches!(
            link.call(vec![("m".into(), json!([]))], Duration::from_secs(5))
                .await,
            ViaLink::NotOpen
        ));
        end.set_open(true);
        let call = tokio::spawn({
            let link = link.clone();
            async move {
                link.call(vec![("m".into(), json!([]))], Duration::from_secs(5))
                    .await
            }
        });
        // The task takes the call, then the connection drops before the reply.
        let job = end.rx.recv().await.expect("a call");
        drop(job);
        end.set_open(false);
        assert!(matches!(call.await.expect("joined"), ViaLink::Lost));
    }

    #[tokio::test]
    async fn a_call_without_reply_times_out_per_call() {
        let (link, mut end) = Link::new();
        end.set_open(true);
        let r = link
            .call(
                vec![("a".into(), json!([])), ("b".into(), json!([]))],
                Duration::from_millis(20),
            )
            .await;
        let ViaLink::Done(r) = r else {
            panic!("want timeouts, got {r:?}")
        };
        assert!(r.iter().all(|x| matches!(x, Err(RpcError::Timeout(_)))));
        drop(end);
    }
}

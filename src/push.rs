//! Push: a `Filecoin.ChainNotify` subscription per node, so that a new head is known the moment
//! the node has it, not at the next poll.
//!
//! The protocol is go-jsonrpc's channel scheme over WebSocket, which Lotus, Venus and Forest
//! share (`shared/filecoin-rpc.md` §7): the call's result is a channel id, then
//! `xrpc.ch.val` notifications carry `[chanId, [HeadChange…]]` — one `current` first, then
//! batches of `revert` and `apply`; `xrpc.ch.close` ends the channel. Each change of head
//! updates that node's [`PushState`] and wakes the loop.
//!
//! A subscription that drops is made again with exponential backoff and jitter. A node that has
//! no ChainNotify (method not found) is left to polling and asked again every few minutes.
//! Polling always goes on: it is the fallback and the cross-check (a subscription that has
//! delivered nothing for several block delays is reported as silent).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, Instrument};

use crate::probe::Target;
use crate::rpc::{Head, TipSet, Transport};

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
pub struct PushState {
    pub status: PushStatus,
    pub head: Option<Head>,
    pub received_at: Option<SystemTime>,
}

/// The subscriptions of a pool, shared with the loop.
#[derive(Debug, Clone, Default)]
pub struct PushHub {
    states: Arc<Mutex<BTreeMap<String, PushState>>>,
    /// Woken at every new head.
    pub changed: Arc<Notify>,
}

impl PushHub {
    pub fn get(&self, node: &str) -> Option<PushState> {
        self.states.lock().expect("push lock").get(node).cloned()
    }

    /// Every subscription's state now, for one evaluation.
    pub fn snapshot(&self) -> BTreeMap<String, PushState> {
        self.states.lock().expect("push lock").clone()
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

    /// Starts one subscription per target; they end with `shutdown`.
    pub fn start(
        targets: &[Target],
        max_frame: usize,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> PushHub {
        let hub = PushHub::default();
        for t in targets {
            hub.set(&t.name, |_| {});
            let (hub2, t2, stop) = (hub.clone(), t.clone(), shutdown.clone());
            let span = info_span!("push", node = %t.name);
            tracker.spawn(async move { hub2.run(t2, max_frame, stop).await }.instrument(span));
        }
        hub
    }

    async fn run(self, target: Target, max_frame: usize, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(500);
        let mut attempt: u64 = 0;
        loop {
            attempt += 1;
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.subscribe(&target, max_frame) => r,
            };
            let (status, wait) = match result {
                Ok(()) => (
                    PushStatus::Retrying {
                        reason: "the node closed the channel".into(),
                    },
                    Duration::from_millis(500),
                ),
                Err(SubscribeError::Unavailable(reason)) => {
                    info!(reason = %reason, "no ChainNotify push; polling only (asking again in 5 min)");
                    (PushStatus::Unavailable { reason }, Duration::from_secs(300))
                }
                Err(SubscribeError::Failed(reason)) => {
                    debug!(reason = %reason, "subscription failed");
                    (PushStatus::Retrying { reason }, backoff)
                }
            };
            let subscribed_long = matches!(
                self.get(&target.name),
                Some(PushState {
                    status: PushStatus::Subscribed,
                    ..
                })
            );
            if subscribed_long {
                backoff = Duration::from_millis(500);
            } else {
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            self.set(&target.name, |s| s.status = status);
            // Jitter: up to a quarter more, so that nodes restarted together do not reconnect
            // in lockstep.
            let jitter =
                wait.mul_f64(0.25 * ((attempt.wrapping_mul(0x9e37_79b9) % 1000) as f64 / 1000.0));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait + jitter) => {}
            }
        }
    }

    /// One subscription, until it ends.
    async fn subscribe(&self, target: &Target, max_frame: usize) -> Result<(), SubscribeError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
        use tokio_tungstenite::tungstenite::Message;

        let endpoint = target.endpoint.with_transport(Transport::Ws);
        let mut request = endpoint
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| SubscribeError::Failed(e.to_string()))?;
        if let Some(token) = &endpoint.token {
            let value = format!("Bearer {}", token.expose())
                .parse()
                .map_err(|_| SubscribeError::Failed("token is not a valid header".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(max_frame))
            .max_frame_size(Some(max_frame))
            // One subscription per node: keep the idle buffers small (the default read buffer
            // is 128 KiB), they grow when a large frame arrives.
            .read_buffer_size(8 * 1024)
            .write_buffer_size(0);
        let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        let (mut ws, _) = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| SubscribeError::Failed("connect timed out".into()))?
            .map_err(|e| SubscribeError::Failed(e.to_string()))?;
        let call =
            json!({"jsonrpc": "2.0", "id": 1, "method": "Filecoin.ChainNotify", "params": []});
        ws.send(Message::Text(call.to_string().into()))
            .await
            .map_err(|e| SubscribeError::Failed(e.to_string()))?;
        let mut channel: Option<Value> = None;
        while let Some(frame) = ws.next().await {
            let frame = frame.map_err(|e| SubscribeError::Failed(e.to_string()))?;
            let text = match frame {
                Message::Text(t) => t.as_str().to_string(),
                Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                Message::Close(_) => return Ok(()),
                _ => continue,
            };
            let Ok(msg) = serde_json::from_str::<Value>(&text) else {
                return Err(SubscribeError::Failed("a frame is not JSON".into()));
            };
            if msg.get("id") == Some(&json!(1)) {
                if let Some(err) = msg.get("error") {
                    let reason = err["message"].as_str().unwrap_or("error").to_string();
                    return Err(if err["code"] == -32601 {
                        SubscribeError::Unavailable(reason)
                    } else {
                        SubscribeError::Failed(reason)
                    });
                }
                channel = Some(msg["result"].clone());
                self.set(&target.name, |s| s.status = PushStatus::Subscribed);
                continue;
            }
            match msg["method"].as_str() {
                Some("xrpc.ch.val") if channel.as_ref() == Some(&msg["params"][0]) => {
                    if let Some(head) = newest_head(&msg["params"][1]) {
                        debug!(height = head.height, "pushed head");
                        self.set(&target.name, |s| {
                            s.head = Some(head);
                            s.received_at = Some(SystemTime::now());
                            s.status = PushStatus::Subscribed;
                        });
                        self.changed.notify_one();
                    }
                }
                Some("xrpc.ch.close") if channel.as_ref() == Some(&msg["params"][0]) => {
                    return Ok(())
                }
                _ => {}
            }
        }
        Ok(())
    }
}

enum SubscribeError {
    Unavailable(String),
    Failed(String),
}

/// The head after a batch of changes: the last `current` or `apply`. A batch of reverts alone
/// (rare: the next batch applies) changes nothing here.
fn newest_head(changes: &Value) -> Option<Head> {
    #[derive(Deserialize)]
    struct HeadChange {
        #[serde(rename = "Type")]
        kind: String,
        #[serde(rename = "Val")]
        val: TipSet,
    }
    let changes: Vec<HeadChange> = serde_json::from_value(changes.clone()).ok()?;
    changes
        .into_iter()
        .rfind(|c| c.kind == "current" || c.kind == "apply")
        .and_then(|c| c.val.into_head().ok())
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
        let h = newest_head(&batch).expect("a head");
        assert_eq!((h.height, h.weight), (11, 7));
        assert!(newest_head(&json!([{"Type":"revert","Val":ts(10,"5")}])).is_none());
        assert_eq!(
            newest_head(&json!([{"Type":"current","Val":ts(9,"4")}]))
                .expect("current")
                .height,
            9
        );
        assert!(newest_head(&json!("garbage")).is_none());
    }
}

//! Carrying the provider's pending messages to a new primary.
//!
//! lotus-miner sends through `MpoolPushMessage`, which takes the next nonce from the daemon it
//! talks to. When chain-co moves the miner from A to B and B never received A's pending
//! messages (A's pubsub was the problem, or they were pushed seconds before A stalled), B hands
//! out a nonce a second time: only one of the two messages lands. Lotus republishes only its
//! own local messages, so nobody re-sends A's while A is sick.
//!
//! So right after a new primary is published, for every sending account ([`crate::apply::senders`]): compare
//! `MpoolGetNonce` on the new primary with the old one's (or, when it is dead, with any node
//! that knows more); read the missing messages with `MpoolPending` on the node that has them,
//! as a stream in constant memory and bounded in time, keeping only configured senders; and
//! `MpoolPush` each to the new primary in nonce order. The same signed messages: chain-co never
//! signs and needs no wallet key, only a token with `write` (`[[node]] write_token_file`),
//! used for `MpoolPush` alone. A message the node already has, or whose nonce is already on
//! chain, is done, not an error. Nothing here ever holds a switch.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::apply::senders::Sender;
use crate::probe::rpc::{Endpoint, RpcClient, RpcError};

/// The longest one `MpoolPending` read may take: mainnet's pool is large, so it is bounded in
/// time, not size.
pub const PENDING_TIME: Duration = Duration::from_secs(20);
/// One pending message larger than this is skipped (a ProveCommitAggregate is ~100 KiB).
pub const MAX_MESSAGE: usize = 2 << 20;
/// At most this many messages are carried per address at one switch.
pub const MAX_CARRIED: usize = 1000;

/// A daemon as the carrier reaches it.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub name: String,
    /// Read calls (the probe's token).
    pub endpoint: Endpoint,
    /// `MpoolPush` (the write token; `None`: none is configured, the read endpoint is tried).
    pub write: Option<Endpoint>,
}

/// What one carry did, in words and numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    /// One line per address that needed carrying ("carried 2 messages of f3…, nonces 7–8,
    /// from lotus-a to lotus-b"), or that could not be carried, and why.
    pub lines: Vec<String>,
    pub messages: u64,
    /// Problems worth a warning (a token without write, a node refusing every message).
    pub problems: Vec<Problem>,
}

/// A problem, and what it is about: the same trouble met again (a levelling meets it every
/// round) has the same `about`, whatever its details, so that it is said once, not each time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// e.g. "refused lotus-b f3…", "write lotus-b".
    pub about: String,
    pub text: String,
}

impl Problem {
    fn new(about: impl Into<String>, text: String) -> Problem {
        Problem {
            about: about.into(),
            text,
        }
    }
}

/// The part of a pending message the carrier reads; the rest is passed on as it came.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "Message")]
    message: MessageHead,
}

#[derive(Deserialize)]
struct MessageHead {
    #[serde(rename = "From")]
    from: String,
    #[serde(rename = "Nonce")]
    nonce: u64,
}

/// Carries every configured address's missing messages from the node that knows most to `to`.
/// `from` is the old primary, asked first; `others` are the healthy nodes to ask when it knows
/// no more than `to` or does not answer.
pub async fn carry(
    rpc: &RpcClient,
    senders: &[Sender],
    from: Option<&Daemon>,
    others: &[Daemon],
    to: &Daemon,
) -> Carried {
    let mut out = Carried::default();
    for sender in senders {
        let address = sender.address.as_str();
        let want = match nonce(rpc, &to.endpoint, address).await {
            Ok(n) => n,
            Err(e) => {
                out.problems.push(Problem::new(
                    format!("nonce {}", to.name),
                    format!("cannot read {}'s nonce for {address}: {e}", to.name),
                ));
                continue;
            }
        };
        let Some((source, have)) = best_source(rpc, address, from, others, to).await else {
            continue;
        };
        if have <= want {
            continue;
        }
        let messages = match pending(rpc, &source.endpoint, sender, want).await {
            Ok(m) => m,
            Err(e) => {
                out.problems.push(Problem::new(
                    format!("pending {}", source.name),
                    format!("cannot read {}'s pending messages: {e}", source.name),
                ));
                continue;
            }
        };
        push_all(rpc, address, source, to, messages, "carried", &mut out).await;
    }
    out
}

/// What one levelling of the pools found and did.
#[derive(Debug, Clone, Default)]
pub struct Levelled {
    /// What was relayed (lines say "relayed …"), and what kept messages from moving.
    pub carried: Carried,
    /// (node, address, messages it still lacks next to the primary) after relaying.
    pub behind: Vec<(String, String, u64)>,
    /// The primary answered every nonce asked: `behind` is a full comparison.
    pub complete: bool,
    /// Per (node, address) found behind before relaying: the next levelling relays to those
    /// still behind then.
    pub lagging: Lagging,
}

/// Nodes found behind, per (node, address), and at which nonces.
pub type Lagging = BTreeMap<(String, String), Lag>;

/// One node behind for one address: its nonce, the highest nonce in the pool, and whether a
/// relay was already tried at exactly these two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    pub have: u64,
    pub top: u64,
    pub tried: bool,
}

/// Keeps the pools level between switches, as gossip would: for each sender, every node
/// whose nonce is below the highest one is given the missing messages by the node that has
/// them. A primary whose pubsub is broken so never holds messages alone, and a switch then
/// has nothing left to carry. `nodes[0]` is the primary and `nodes[1..targets]` its backups:
/// they are given messages. The nodes after them (out of the upstream, but on the pool's
/// chain: an old primary that stalled, where the miner's last messages may have gone) only
/// lend theirs.
///
/// Gossip takes a moment: a node is given messages only when it was behind at the previous
/// levelling too (`lagging`, from the last [`Levelled::lagging`]), so that a message on its
/// way costs no read of a large `MpoolPending`. A relay that changed nothing (a backup whose
/// chain lags, so that its nonce trails for messages no pool holds any more) is not tried
/// again until one of the two nonces moves: no large read every round.
pub async fn level(
    rpc: &RpcClient,
    senders: &[Sender],
    nodes: &[Daemon],
    targets: usize,
    lagging: &Lagging,
) -> Levelled {
    let mut out = Levelled {
        complete: true,
        ..Levelled::default()
    };
    for sender in senders {
        let address = sender.address.as_str();
        let mut have = Vec::with_capacity(nodes.len());
        for d in nodes {
            have.push(nonce(rpc, &d.endpoint, address).await.ok());
        }
        out.complete &= have.first().copied().flatten().is_some();
        let Some(top) = have.iter().flatten().copied().max() else {
            continue;
        };
        let behind: Vec<usize> = (0..targets.min(nodes.len()))
            .filter(|&i| have[i].is_some_and(|n| n < top))
            .collect();
        let mut due = Vec::new();
        for i in behind {
            let key = (nodes[i].name.clone(), address.to_string());
            let have_i = have[i].unwrap_or(0);
            let same = |l: &Lag| l.have == have_i && l.top == top;
            let was = lagging.get(&key);
            let tried_here = was.is_some_and(|l| l.tried && same(l));
            let now_due = was.is_some() && !tried_here;
            if now_due {
                due.push(i);
            }
            out.lagging.insert(
                key,
                Lag {
                    have: have_i,
                    top,
                    tried: tried_here || now_due,
                },
            );
        }
        if !due.is_empty() {
            relay(rpc, sender, nodes, &mut have, top, &due, &mut out.carried).await;
        }
        if let Some(want) = have.first().copied().flatten() {
            for (d, n) in nodes.iter().zip(&have).take(targets).skip(1) {
                if let Some(n) = n {
                    out.behind
                        .push((d.name.clone(), address.to_string(), want.saturating_sub(*n)));
                }
            }
        }
    }
    out
}

/// Gives each node of `due` the sender's messages it lacks, read once from the node whose
/// nonce is `top` (the first such); `have` is brought up to date for them.
async fn relay(
    rpc: &RpcClient,
    sender: &Sender,
    nodes: &[Daemon],
    have: &mut [Option<u64>],
    top: u64,
    due: &[usize],
    out: &mut Carried,
) {
    let Some(src) = have.iter().position(|n| *n == Some(top)) else {
        return;
    };
    let lowest = due.iter().filter_map(|&i| have[i]).min().unwrap_or(top);
    let messages = match pending(rpc, &nodes[src].endpoint, sender, lowest).await {
        Ok(m) => m,
        Err(e) => {
            out.problems.push(Problem::new(
                format!("pending {}", nodes[src].name),
                format!("cannot read {}'s pending messages: {e}", nodes[src].name),
            ));
            return;
        }
    };
    let address = sender.address.as_str();
    for &i in due {
        let Some(n) = have[i] else { continue };
        let missing: Vec<(u64, Value)> =
            messages.iter().filter(|(m, _)| *m >= n).cloned().collect();
        push_all(
            rpc,
            address,
            &nodes[src],
            &nodes[i],
            missing,
            "relayed",
            out,
        )
        .await;
        have[i] = nonce(rpc, &nodes[i].endpoint, address)
            .await
            .ok()
            .or(have[i]);
    }
}

/// The node (old primary first) whose nonce for `address` is highest, and that nonce.
async fn best_source<'a>(
    rpc: &RpcClient,
    address: &str,
    from: Option<&'a Daemon>,
    others: &'a [Daemon],
    to: &Daemon,
) -> Option<(&'a Daemon, u64)> {
    let mut best: Option<(&Daemon, u64)> = None;
    for d in from.into_iter().chain(others.iter()) {
        if d.name == to.name {
            continue;
        }
        if let Ok(n) = nonce(rpc, &d.endpoint, address).await {
            if best.is_none_or(|(_, b)| n > b) {
                best = Some((d, n));
            }
        }
    }
    best
}

/// `MpoolGetNonce`: the next nonce `endpoint` would give `address`.
pub(crate) async fn nonce(
    rpc: &RpcClient,
    endpoint: &Endpoint,
    address: &str,
) -> Result<u64, RpcError> {
    rpc.call::<u64>(endpoint, "Filecoin.MpoolGetNonce", json!([address]))
        .await
}

/// Pushes `messages` (nonce order) to `to` and says what happened ("carried" at a switch,
/// "relayed" between switches).
async fn push_all(
    rpc: &RpcClient,
    address: &str,
    source: &Daemon,
    to: &Daemon,
    mut messages: Vec<(u64, Value)>,
    verb: &str,
    out: &mut Carried,
) {
    messages.sort_by_key(|(n, _)| *n);
    // Without a write token the probe's token is tried: an admin token works, a read one is
    // refused and said.
    let endpoint = to.write.as_ref().unwrap_or(&to.endpoint);
    let (mut carried, mut first, mut last, mut refused) = (0u64, None, None, Vec::new());
    for (n, m) in &messages {
        match rpc
            .call::<Value>(endpoint, "Filecoin.MpoolPush", json!([m]))
            .await
        {
            Ok(_) => {
                carried += 1;
                first.get_or_insert(*n);
                last = Some(*n);
            }
            Err(e) if already_done(&e) => {}
            Err(e) if lacks_write(&e) => {
                out.problems.push(Problem::new(
                    lacks_write_about(&to.name),
                    format!(
                        "cannot carry messages to {}: its token lacks write (set [[node]] write_token_file)",
                        to.name
                    ),
                ));
                return;
            }
            Err(e) => refused.push(format!("nonce {n}: {e}")),
        }
    }
    if carried > 0 {
        let nonces = match (first, last) {
            (Some(a), Some(b)) if a != b => format!("nonces {a}–{b}"),
            (Some(a), _) => format!("nonce {a}"),
            _ => String::new(),
        };
        out.lines.push(format!(
            "{verb} {carried} message{} of {address}, {nonces}, from {} to {}",
            if carried == 1 { "" } else { "s" },
            source.name,
            to.name
        ));
        out.messages += carried;
    }
    if !refused.is_empty() {
        out.problems.push(Problem::new(
            format!("refused {} {address}", to.name),
            format!(
                "{} refused {} of {address}'s messages: {}",
                to.name,
                refused.len(),
                crate::text::inert(&refused.join("; "), 300)
            ),
        ));
    }
}

/// The node has it already, or its nonce is on chain: nothing left to do.
fn already_done(e: &RpcError) -> bool {
    matches!(e, RpcError::Rpc { message, .. }
        if message.contains("nonce too low") || message.contains("already in mpool") || message.contains("already exists"))
}

/// Whether the token `MpoolPush` would use on `d` has `write` (`AuthVerify`, asked with the
/// probe's token: the write token only ever authorizes `MpoolPush`, here it is the question).
/// `Some(words)` when it has not; `None` when it has, or the node cannot tell (left to the
/// first carry).
pub async fn write_problem(rpc: &RpcClient, d: &Daemon) -> Option<String> {
    let pushes_with = d.write.as_ref().unwrap_or(&d.endpoint);
    let Some(t) = &pushes_with.token else {
        return Some(format!(
            "cannot carry messages to {}: no token with write (set [[node]] write_token_file)",
            d.name
        ));
    };
    match rpc
        .call::<Vec<String>>(&d.endpoint, "Filecoin.AuthVerify", json!([t.expose()]))
        .await
    {
        Ok(perms) if !perms.iter().any(|p| p == "write" || p == "admin") => Some(format!(
            "cannot carry messages to {}: its token lacks write (set [[node]] write_token_file)",
            d.name
        )),
        _ => None,
    }
}

/// What a "token lacks write" problem is about, wherever it is met.
pub(crate) fn lacks_write_about(node: &str) -> String {
    format!("write {node}")
}

fn lacks_write(e: &RpcError) -> bool {
    match e {
        RpcError::Rpc { message, .. } => message.contains("missing permission"),
        RpcError::Http { status } => *status == 401 || *status == 403,
        _ => false,
    }
}

/// `MpoolPending` on `endpoint`, read as a stream: only messages from `sender` with a nonce of
/// at least `from_nonce` are kept (each at most [`MAX_MESSAGE`], at most [`MAX_CARRIED`]), and
/// the whole read ends within [`PENDING_TIME`].
async fn pending(
    rpc: &RpcClient,
    endpoint: &Endpoint,
    sender: &Sender,
    from_nonce: u64,
) -> Result<Vec<(u64, Value)>, RpcError> {
    let read = async {
        let mut scanner = crate::apply::pending_stream::ArrayScanner::new("result", MAX_MESSAGE);
        let mut kept = Vec::new();
        let mut keep = |element: &[u8]| {
            let Ok(head) = serde_json::from_slice::<Head>(element) else {
                return;
            };
            // Only the configured sender asked for, whatever else the node sends.
            if sender.sends(&head.message.from)
                && head.message.nonce >= from_nonce
                && kept.len() < MAX_CARRIED
            {
                if let Ok(v) = serde_json::from_slice::<Value>(element) {
                    kept.push((head.message.nonce, v));
                }
            }
        };
        rpc.stream_call(
            endpoint,
            "Filecoin.MpoolPending",
            json!([null]),
            PENDING_TIME,
            |chunk| scanner.feed(chunk, &mut keep),
        )
        .await?;
        scanner.finish()?;
        Ok(kept)
    };
    match tokio::time::timeout(PENDING_TIME, read).await {
        Ok(r) => r,
        Err(_) => Err(RpcError::Timeout(PENDING_TIME)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A hostile node: `MpoolPending` is `n` messages (a few of ours among strangers'), sent
    /// as one chunked reply of many megabytes.
    async fn hostile_pending(n: u64) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            let send = |text: String| {
                let mut out = format!("{:x}\r\n", text.len()).into_bytes();
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
                out
            };
            let _ = s
                .write_all(&send(r#"{"jsonrpc":"2.0","id":1,"result":["#.into()))
                .await;
            let filler = "A".repeat(1000);
            for i in 0..n {
                let from = if i % 1000 == 7 {
                    "f3ours"
                } else {
                    "f3stranger"
                };
                let comma = if i == 0 { "" } else { "," };
                let m = format!(
                    r#"{comma}{{"Message":{{"From":"{from}","Nonce":{i},"Params":"{filler}"}},"Signature":{{"Type":1,"Data":"x"}}}}"#
                );
                if s.write_all(&send(m)).await.is_err() {
                    return;
                }
            }
            let _ = s.write_all(&send("]}".into())).await;
            let _ = s.write_all(b"0\r\n\r\n").await;
        });
        addr
    }

    #[tokio::test]
    async fn a_huge_pending_pool_is_read_as_a_stream_keeping_only_configured_senders() {
        // 20,000 messages of about 1 KB: 20 MB, twenty times the probes' reply cap.
        let addr = hostile_pending(20_000).await;
        let rpc = RpcClient::new(Duration::from_secs(3), 1 << 20).expect("client");
        let endpoint = Endpoint {
            url: format!("http://{addr}/rpc/v1").parse().expect("url"),
            token: None,
            transport: crate::probe::rpc::Transport::Http,
        };
        let ours = Sender {
            address: "f0ours".into(),
            also: Some("f3ours".into()),
            role: crate::apply::senders::Role::Worker,
        };
        let kept = pending(&rpc, &endpoint, &ours, 100).await.expect("read");
        let nonces: Vec<u64> = kept.iter().map(|(n, _)| *n).collect();
        assert_eq!(nonces.len(), 19, "{nonces:?}");
        assert!(
            nonces.iter().all(|n| n % 1000 == 7 && *n >= 100),
            "{nonces:?}"
        );
        assert!(kept.iter().all(|(_, m)| m["Message"]["From"] == "f3ours"));
    }

    /// A node whose `MpoolGetNonce` is `nonce` and whose pool is empty; counts its
    /// `MpoolPending` reads.
    async fn node_at(
        name: &str,
        nonce: u64,
        reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> Daemon {
        use axum::{routing::post, Json, Router};
        let app = Router::new().route(
            "/rpc/v1",
            post(move |Json(req): Json<Value>| {
                let reads = reads.clone();
                async move {
                    let result = match req["method"].as_str() {
                        Some("Filecoin.MpoolGetNonce") => json!(nonce),
                        Some("Filecoin.MpoolPending") => {
                            reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            json!([])
                        }
                        _ => Value::Null,
                    };
                    Json(json!({"jsonrpc": "2.0", "id": req["id"], "result": result}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Daemon {
            name: name.into(),
            endpoint: Endpoint {
                url: format!("http://{addr}/rpc/v1").parse().expect("url"),
                token: None,
                transport: crate::probe::rpc::Transport::Http,
            },
            write: None,
        }
    }

    #[tokio::test]
    async fn a_backup_behind_for_messages_no_pool_holds_is_read_for_once_not_every_round() {
        // The primary's nonce is 10 by its chain; the backup's chain lags at 8, and no pool
        // holds 8 and 9 any more (they landed).
        let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let nodes = vec![
            node_at("a", 10, reads.clone()).await,
            node_at("b", 8, reads.clone()).await,
        ];
        let rpc = RpcClient::new(Duration::from_secs(2), 1 << 20).expect("client");
        let senders = [Sender::configured("f3w")];
        let mut lagging = Lagging::new();
        let mut counts = Vec::new();
        for _ in 0..4 {
            let done = level(&rpc, &senders, &nodes, 2, &lagging).await;
            lagging = done.lagging;
            counts.push(reads.load(std::sync::atomic::Ordering::Relaxed));
            assert_eq!(done.behind, vec![("b".into(), "f3w".into(), 2)]);
            assert!(done.complete && done.carried.problems.is_empty());
        }
        // Round 1: seen behind (gossip gets a round); round 2: one read; then none.
        assert_eq!(counts, vec![0, 1, 1, 1]);
    }

    fn rpc_error(message: &str) -> RpcError {
        RpcError::Rpc {
            code: 1,
            message: message.into(),
        }
    }

    #[test]
    fn a_message_already_there_or_on_chain_is_done_and_a_read_token_is_told_apart() {
        for done in [
            "minimum expected nonce is 9: message nonce too low",
            "message from f3a with nonce 3 already in mpool",
            "message already exists",
        ] {
            assert!(already_done(&rpc_error(done)), "{done}");
        }
        assert!(!already_done(&rpc_error("not enough funds")));
        assert!(lacks_write(&rpc_error(
            "missing permission to invoke 'MpoolPush' (need 'write')"
        )));
        assert!(lacks_write(&RpcError::Http { status: 401 }));
        assert!(!lacks_write(&rpc_error("not enough funds")));
    }
}

//! Message pools: what a provider's pending signed messages do across a pool of daemons.
//!
//! Each node has its own pool. A message pushed to a node whose gossip works reaches every
//! other gossiping node at once; a node whose pubsub is broken (`gossip_cut`) keeps what it is
//! given to itself. A message lands on chain one epoch after it was pushed, in nonce order,
//! once a gossiping node holds it: a cut node's messages never land until someone else has
//! them. `MpoolPushMessage` assigns the next nonce from the node's own pool and the chain, as
//! Lotus does, so a node that never saw a message hands its nonce out a second time; the two
//! messages then conflict, and the conflict is counted.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use serde_json::{json, Value};

/// One pending message, and the network height it was pushed at.
#[derive(Debug, Clone)]
struct Pending {
    signed: Value,
    cid: String,
    pushed_at: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// node → (sending account's key address, nonce) → message.
    pools: BTreeMap<String, BTreeMap<(String, u64), Pending>>,
    /// The next nonce the chain expects from each account (by key address).
    chain: BTreeMap<String, u64>,
    /// Nodes whose pubsub is broken.
    cut: BTreeSet<String>,
    /// Pushes refused because another message already had their nonce, by node.
    conflicts: BTreeMap<String, u64>,
}

/// The pools of one simulated network.
#[derive(Debug, Default)]
pub(super) struct Mpools {
    inner: Mutex<Inner>,
}

/// A refusal: (code, message), as Lotus words it.
type Refusal = (i64, String);

impl Mpools {
    /// A node of the network: it takes part in gossip from the start.
    pub(super) fn join(&self, node: &str) {
        let mut i = self.inner.lock().expect("mpool lock");
        i.pools.entry(node.to_string()).or_default();
    }

    pub(super) fn is_cut(&self, node: &str) -> bool {
        self.inner.lock().expect("mpool lock").cut.contains(node)
    }

    pub(super) fn set_cut(&self, node: &str, cut: bool) {
        let mut i = self.inner.lock().expect("mpool lock");
        if cut {
            i.cut.insert(node.to_string());
        } else {
            i.cut.remove(node);
        }
    }

    /// (pending messages, nonce conflicts) of a node, for `GET /nodes`.
    pub(super) fn stats(&self, node: &str) -> (u64, u64) {
        let i = self.inner.lock().expect("mpool lock");
        (
            i.pools.get(node).map_or(0, |p| p.len() as u64),
            i.conflicts.get(node).copied().unwrap_or(0),
        )
    }

    /// The JSON-RPC methods of the message pool; `None` for any other.
    pub(super) fn call(
        &self,
        node: &str,
        method: &str,
        params: &Value,
        height: u64,
    ) -> Option<Result<Value, Refusal>> {
        let mut i = self.inner.lock().expect("mpool lock");
        i.land(height);
        let arg = |n: usize| params.get(n).cloned().unwrap_or(Value::Null);
        Some(match method {
            "Filecoin.MpoolGetNonce" => match arg(0).as_str() {
                Some(from) => Ok(json!(i.next_nonce(node, from))),
                None => Err((1, "MpoolGetNonce: expected an address".into())),
            },
            "Filecoin.MpoolPending" => Ok(Value::Array(
                i.pools
                    .get(node)
                    .map(|p| p.values().map(|m| m.signed.clone()).collect())
                    .unwrap_or_default(),
            )),
            "Filecoin.MpoolPush" => i.push(node, arg(0), height).map(|cid| json!({ "/": cid })),
            m if m.starts_with("Filecoin.State") => return crate::actors::call(m, params),
            "Filecoin.MpoolPushMessage" => {
                let mut msg = arg(0);
                let Some(from) = msg.get("From").and_then(Value::as_str).map(str::to_string) else {
                    return Some(Err((1, "MpoolPushMessage: message has no From".into())));
                };
                msg["Nonce"] = json!(i.next_nonce(node, &from));
                let signed = sign(msg);
                i.push(node, signed.clone(), height).map(|cid| {
                    let mut s = signed;
                    s["CID"] = json!({ "/": cid });
                    s
                })
            }
            _ => return None,
        })
    }
}

impl Inner {
    /// What `MpoolGetNonce` says on `node`: past the chain and its own pool.
    fn next_nonce(&self, node: &str, from: &str) -> u64 {
        let from = crate::actors::key_of(from);
        let chain = self.chain.get(from).copied().unwrap_or(0);
        let pooled = self.pools.get(node).and_then(|p| {
            p.keys()
                .filter(|(f, _)| f == from)
                .map(|(_, n)| n + 1)
                .max()
        });
        pooled.unwrap_or(0).max(chain)
    }

    fn push(&mut self, node: &str, signed: Value, height: u64) -> Result<String, Refusal> {
        let msg = &signed["Message"];
        let (Some(from), Some(nonce)) = (
            msg.get("From").and_then(Value::as_str).map(str::to_string),
            msg.get("Nonce").and_then(Value::as_u64),
        ) else {
            return Err((1, "MpoolPush: not a signed message".into()));
        };
        // Counted per account, whichever form of its address the message names.
        let account = crate::actors::key_of(&from).to_string();
        let expected = self.chain.get(&account).copied().unwrap_or(0);
        if nonce < expected {
            return Err((
                1,
                format!("minimum expected nonce is {expected}: message nonce too low"),
            ));
        }
        let cid = cid_of(&signed);
        let entry = Pending {
            signed,
            cid: cid.clone(),
            pushed_at: height,
        };
        let key = (account, nonce);
        match self.pools.get(node).and_then(|p| p.get(&key)) {
            Some(have) if have.cid == cid => return Ok(cid),
            Some(_) => {
                *self.conflicts.entry(node.to_string()).or_default() += 1;
                return Err((
                    1,
                    format!("message from {from} with nonce {nonce} already in mpool, increase GasPremium to replace it"),
                ));
            }
            None => {}
        }
        let mut reach = vec![node.to_string()];
        if !self.cut.contains(node) {
            reach.extend(
                self.pools
                    .keys()
                    .filter(|n| *n != node && !self.cut.contains(*n))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
        for n in reach {
            let pool = self.pools.entry(n.clone()).or_default();
            match pool.get(&key) {
                Some(other) if other.cid != cid => {
                    // Gossip brings a second message with the same nonce: one of the two
                    // will never land.
                    *self.conflicts.entry(n).or_default() += 1;
                }
                Some(_) => {}
                None => {
                    pool.insert(key.clone(), entry.clone());
                }
            }
        }
        Ok(cid)
    }

    /// Lands, in nonce order, every message a gossiping node has held for an epoch.
    fn land(&mut self, height: u64) {
        loop {
            let mut landed = None;
            for (node, pool) in &self.pools {
                if self.cut.contains(node) {
                    continue;
                }
                landed = pool.iter().find_map(|((from, nonce), m)| {
                    let next = self.chain.get(from).copied().unwrap_or(0);
                    (*nonce == next && m.pushed_at < height).then(|| from.clone())
                });
                if landed.is_some() {
                    break;
                }
            }
            let Some(from) = landed else { return };
            let nonce = self.chain.get(&from).copied().unwrap_or(0);
            self.chain.insert(from.clone(), nonce + 1);
            for pool in self.pools.values_mut() {
                pool.retain(|(f, n), _| !(f == &from && *n <= nonce));
            }
        }
    }
}

/// A simulated signature: the simulator never checks one, and chain-co never makes one.
fn sign(message: Value) -> Value {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    message.to_string().hash(&mut h);
    json!({
        "Message": message,
        "Signature": { "Type": 1, "Data": format!("c2lt{:016x}", h.finish()) },
    })
}

fn cid_of(signed: &Value) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    signed["Message"].to_string().hash(&mut h);
    signed["Signature"].to_string().hash(&mut h);
    format!("bafy2bzacesim{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(from: &str, n: u64) -> Value {
        json!({"From": from, "To": "f01000", "Method": 5, "Params": format!("p{n}"), "Value": "0"})
    }

    fn nonce(p: &Mpools, node: &str) -> u64 {
        p.call(node, "Filecoin.MpoolGetNonce", &json!(["f3w"]), 10)
            .expect("method")
            .expect("nonce")
            .as_u64()
            .expect("u64")
    }

    #[test]
    fn a_cut_node_hands_out_nonces_its_peers_never_saw_and_carrying_fixes_it() {
        let p = Mpools::default();
        for n in ["a", "b", "c"] {
            p.join(n);
        }
        p.set_cut("a", true);
        for i in 0..3 {
            p.call(
                "a",
                "Filecoin.MpoolPushMessage",
                &json!([msg("f3w", i), null]),
                10,
            )
            .expect("method")
            .expect("pushed");
        }
        assert_eq!((nonce(&p, "a"), nonce(&p, "b")), (3, 0));
        // Without carrying: b hands out nonce 0 again, and a's message 0 conflicts later.
        let pending = p
            .call("a", "Filecoin.MpoolPending", &json!([null]), 10)
            .expect("method")
            .expect("pending");
        assert_eq!(pending.as_array().map(Vec::len), Some(3));
        // Carrying: the same signed messages pushed to b, in nonce order.
        for m in pending.as_array().expect("array") {
            p.call("b", "Filecoin.MpoolPush", &json!([m]), 10)
                .expect("method")
                .expect("carried");
        }
        assert_eq!(nonce(&p, "b"), 3);
        assert_eq!(nonce(&p, "c"), 3, "b gossiped them to c");
        // Pushed again: already there, not an error.
        let again = p.call("b", "Filecoin.MpoolPush", &json!([pending[0]]), 10);
        assert!(matches!(again, Some(Ok(_))));
        // They land a block later; a landed nonce is "too low".
        p.call("b", "Filecoin.MpoolGetNonce", &json!(["f3w"]), 11);
        let low = p.call("c", "Filecoin.MpoolPush", &json!([pending[0]]), 12);
        assert!(
            matches!(low, Some(Err((_, ref m))) if m.contains("nonce too low")),
            "{low:?}"
        );
        assert_eq!(p.stats("b"), (0, 0));
    }

    #[test]
    fn two_messages_with_one_nonce_conflict() {
        let p = Mpools::default();
        for n in ["a", "b"] {
            p.join(n);
        }
        p.set_cut("a", true);
        let on_a = p
            .call(
                "a",
                "Filecoin.MpoolPushMessage",
                &json!([msg("f3w", 1), null]),
                10,
            )
            .expect("m")
            .expect("a");
        p.call(
            "b",
            "Filecoin.MpoolPushMessage",
            &json!([msg("f3w", 2), null]),
            10,
        )
        .expect("m")
        .expect("b");
        let clash = p.call("b", "Filecoin.MpoolPush", &json!([on_a]), 10);
        assert!(matches!(clash, Some(Err(_))));
        assert_eq!(p.stats("b").1, 1);
    }
}

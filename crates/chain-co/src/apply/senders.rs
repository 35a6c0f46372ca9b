//! Whose messages follow a switch: the provider's sending accounts.
//!
//! An account has two addresses: its ID (`f0…`) and its key address (`f1…`/`f3…`). A pending
//! message may name either as `From` (lotus-miner sends from the worker's ID address, as
//! `StateMinerInfo` gives it; a wallet from the key address), while the pools count nonces per
//! account. So each configured address, and each address `[messages] miner` gives through
//! `StateMinerInfo` (owner, worker, control addresses), is resolved to its other form
//! (`StateAccountKey`, `StateLookupID`), and a pending message is the account's when it names
//! either. Resolution is re-done now and then (a worker can change); until it succeeds the
//! configured addresses are used as they are.
//!
//! Every address a daemon gives is checked as an address and capped in number before it is
//! kept: it ends up in the log, `/status` and the next daemons' requests.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::probe::rpc::{Endpoint, RpcClient, RpcError};

/// At most this many control addresses of a miner are followed (the actor allows 10).
pub const MAX_CONTROL: usize = 16;

/// Why an account's messages are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Listed in `[messages] addresses`.
    Configured,
    Owner,
    Worker,
    Control,
}

/// One sending account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    /// The address nonces are asked for and reports name.
    pub address: String,
    /// The account's other address, once resolved: a pending message naming it is the
    /// account's too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub also: Option<String>,
    pub role: Role,
}

impl Sender {
    pub fn configured(address: &str) -> Sender {
        Sender {
            address: address.to_string(),
            also: None,
            role: Role::Configured,
        }
    }

    /// Whether a message from `from` is this account's.
    pub fn sends(&self, from: &str) -> bool {
        self.address == from || self.also.as_deref() == Some(from)
    }
}

/// A Filecoin address as chain-co accepts one: network prefix `f` or `t`, protocol 0–4, then
/// letters and digits; at most 120 characters (a delegated `f410f…` is about 44, BLS 86).
pub fn is_address(a: &str) -> bool {
    a.len() >= 3
        && a.len() <= 120
        && matches!(a.as_bytes()[0], b'f' | b't')
        && matches!(a.as_bytes()[1], b'0'..=b'4')
        && a[2..].chars().all(|c| c.is_ascii_alphanumeric())
}

/// An ID address (`f0…`/`t0…`): what a miner actor is, and what `StateMinerInfo` gives.
pub fn is_id(a: &str) -> bool {
    is_address(a) && a.as_bytes()[1] == b'0'
}

/// What resolution can fail on.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{method}: {source}")]
    Rpc {
        method: &'static str,
        #[source]
        source: RpcError,
    },
    #[error("{method} gave {got:?}, not an address")]
    NotAnAddress { method: &'static str, got: String },
}

/// The reply's address, checked.
fn address(method: &'static str, v: &Value) -> Result<String, ResolveError> {
    match v.as_str() {
        Some(a) if is_address(a) => Ok(a.to_string()),
        _ => Err(ResolveError::NotAnAddress {
            method,
            got: crate::text::inert(&v.to_string(), 60),
        }),
    }
}

async fn state_call(
    rpc: &RpcClient,
    endpoint: &Endpoint,
    method: &'static str,
    address: &str,
) -> Result<Value, ResolveError> {
    rpc.call::<Value>(endpoint, method, json!([address, []]))
        .await
        .map_err(|source| ResolveError::Rpc { method, source })
}

/// The account's other address: its key address for an ID, its ID for a key address. An
/// account without the other (an ID of a non-account actor, a key address never used on
/// chain) has none, and that is no error.
async fn other_form(
    rpc: &RpcClient,
    endpoint: &Endpoint,
    a: &str,
) -> Result<Option<String>, ResolveError> {
    let method = if is_id(a) {
        "Filecoin.StateAccountKey"
    } else {
        "Filecoin.StateLookupID"
    };
    match state_call(rpc, endpoint, method, a).await {
        Ok(v) => address(method, &v).map(Some),
        Err(ResolveError::Rpc {
            source: RpcError::Rpc { message, .. },
            ..
        }) if message.contains("not found") || message.contains("failed to find actor") => {
            // Lotus: "actor not found"; Forest 0.39: "failed to find actor: …" (seen).
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The miner's owner, worker (and a pending new worker) and control addresses, as
/// `StateMinerInfo` gives them.
async fn miner_accounts(
    rpc: &RpcClient,
    endpoint: &Endpoint,
    miner: &str,
) -> Result<Vec<(String, Role)>, ResolveError> {
    const M: &str = "Filecoin.StateMinerInfo";
    let info = state_call(rpc, endpoint, M, miner).await?;
    let mut out = vec![
        (address(M, &info["Owner"])?, Role::Owner),
        (address(M, &info["Worker"])?, Role::Worker),
    ];
    if let Some(new) = info["NewWorker"].as_str().filter(|a| is_address(a)) {
        out.push((new.to_string(), Role::Worker));
    }
    if let Some(list) = info["ControlAddresses"].as_array() {
        for a in list.iter().take(MAX_CONTROL) {
            out.push((address(M, a)?, Role::Control));
        }
    }
    Ok(out)
}

/// Every sending account, resolved on `endpoint`: the configured addresses, then the miner's.
/// One account named twice (an address configured and also the miner's worker) is kept once.
pub async fn resolve(
    rpc: &RpcClient,
    endpoint: &Endpoint,
    configured: &[String],
    miner: Option<&str>,
) -> Result<Vec<Sender>, ResolveError> {
    let mut wanted: Vec<(String, Role)> = configured
        .iter()
        .map(|a| (a.clone(), Role::Configured))
        .collect();
    if let Some(m) = miner {
        wanted.extend(miner_accounts(rpc, endpoint, m).await?);
    }
    let mut out: Vec<Sender> = Vec::new();
    for (a, role) in wanted {
        if out.iter().any(|s| s.sends(&a)) {
            continue;
        }
        let also = other_form(rpc, endpoint, &a).await?;
        if let Some(s) = also
            .as_deref()
            .and_then(|o| out.iter_mut().find(|s| s.sends(o)))
        {
            s.also.get_or_insert(a);
            continue;
        }
        out.push(Sender {
            address: a,
            also,
            role,
        });
    }
    Ok(out)
}

/// [`resolve`] on the first of `nodes` that answers every call (the caller puts the primary
/// first); else why none did, in words for the log and `/status`.
pub async fn resolve_on_any(
    rpc: &RpcClient,
    nodes: &[crate::apply::messages::Daemon],
    configured: &[String],
    miner: Option<&str>,
) -> Result<Vec<Sender>, String> {
    let mut failures = Vec::new();
    for d in nodes {
        match resolve(rpc, &d.endpoint, configured, miner).await {
            Ok(list) => return Ok(list),
            Err(e) => failures.push(format!("{}: {e}", d.name)),
        }
    }
    let what = miner.map_or_else(
        || "the provider's addresses".to_string(),
        |m| format!("miner {m}'s addresses"),
    );
    Err(crate::text::inert(
        &format!("cannot resolve {what}: {}", failures.join("; ")),
        400,
    ))
}

/// Each sender in words, for the log and `status`: "f0101 (f3…, worker)".
pub fn describe(senders: &[Sender]) -> String {
    senders
        .iter()
        .map(|s| {
            let role = match s.role {
                Role::Configured => "configured",
                Role::Owner => "owner",
                Role::Worker => "worker",
                Role::Control => "control",
            };
            match &s.also {
                Some(o) => format!("{} ({}, {role})", s.address, short(o)),
                None => format!("{} ({role})", s.address),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A long key address cut for reading: "f3simworker3n…".
fn short(a: &str) -> String {
    if a.len() > 16 {
        format!("{}…", &a[..13])
    } else {
        a.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A daemon answering each state method with `reply(method, address)`.
    async fn daemon(reply: fn(&str, &str) -> Value) -> Endpoint {
        use axum::{routing::post, Json, Router};
        let app = Router::new().route(
            "/rpc/v1",
            post(move |Json(req): Json<Value>| async move {
                let method = req["method"].as_str().unwrap_or("");
                let address = req["params"][0].as_str().unwrap_or("");
                Json(json!({"jsonrpc": "2.0", "id": req["id"], "result": reply(method, address)}))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Endpoint {
            url: format!("http://{addr}/rpc/v1").parse().expect("url"),
            token: None,
            transport: crate::probe::rpc::Transport::Http,
        }
    }

    fn rpc() -> RpcClient {
        RpcClient::new(Duration::from_secs(2), 1 << 20).expect("client")
    }

    #[tokio::test]
    async fn a_miner_is_resolved_to_its_accounts_each_once_with_its_other_address() {
        let e = daemon(|method, address| match method {
            "Filecoin.StateMinerInfo" => json!({
                "Owner": "f0100", "Worker": "f0101", "NewWorker": "<empty>",
                "ControlAddresses": ["f0102", "f0101"]
            }),
            "Filecoin.StateAccountKey" => json!(format!("f3key{}", &address[2..])),
            "Filecoin.StateLookupID" => json!(format!("f0{}", &address[5..])),
            _ => Value::Null,
        })
        .await;
        let got = resolve(&rpc(), &e, &["f3key101".into()], Some("f01000"))
            .await
            .expect("resolved");
        let shown: Vec<(String, Option<String>, Role)> = got
            .iter()
            .map(|s| (s.address.clone(), s.also.clone(), s.role))
            .collect();
        assert_eq!(
            shown,
            vec![
                // Configured as a key address; the miner's worker is the same account.
                ("f3key101".into(), Some("f0101".into()), Role::Configured),
                ("f0100".into(), Some("f3key100".into()), Role::Owner),
                ("f0102".into(), Some("f3key102".into()), Role::Control),
            ]
        );
    }

    #[tokio::test]
    async fn a_hostile_miner_info_is_refused_or_capped_never_passed_on() {
        let e = daemon(|method, _| match method {
            "Filecoin.StateMinerInfo" => json!({
                "Owner": "f0100", "Worker": "f0101\n[nginx]\u{1b}[2J"
            }),
            _ => Value::Null,
        })
        .await;
        let err = resolve(&rpc(), &e, &[], Some("f01000"))
            .await
            .expect_err("not an address");
        let words = err.to_string();
        assert!(words.contains("not an address"), "{words}");
        assert!(
            !words.contains('\n') && !words.contains('\u{1b}'),
            "{words:?}"
        );
        let e = daemon(|method, address| match method {
            "Filecoin.StateMinerInfo" => json!({
                "Owner": "f0100", "Worker": "f0101",
                "ControlAddresses": (0..5000).map(|i| format!("f0{}", 2000 + i)).collect::<Vec<_>>()
            }),
            "Filecoin.StateAccountKey" => json!(format!("f3k{}", &address[2..])),
            _ => Value::Null,
        })
        .await;
        let got = resolve(&rpc(), &e, &[], Some("f01000"))
            .await
            .expect("capped");
        assert_eq!(got.len(), 2 + MAX_CONTROL);
    }

    #[test]
    fn an_address_is_checked_before_it_is_kept() {
        for ok in ["f0101", "t01000", "f3abc", "f410fabc"] {
            assert!(is_address(ok), "{ok}");
        }
        for bad in [
            "",
            "f0",
            "x0101",
            "f5abc",
            "f0 101",
            "f0101\u{1b}[31m",
            "f0;rm",
        ] {
            assert!(!is_address(bad), "{bad:?}");
        }
        assert!(!is_address(&format!("f3{}", "a".repeat(200))));
    }

    #[test]
    fn a_sender_owns_messages_naming_either_of_its_addresses() {
        let s = Sender {
            address: "f0101".into(),
            also: Some("f3worker".into()),
            role: Role::Worker,
        };
        assert!(s.sends("f0101") && s.sends("f3worker"));
        assert!(!s.sends("f0102"));
        assert_eq!(
            describe(&[s, Sender::configured("f3other")]),
            "f0101 (f3worker, worker), f3other (configured)"
        );
    }
}

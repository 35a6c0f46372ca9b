//! What differs between the four daemon implementations on the wire, as the simulator plays
//! them. Each fact has its source in `shared/filecoin-rpc.md`; the README's implementation
//! table is the short form of this file.

use std::fmt;
use std::str::FromStr;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::chain::TipsetStyle;
use crate::node::F3State;

/// A daemon implementation the simulator can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Lotus,
    Venus,
    Forest,
    Fuhon,
    /// A server that implements less of the Lotus API and types it loosely, as gateways,
    /// hosted endpoints and development chains do: no `StateNetworkName`, `NetPeers` or sync
    /// state; numbers as floats and strings; errors without a code.
    Minimal,
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lotus" => Ok(Profile::Lotus),
            "venus" => Ok(Profile::Venus),
            "forest" => Ok(Profile::Forest),
            "fuhon" => Ok(Profile::Fuhon),
            "minimal" => Ok(Profile::Minimal),
            other => Err(format!(
                "unknown implementation {other:?}; use lotus, venus, forest, fuhon or minimal"
            )),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Lotus => "lotus",
            Profile::Venus => "venus",
            Profile::Forest => "forest",
            Profile::Fuhon => "fuhon",
            Profile::Minimal => "minimal",
        })
    }
}

/// Which API path a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiPath {
    V0,
    V1,
    /// Lotus v1.35+ and Forest: `ChainGetTipSetFinalityStatus` lives here only.
    V2,
}

impl Profile {
    /// Fuhon's node serves JSON-RPC over WebSocket only; an HTTP POST gets 400 with an empty
    /// body (cpp-filecoin core/api/rpc/ws.cpp).
    pub fn serves_http_post(&self) -> bool {
        *self != Profile::Fuhon
    }

    /// Venus's sophon-auth AuthMux answers 401 to a request without a token; the others give
    /// read access.
    pub fn requires_token(&self) -> bool {
        *self == Profile::Venus
    }

    /// Loosens a tipset's numbers the way a loosely typed server writes them: the height as a
    /// string, timestamps with a fraction, the parent weight as a JSON number.
    pub fn loosen_tipset(&self, tipset: &mut Value) {
        if *self != Profile::Minimal {
            return;
        }
        if let Some(h) = tipset.get("Height").and_then(Value::as_u64) {
            tipset["Height"] = Value::String(h.to_string());
        }
        if let Some(blocks) = tipset.get_mut("Blocks").and_then(Value::as_array_mut) {
            for b in blocks {
                if let Some(t) = b.get("Timestamp").and_then(Value::as_u64) {
                    b["Timestamp"] = json!(t as f64 + 0.25);
                }
                if let Some(w) = b
                    .get("ParentWeight")
                    .and_then(Value::as_str)
                    .and_then(|w| w.parse::<u64>().ok())
                {
                    b["ParentWeight"] = json!(w);
                }
            }
        }
    }

    pub fn tipset_style(&self) -> TipsetStyle {
        match self {
            Profile::Forest => TipsetStyle::Forest,
            _ => TipsetStyle::Lotus,
        }
    }

    /// `Filecoin.Version`. Lotus: `<ver>+<network>+git.<sha>`, APIVersion 2.3.0 on v1 and 1.5.0
    /// on v0, `BlockDelay`, `Agent`. Venus: no `BlockDelay`, no `Agent`. Forest: 2.3.0 on every
    /// path, `Agent: "forest"`, no network tag. Fuhon: "Fuhon Node <describe>", 2.2.0 on v1.
    pub fn version(&self, api: ApiPath, block_delay: u64) -> Value {
        let v0 = api == ApiPath::V0;
        match self {
            Profile::Lotus => json!({
                "Version": "1.28.1+mainnet+git.9e4b1e5a0",
                "APIVersion": if v0 { 66816 } else { 131840 },
                "BlockDelay": block_delay,
                "Agent": "lotus",
            }),
            Profile::Venus => json!({
                "Version": "1.20.0+git.3e20c0d4",
                "APIVersion": if v0 { 66816 } else { 131840 },
            }),
            Profile::Forest => json!({
                "Version": "0.39.0+git.unknown",
                "APIVersion": 131840,
                "BlockDelay": block_delay,
                "Agent": "forest",
            }),
            Profile::Fuhon => json!({
                "Version": "Fuhon Node v0.9.1-3-g16ffecde",
                "APIVersion": if v0 { 66816 } else { 131584 },
                "BlockDelay": block_delay,
            }),
            Profile::Minimal => json!({
                "Version": "1.28.1+gateway",
                "APIVersion": 131840.0,
                "BlockDelay": block_delay.to_string(),
            }),
        }
    }

    /// The path of the daemon's own readiness check: Lotus's `/health/readyz` on its API port;
    /// Forest's `/readyz` (on a port of its own on a real Forest, on the RPC port here).
    pub fn health_path(&self) -> Option<&'static str> {
        match self {
            Profile::Lotus => Some("/health/readyz"),
            Profile::Forest => Some("/readyz?verbose"),
            _ => None,
        }
    }

    /// Whether the implementation has this method at all. Forest removed `Filecoin.SyncState`
    /// in v0.26.1 in favour of `Forest.SyncStatus`; it has no `ChainBlockstoreInfo` (recorded).
    pub fn has_method(&self, method: &str) -> bool {
        match method {
            "Filecoin.ChainBlockstoreInfo" => *self != Profile::Forest,
            "Filecoin.NodeStatus" => !matches!(self, Profile::Fuhon | Profile::Minimal),
            "Filecoin.SyncState" => !matches!(self, Profile::Forest | Profile::Minimal),
            "Forest.SyncStatus" => *self == Profile::Forest,
            "Filecoin.StateNetworkName" | "Filecoin.NetPeers" => *self != Profile::Minimal,
            // F3 (Lotus 1.31+, Forest, Venus 1.16+); Fuhon and gateways have none of it.
            "Filecoin.F3GetLatestCertificate"
            | "Filecoin.F3GetProgress"
            | "Filecoin.F3IsRunning"
            | "Filecoin.F3GetManifest"
            | "Filecoin.ChainGetFinalizedTipSet"
            | "Filecoin.ChainGetTipSetFinalityStatus" => {
                !matches!(self, Profile::Fuhon | Profile::Minimal)
            }
            _ => true,
        }
    }

    /// Methods that exist on one API path only: `ChainGetTipSetFinalityStatus` on `/rpc/v2`
    /// (a real Forest 0.39 answers -32601 on v1, shared/daemons), and v2 serves nothing else
    /// the simulator plays but `Version`, `ChainHead` and `ChainGetTipSet` (by tag).
    pub fn has_method_on(&self, method: &str, api: ApiPath) -> bool {
        match (method, api) {
            ("Filecoin.ChainGetTipSetFinalityStatus", ApiPath::V2) => true,
            ("Filecoin.ChainGetTipSetFinalityStatus", _) => false,
            (_, ApiPath::V2) => {
                matches!(
                    method,
                    "Filecoin.Version" | "Filecoin.ChainHead" | "Filecoin.ChainGetTipSet"
                )
            }
            _ => true,
        }
    }

    /// `NetPeers` without a peer: Forest writes the empty list as `null` (recorded).
    pub fn no_peers(&self) -> Value {
        match self {
            Profile::Forest => Value::Null,
            _ => json!([]),
        }
    }

    /// The error an F3 method answers in this F3 state, if it answers one:
    /// - Forest without its sidecar (not running, or turned off) answers every F3 method
    ///   `-32603 "client error (Connect)"`, `F3IsRunning` included (recorded, shared/daemons);
    /// - Lotus with F3 disabled answers every one code 4 "f3 is disabled" (`api.EF3Disabled`);
    ///   not running, the certificate answers code 1 "f3 is not running" (go-f3
    ///   `ErrF3NotRunning`, unregistered in go-jsonrpc), while `F3IsRunning` says `false`,
    ///   `F3GetProgress` the zero value and `F3GetManifest` the static manifest
    ///   (node/impl/full/f3.go, chain/lf3/f3.go at Lotus b835fab; go-f3 v0.8.12).
    pub(crate) fn f3_refusal(&self, state: F3State, method: &str) -> Option<Value> {
        if !method.starts_with("Filecoin.F3") {
            return None;
        }
        let (code, message) = match (self, state) {
            (_, F3State::Running | F3State::Fresh) => return None,
            (Profile::Forest, _) => (-32603, "client error (Connect)"),
            (_, F3State::Disabled) => (4, "f3 is disabled"),
            (_, F3State::NotRunning) => match method {
                "Filecoin.F3IsRunning" | "Filecoin.F3GetProgress" | "Filecoin.F3GetManifest" => {
                    return None
                }
                _ => (1, "f3 is not running"),
            },
        };
        Some(json!({"code": code, "message": message}))
    }

    /// A call the token's permissions do not cover (`need` is the permission the method
    /// needs): go-jsonrpc (Lotus, Venus) answers code 1 and names the method without its
    /// namespace; Forest -32003 with the full name (recorded from Forest 0.39 with a token
    /// made by `AuthNew(["read"])`).
    pub fn missing_permission(&self, id: &Value, method: &str, need: &str) -> (StatusCode, Value) {
        let (code, named) = match self {
            Profile::Forest => (-32003, method),
            _ => (1, method.trim_start_matches("Filecoin.")),
        };
        (
            StatusCode::OK,
            json!({"jsonrpc":"2.0","id":id,"error":{"code":code,"message":format!("missing permission to invoke '{named}' (need '{need}')")}}),
        )
    }

    /// The reply to a method the implementation does not have: go-jsonrpc (Lotus, Venus) sends
    /// HTTP 500 with -32601 and its own wording; Forest (jsonrpsee) HTTP 200 with "Method not
    /// found".
    pub fn method_not_found(&self, id: &Value, method: &str) -> (StatusCode, Value) {
        match self {
            Profile::Forest => (
                StatusCode::OK,
                json!({"jsonrpc":"2.0","id":id,"error":{"code":-32601,"message":"Method not found"}}),
            ),
            // No code at all, as some gateways answer.
            Profile::Minimal => (
                StatusCode::OK,
                json!({"jsonrpc":"2.0","id":id,"error":{"message":format!("method {method} not supported by this gateway")}}),
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"jsonrpc":"2.0","id":id,"error":{"code":-32601,"message":format!("method '{method}' not found")}}),
            ),
        }
    }
}

//! Methods and endpoints whose shape comes from the recorded replies of a real Forest 0.39
//! (`shared/daemons/forest-0.39.0`), checked by `tests/sim_fidelity.rs`: the node's own view of
//! its health (`NodeStatus`, the health endpoints), `Forest.SyncStatus`, the `/rpc/v2`
//! tipset by tag, and the small read methods an operator's tools call.

use std::time::SystemTime;

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::{chain, Faults, SimNode};
use crate::profile::{ApiPath, Profile};

/// Forest's readiness allows a head this many epochs behind the clock (forest
/// src/health/endpoints.rs `MAX_EPOCH_DIFF`); Lotus's readyz wants `Behind` under 5 too.
const READY_EPOCHS: u64 = 5;

/// Forest's sync status words.
fn forest_status(f: &Faults, behind: u64) -> &'static str {
    if f.peers == 0 {
        // Alone, a Forest never learns the network's head (recorded: "Initializing").
        "Initializing"
    } else if f.syncing {
        "Syncing"
    } else if behind > READY_EPOCHS {
        "Offline"
    } else {
        "Synced"
    }
}

/// A JSON-RPC error: code and message.
pub(super) type Refusal = (i64, String);

impl SimNode {
    fn behind_clock(&self, f: &Faults, now: SystemTime) -> (u64, u64) {
        let height = self.height_with(f, now);
        let clock = self.shared.clock.height_at(now);
        (height, clock.saturating_sub(height))
    }

    /// The recorded methods; `None` for any other.
    pub(super) fn recorded_result(
        &self,
        api: ApiPath,
        f: &Faults,
        method: &str,
        params: &Value,
    ) -> Option<Result<Value, Refusal>> {
        let now = SystemTime::now();
        let (height, behind) = self.behind_clock(f, now);
        Some(Ok(match method {
            "Filecoin.NodeStatus" => return Some(self.node_status(f, params, height, behind)),
            "Forest.SyncStatus" => self.forest_sync_status(f, height, behind),
            "Filecoin.ChainGetTipSet" if api == ApiPath::V2 => {
                return Some(self.tipset_by_tag(f, params, height))
            }
            "Filecoin.StateNetworkVersion" => json!(25),
            // Any token is accepted where none is configured; else only the pool's.
            "Filecoin.AuthVerify" => match params.get(0).and_then(Value::as_str) {
                Some(t) if f.read_token.as_deref() == Some(t) => json!(["read"]),
                Some(t) if f.token.as_deref().is_none_or(|want| want == t) => {
                    json!(["read", "write", "sign", "admin"])
                }
                _ => {
                    return Some(Err((
                        1,
                        "JWT Verification failed: signature is invalid".into(),
                    )))
                }
            },
            "Filecoin.MpoolPending" => json!([]),
            // 314159 is calibnet's chain id; the simulator's chain has one of its own.
            "eth_chainId" => json!("0x7a69"),
            "eth_blockNumber" => json!(format!("{height:#x}")),
            "eth_syncing" if !f.syncing => {
                return Some(Err((-32603, "node is not syncing".into())))
            }
            "eth_syncing" => json!({
                "startingBlock": "0x0",
                "currentBlock": format!("{height:#x}"),
                "highestBlock": format!("{:#x}", height + behind),
            }),
            _ => return None,
        }))
    }

    /// `Filecoin.NodeStatus(inclChainStatus)`: Forest refuses the call without its parameter,
    /// in jsonrpsee's words (recorded).
    fn node_status(
        &self,
        f: &Faults,
        params: &Value,
        height: u64,
        behind: u64,
    ) -> Result<Value, Refusal> {
        if self.profile == Profile::Forest && !params.get(0).is_some_and(Value::is_boolean) {
            return Err((
                -32602,
                "JSON-RPC error:\n\tcode: -32602\n\tmessage: missing required parameter\n\tdata: {\"index\":0,\"n_required\":1,\"name\":\"inclChainStatus\",\"type\":\"forest::lotus_json::LotusJson<bool>\"}\n".into(),
            ));
        }
        Ok(json!({
            "SyncStatus": {"Epoch": height, "Behind": behind},
            "PeerStatus": {"PeersToPublishMsgs": f.peers, "PeersToPublishBlocks": f.peers},
            "ChainStatus": {"BlocksPerTipsetLast100": 2.5, "BlocksPerTipsetLastFinality": 2.5}
        }))
    }

    /// Forest's replacement for SyncState, camelCase. Alone, it has not learned the network's
    /// head: the head key is `null` and the network head is its own (recorded).
    fn forest_sync_status(&self, f: &Faults, height: u64, behind: u64) -> Value {
        let alone = f.peers == 0;
        json!({
            "status": forest_status(f, behind),
            "currentHeadEpoch": height,
            "currentHeadKey": if alone { Value::Null } else { self.tipset(f, height)["Cids"].clone() },
            "networkHeadEpoch": if alone { height } else { height + behind },
            "epochsBehind": if alone { 0 } else { behind },
            "activeForks": [],
            "nodeStartTime": "2026-11-25T09:00:00.000000000Z",
            "lastUpdated": "2026-11-25T09:00:00.000000000Z"
        })
    }

    /// `/rpc/v2` `Filecoin.ChainGetTipSet({"tag": "latest" | "finalized" | "safe"})`.
    fn tipset_by_tag(&self, f: &Faults, params: &Value, height: u64) -> Result<Value, Refusal> {
        let head = chain::last_tipset_height(height, self.shared.null_rounds);
        let finalized = self
            .finality_result(f, "Filecoin.ChainGetFinalizedTipSet", &Value::Null)
            .and_then(Result::ok);
        match params[0]["tag"].as_str() {
            Some("latest") => Ok(self.head_tipset(f, head)),
            Some("finalized" | "safe") => Ok(finalized.unwrap_or_else(|| self.tipset(f, 0))),
            _ => Err((-32602, "invalid tipset selector".into())),
        }
    }

    /// The daemon's own health endpoint, as Forest words it (`?verbose`: one line per check,
    /// `[+]` passed, `[!]` failed; else "OK" or "ERROR") and Lotus answers it (status only).
    pub(super) fn health_reply(&self, path: &str, verbose: bool) -> (StatusCode, String) {
        let f = self.faults.lock().expect("faults lock").clone();
        let (_, behind) = self.behind_clock(&f, SystemTime::now());
        let status = forest_status(&f, behind);
        let sync_ok = ("sync ok", true);
        let peers = if f.peers > 0 {
            ("peers connected", true)
        } else {
            ("no peers connected", false)
        };
        let rpc = ("rpc server running", true);
        let synced = if status == "Synced" {
            ("sync complete", true)
        } else {
            ("sync incomplete", false)
        };
        let epoch = if behind <= READY_EPOCHS {
            ("epoch up to date", true)
        } else {
            ("epoch outdated", false)
        };
        // A Forest without its F3 sidecar reports F3 as disabled, which passes (recorded).
        let f3 = if f.f3.finalizes() {
            ("f3 running", true)
        } else {
            ("f3 disabled", true)
        };
        let checks: Vec<(&str, bool)> = match path {
            "/livez" | "/health/livez" => vec![sync_ok, peers, rpc],
            "/readyz" | "/health/readyz" => vec![synced, epoch, rpc, f3],
            _ => vec![epoch, rpc, sync_ok, peers, f3],
        };
        let ok = checks.iter().all(|c| c.1);
        let code = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = if self.profile != Profile::Forest {
            String::new()
        } else if verbose {
            checks
                .iter()
                .map(|(what, ok)| format!("[{}] {what}", if *ok { '+' } else { '!' }))
                .collect::<Vec<_>>()
                .join("\n")
        } else if ok {
            "OK".into()
        } else {
            "ERROR".into()
        };
        (code, body)
    }
}

//! The simulator's `forest` profile against what a real Forest 0.39.0 answered
//! (`../shared/daemons/forest-0.39.0/replies-*.json`: one daemon with a peer, one alone).
//!
//! Every recorded request is sent to a simulated Forest in the same state (head at genesis, F3
//! sidecar down, the same number of peers), and the replies are compared method by method:
//! the same HTTP status, the same fields, the same JSON types, the same nulls, the same error
//! codes, and the same words for errors that do not depend on the chain. Values that depend on
//! the chain (CIDs, heights, names) may differ. Where the two differ, the recording wins: this
//! test is the guard that keeps the simulator honest.

mod common;

use std::path::PathBuf;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

fn recording(name: &str) -> Option<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/daemons/forest-0.39.0")
        .join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).expect("the recording is JSON")),
        Err(_) => {
            skip(&format!("{} is not beside the checkout", path.display()));
            None
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Where `sim` differs from `real` in shape: fields, JSON types, nulls. Arrays are compared by
/// their first elements (their length depends on the chain).
fn shape_diff(at: &str, real: &Value, sim: &Value, out: &mut Vec<String>) {
    if kind(real) != kind(sim) {
        out.push(format!(
            "{at}: real {} ({real}), sim {}",
            kind(real),
            kind(sim)
        ));
        return;
    }
    match (real, sim) {
        (Value::Object(r), Value::Object(s)) => {
            for (k, rv) in r {
                match s.get(k) {
                    Some(sv) => shape_diff(&format!("{at}.{k}"), rv, sv, out),
                    None => out.push(format!("{at}.{k}: missing in the simulator")),
                }
            }
            for k in s.keys().filter(|k| !r.contains_key(*k)) {
                out.push(format!("{at}.{k}: only in the simulator"));
            }
        }
        (Value::Array(r), Value::Array(s)) => {
            if let (Some(rv), Some(sv)) = (r.first(), s.first()) {
                shape_diff(&format!("{at}[0]"), rv, sv, out);
            }
        }
        _ => {}
    }
}

/// Words that do not depend on the chain, compared exactly: error messages, the version.
fn exact_diff(method: &str, real: &Value, sim: &Value, out: &mut Vec<String>) {
    if let Some(e) = real.get("error") {
        if e != &sim["error"] {
            out.push(format!(
                "{method}: error {e}, sim {}",
                sim.get("error").unwrap_or(&Value::Null)
            ));
        }
    }
    if method == "Filecoin.Version" && real["result"] != sim["result"] {
        out.push(format!(
            "{method}: {} vs sim {}",
            real["result"], sim["result"]
        ));
    }
}

/// A simulated Forest as the recorded one was: head at genesis (a long block delay keeps it
/// there while the test runs), F3 sidecar down, `peers` peers.
async fn forest_like(peers: u64) -> Sim {
    let sim = Sim::start_args(&[
        "--nodes",
        "forest-0:forest",
        "--block-delay",
        "600s",
        "--start-height",
        "0",
    ]);
    sim.op("forest-0", r#"{"op":"f3_down"}"#).await;
    sim.op("forest-0", &format!(r#"{{"op":"peers","count":{peers}}}"#))
        .await;
    sim
}

async fn compare_rpc(rec: &Value, sim: &Sim, out: &mut Vec<String>) -> usize {
    let client = reqwest::Client::new();
    let mut compared = 0;
    for r in rec["records"].as_array().expect("records") {
        let (Some(path), Some(request)) = (r["path"].as_str(), r.get("request")) else {
            continue;
        };
        let method = request["method"].as_str().expect("method");
        let mut req = client
            .post(format!("http://{}{path}", sim.addr("forest-0")))
            .header("content-type", "application/json")
            .body(request.to_string());
        if r["auth"] == true {
            req = req.bearer_auth("a-token");
        }
        let resp = req.send().await.expect("the simulator answers");
        let status = resp.status().as_u16();
        let body = resp.text().await.expect("body");
        let at = format!("{path} {method} {}", request["params"]);
        if Some(u64::from(status)) != r["http_status"].as_u64() {
            out.push(format!("{at}: HTTP {status}, real {}", r["http_status"]));
        }
        let real: Value = serde_json::from_str(r["reply"].as_str().expect("reply")).expect("json");
        let Ok(got) = serde_json::from_str::<Value>(&body) else {
            out.push(format!("{at}: not JSON: {body}"));
            continue;
        };
        shape_diff(&at, &real, &got, out);
        exact_diff(&at, &real, &got, out);
        compared += 1;
    }
    compared
}

/// The health endpoints: the same status codes and, with `?verbose`, the same checks, on a
/// simulated Forest that is behind by the clock as the recorded one is.
async fn compare_health(rec: &Value, peers: u64, out: &mut Vec<String>) {
    let sim = Sim::start_args(&["--nodes", "forest-0:forest", "--block-delay", "30s"]);
    sim.op("forest-0", r#"{"op":"f3_down"}"#).await;
    sim.op("forest-0", r#"{"op":"lag","epochs":500}"#).await;
    sim.op("forest-0", &format!(r#"{{"op":"peers","count":{peers}}}"#))
        .await;
    let client = reqwest::Client::new();
    let checks = |text: &str| -> Vec<String> {
        let mut c: Vec<String> = text.lines().map(str::to_string).collect();
        c.sort();
        c
    };
    for r in rec["records"].as_array().expect("records") {
        let Some(path) = r["health"].as_str() else {
            continue;
        };
        let resp = client
            .get(format!("http://{}{path}", sim.addr("forest-0")))
            .send()
            .await
            .expect("health answers");
        let status = resp.status().as_u16();
        let body = resp.text().await.expect("body");
        let real = r["reply"].as_str().expect("reply");
        if Some(u64::from(status)) != r["http_status"].as_u64() {
            out.push(format!("{path}: HTTP {status}, real {}", r["http_status"]));
        }
        if checks(real) != checks(&body) {
            out.push(format!("{path}: {body:?}, real {real:?}"));
        }
    }
}

/// The ChainNotify subscription: the channel reply, then `current` with the head tipset.
async fn compare_push(rec: &Value, sim: &Sim, out: &mut Vec<String>) {
    let Some(r) = rec["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r.get("websocket").is_some())
    else {
        out.push("the recording has no ChainNotify".into());
        return;
    };
    let url = format!("ws://{}/rpc/v1", sim.addr("forest-0"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    ws.send(Message::Text(r["request"].to_string().into()))
        .await
        .expect("send");
    for (i, frame) in r["frames"].as_array().expect("frames").iter().enumerate() {
        let real: Value = serde_json::from_str(frame.as_str().expect("text")).expect("json");
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        let got: Value = serde_json::from_str(got.to_text().expect("text")).expect("json");
        shape_diff(&format!("ChainNotify frame {i}"), &real, &got, out);
    }
}

async fn fidelity(file: &str, peers: u64) {
    let Some(rec) = recording(file) else {
        return;
    };
    let sim = forest_like(peers).await;
    let mut diffs = Vec::new();
    let compared = compare_rpc(&rec, &sim, &mut diffs).await;
    assert!(compared >= 40, "only {compared} requests compared");
    compare_push(&rec, &sim, &mut diffs).await;
    compare_health(&rec, peers, &mut diffs).await;
    assert!(
        diffs.is_empty(),
        "the simulator's forest profile differs from the recording {file}:\n{}",
        diffs.join("\n")
    );
}

#[tokio::test]
async fn the_forest_profile_answers_as_a_real_forest_with_a_peer() {
    fidelity("replies-calibnet-genesis-1peer.json", 1).await;
}

#[tokio::test]
async fn the_forest_profile_answers_as_a_real_forest_alone() {
    fidelity("replies-calibnet-genesis-0peers.json", 0).await;
}

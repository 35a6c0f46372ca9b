//! The four daemon implementations and the chain-aware rules, through `chain-co check` against
//! the simulator (each implementation's wire differences are in `src/sim/profile.rs`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.sim.token";

/// A config for every node of `sim`, each with the shared token unless `token` is false.
fn config(dir: &Path, sim: &Sim, token: bool, extra: &str) -> PathBuf {
    let token_file = dir.join("pool.token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let mut text = String::new();
    for n in &sim.ready.nodes {
        // Fuhon is given as an http:// URL on purpose: chain-co must find out it speaks ws only.
        let url = n.url.replace("ws://", "http://");
        text.push_str(&format!(
            "[[node]]\nname = \"{}\"\nurl = \"{url}\"\n",
            n.name
        ));
        if token {
            text.push_str(&format!(
                "token_file = {:?}\n",
                token_file.display().to_string()
            ));
        }
    }
    text.push_str(&format!(
        "[nginx]\noutput = \"/nonexistent/upstream.conf\"\n{extra}\n"
    ));
    let path = dir.join("chain-co.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn check(config: &Path, rounds: u32) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(BIN)
        .args([
            "check",
            "--json",
            "--rounds",
            &rounds.to_string(),
            "--config",
        ])
        .arg(config)
        .output()
        .expect("run check");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

fn node<'a>(json: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    json["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {json:#}"))
}

fn mixed_pool() -> Sim {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("t");
    std::fs::write(&token, TOKEN).expect("token");
    let sim = Sim::start_args(&[
        "--nodes",
        "lotus-a:lotus,venus-b:venus,forest-c:forest,fuhon-d:fuhon",
        "--block-delay",
        "1s",
        "--token-file",
        token.to_str().expect("utf-8"),
    ]);
    sim
}

#[test]
fn a_mixed_pool_is_probed_in_each_implementations_terms() {
    let sim = mixed_pool();
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, json) = check(&config(dir.path(), &sim, true, ""), 2);
    assert_eq!(code, Some(0), "{json:#}");
    for (name, imp, version) in [
        ("lotus-a", "lotus", "1.28.1+mainnet"),
        ("venus-b", "venus", "1.20.0+git"),
        ("forest-c", "forest", "0.39.0+git"),
        ("fuhon-d", "fuhon", "Fuhon Node"),
    ] {
        let n = node(&json, name);
        assert_eq!(n["implementation"], imp, "{n:#}");
        assert!(
            n["version"].as_str().expect("version").starts_with(version),
            "{n:#}"
        );
        assert_eq!(n["healthy"], true, "{n:#}");
        assert_eq!(n["network"], "simnet");
    }
    // Equal heads: lotus-a, first in config order (another only if a probe round straddled an
    // epoch boundary).
    assert!(json["primary"].is_string(), "{json:#}");
    assert_eq!(json["backups"].as_array().expect("backups").len(), 3);
    assert_ne!(json["backups"][0], "lotus-a");
    assert!(
        json["warnings"].as_array().expect("warnings").is_empty(),
        "{json:#}"
    );
    // No token in anything chain-co prints.
    assert!(!json.to_string().contains(TOKEN));
}

#[test]
fn venus_without_a_token_is_refused_and_the_reason_says_what_to_do() {
    let sim = mixed_pool();
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, json) = check(&config(dir.path(), &sim, false, ""), 2);
    assert_eq!(code, Some(0));
    let venus = node(&json, "venus-b");
    assert_eq!(venus["healthy"], false);
    assert!(venus["reason"]
        .as_str()
        .expect("reason")
        .contains("HTTP 401 from daemon (token missing or rejected)"));
    for other in ["lotus-a", "forest-c", "fuhon-d"] {
        assert_eq!(
            node(&json, other)["healthy"],
            true,
            "{other} allows reads without a token"
        );
    }
    let warning = json["warnings"][0].as_str().expect("a warning");
    assert!(
        warning.contains("venus-b rejected the configured token")
            && warning.contains("share the JWT secret")
    );
}

#[tokio::test]
async fn wrong_network_future_head_and_fork_are_excluded_with_reasons() {
    let sim = Sim::start_args(&[
        "--nodes",
        "a,b,c,d,e",
        "--block-delay",
        "1s",
        "--null-rounds",
    ]);
    sim.op("c", r#"{"op":"network","name":"calibrationnet"}"#)
        .await;
    sim.op("d", r#"{"op":"future","epochs":10}"#).await;
    sim.op("b", r#"{"op":"fork"}"#).await;
    // Let the fork grow deeper than max_lag (1) before looking.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        &sim,
        false,
        "[select]\nmax_lag = 1\nrise = 1\nfall = 1\n",
    );
    let (code, json) = check(&cfg, 15);
    assert_eq!(code, Some(0), "{json:#}");
    let reason = |n: &str| {
        node(&json, n)["reason"]
            .as_str()
            .expect("reason")
            .to_string()
    };
    assert!(
        reason("c").contains("on network \"calibrationnet\", the pool is on \"simnet\""),
        "{}",
        reason("c")
    );
    assert!(
        reason("d").contains("head from the future"),
        "{}",
        reason("d")
    );
    // The fork left the chain before what F3 (simulated) then finalized: finality catches it
    // first; without F3 the fork rule does.
    assert!(
        reason("b").contains("on a lighter fork")
            || reason("b").contains("conflicts with the finalized tipset"),
        "{}",
        reason("b")
    );
    let primary = json["primary"].as_str().expect("a primary");
    assert!(primary == "a" || primary == "e", "{json:#}");
    assert_eq!(
        json["backups"].as_array().expect("backups").len(),
        1,
        "{json:#}"
    );
    assert_eq!(json["network"], "simnet");
}

#[tokio::test]
async fn a_stuck_pool_is_reported_stale_and_nothing_is_published() {
    let sim = Sim::start(&["a", "b"], "1s");
    sim.op("a", r#"{"op":"stall"}"#).await;
    sim.op("b", r#"{"op":"stall"}"#).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &sim, false, "[select]\nstale_after = \"3s\"\n");
    let (code, json) = check(&cfg, 2);
    assert_eq!(code, Some(1), "{json:#}");
    assert!(json["primary"].is_null());
    let reason = node(&json, "a")["reason"]
        .as_str()
        .expect("reason")
        .to_string();
    assert!(reason.starts_with("stale: head is"), "{reason}");
    let w = json["warnings"][0].as_str().expect("warning");
    assert!(w.contains("pool is stale"), "{w}");
}

#[tokio::test]
async fn a_node_catching_up_or_without_peers_is_not_made_primary() {
    let sim = Sim::start_args(&["--nodes", "a:forest,b,c", "--block-delay", "1s"]);
    sim.op("a", r#"{"op":"syncing","epochs":2}"#).await;
    sim.op("b", r#"{"op":"peers","count":0}"#).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, json) = check(&config(dir.path(), &sim, false, ""), 2);
    assert_eq!(code, Some(0), "{json:#}");
    assert_eq!(json["primary"], "c");
    let reason = |n: &str| {
        node(&json, n)["reason"]
            .as_str()
            .expect("reason")
            .to_string()
    };
    assert!(
        reason("a").contains("not promoted to primary: catching up"),
        "{}",
        reason("a")
    );
    assert!(
        reason("b").contains("not promoted to primary: 0 peers (min 1)"),
        "{}",
        reason("b")
    );
}

/// Gateways and other Lotus-API servers implement less of the API and type it loosely (no
/// StateNetworkName, NetPeers or SyncState; numbers as floats and strings; errors without a
/// code). A pool of them is used, and what they lack is shown, never held against them.
#[test]
fn a_pool_of_minimal_daemons_is_used() {
    let sim = Sim::start_args(&[
        "--nodes",
        "m1:minimal,m2:minimal,m3:minimal",
        "--block-delay",
        "1s",
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, json) = check(&config(dir.path(), &sim, false, ""), 2);
    assert_eq!(code, Some(0), "{json:#}");
    for name in ["m1", "m2", "m3"] {
        let n = node(&json, name);
        assert_eq!(n["healthy"], true, "{n:#}");
        let unsupported = n["unsupported"].to_string();
        for m in ["StateNetworkName", "NetPeers", "SyncState"] {
            assert!(unsupported.contains(m), "{n:#}");
        }
    }
    assert_eq!(json["backups"].as_array().expect("backups").len(), 2);
}

/// Without network names, nodes on different chains are told apart by their genesis block.
#[tokio::test]
async fn minimal_daemons_on_another_chain_are_told_apart_by_genesis() {
    let sim = Sim::start_args(&[
        "--nodes",
        "m1:minimal,m2:minimal,m3:minimal",
        "--block-delay",
        "1s",
    ]);
    sim.op("m3", r#"{"op":"network","name":"otherchain"}"#)
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, json) = check(&config(dir.path(), &sim, false, ""), 2);
    assert_eq!(code, Some(0), "{json:#}");
    let m3 = node(&json, "m3");
    assert_eq!(m3["healthy"], false, "{m3:#}");
    assert!(
        m3["reason"].as_str().expect("reason").contains("genesis"),
        "{m3:#}"
    );
    assert_eq!(node(&json, "m1")["healthy"], true);
    // One against one: chain-co cannot tell which chain is right, and says so.
    let sim = Sim::start_args(&["--nodes", "m1:minimal,m2:minimal", "--block-delay", "1s"]);
    sim.op("m2", r#"{"op":"network","name":"otherchain"}"#)
        .await;
    let (code, json) = check(&config(dir.path(), &sim, false, ""), 2);
    assert_eq!(code, Some(1), "{json:#}");
    assert!(json["warnings"].to_string().contains("genesis"), "{json:#}");
}

/// A Lotus-API server of another project refuses what it lacks in its own words, with a
/// parse-error code: the checks those methods serve are off for it, and it is used.
#[tokio::test]
async fn optional_methods_refused_in_any_words_turn_their_check_off() {
    let sim = Sim::start(&["a", "b", "c"], "1s");
    for method in [
        "Filecoin.StateNetworkName",
        "Filecoin.NetPeers",
        "Filecoin.SyncState",
        "Forest.SyncStatus",
        "Filecoin.NodeStatus",
    ] {
        let op = serde_json::json!({
            "op": "refuse",
            "method": method,
            "code": -32700,
            "message": format!("parse error: call {method} is unknown to this server"),
        });
        sim.op("c", &op.to_string()).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, json) = check(&config(dir.path(), &sim, false, ""), 2);
    assert_eq!(code, Some(0), "{json:#}");
    let c = node(&json, "c");
    assert_eq!(c["healthy"], true, "{c:#}");
    let unsupported = c["unsupported"].to_string();
    for m in ["StateNetworkName", "NetPeers", "SyncState", "NodeStatus"] {
        assert!(unsupported.contains(m), "{c:#}");
    }
    assert_eq!(
        json["backups"].as_array().expect("backups").len(),
        2,
        "{json:#}"
    );
}

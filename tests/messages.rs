//! A switch loses no message a node still holds: a miner sends through nginx to a primary
//! whose pubsub is broken, the primary stalls, chain-co moves the miner, and the pending
//! messages follow to the new primary (`[messages]`), so the miner's next message takes the
//! right nonce. Without `[messages]`, the new primary hands the same nonces out again.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const SENDER: &str = "f3minerworker";

async fn rpc(url: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let text = reqwest::Client::new()
        .post(url)
        .header("authorization", "Bearer write-token")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("daemon answers")
        .text()
        .await
        .expect("a body");
    serde_json::from_str(&text).expect("JSON")
}

async fn nonce(url: &str) -> u64 {
    rpc(url, "Filecoin.MpoolGetNonce", json!([SENDER])).await["result"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

/// What the miner does: `MpoolPushMessage` through nginx; the nonce it was given.
async fn send(nginx_url: &str, i: u64) -> u64 {
    let msg = json!({"From": SENDER, "To": "f01000", "Method": 5, "Params": format!("p{i}"), "Value": "0"});
    let reply = rpc(nginx_url, "Filecoin.MpoolPushMessage", json!([msg, null])).await;
    reply["result"]["Message"]["Nonce"]
        .as_u64()
        .unwrap_or_else(|| panic!("not pushed: {reply}"))
}

/// The pool and a running chain-co; `messages` adds the `[messages]` section; `refuse` makes
/// every node but the first primary answer `MpoolPush` with an error.
async fn scenario(messages: bool, refuse: bool) -> (u64, u64, serde_json::Value, String) {
    let sim = Sim::start(&["a", "b", "c"], "1s");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let nginx = start_nginx(dir, &[sim.addr("a")]);
    let token = dir.join("write.token");
    std::fs::write(&token, "write-token\n").expect("token");
    let mut text = config_text(
        dir,
        &sim,
        &nginx,
        "[probe]\ninterval = \"300ms\"\ntimeout = \"250ms\"\n[select]\nrise = 2\nfall = 2\nlag_grace = \"1s\"\n",
    );
    if messages {
        text = text.replace(
            "[[node]]\n",
            &format!(
                "[[node]]\nwrite_token_file = {:?}\n",
                token.display().to_string()
            ),
        );
        text.push_str(&format!("[messages]\naddresses = [\"{SENDER}\"]\n"));
    }
    let config = dir.join("chain-co.toml");
    std::fs::write(&config, text).expect("config");
    let run = start_run(&config);
    let api = api_url(&run).await;
    wait_healthy(&api, &run).await;
    let primary = primary_name(&sim, &nginx.upstream_file);
    let through = nginx.rpc_url();
    // Its pubsub breaks; the miner sends three messages through nginx to it.
    sim.op(&primary, r#"{"op":"gossip_cut"}"#).await;
    for i in 0..3 {
        assert_eq!(send(&through, i).await, i);
    }
    if refuse {
        for n in others(&sim, &primary) {
            sim.op(
                n,
                r#"{"op":"refuse","method":"Filecoin.MpoolPush","code":1,"message":"mpool is full"}"#,
            )
            .await;
        }
    }
    let other = others(&sim, &primary)[0].to_string();
    assert_eq!(
        nonce(&sim.node(&other).url).await,
        0,
        "nobody else has them"
    );
    // It stalls: chain-co moves the miner.
    sim.op(&primary, r#"{"op":"stall"}"#).await;
    let moved = wait_until(Duration::from_secs(15), || {
        primary_in(&nginx.upstream_file).is_some_and(|p| p != sim.addr(&primary))
    })
    .await;
    assert!(moved.is_some(), "{}", run.stderr());
    let new = primary_name(&sim, &nginx.upstream_file);
    let new_url = sim.node(&new).url.clone();
    // With [messages], the new primary's nonce is right within a few seconds.
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(5) && nonce(&new_url).await < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let right_after = start.elapsed();
    let next = send(&through, 3).await;
    let conflicts: u64 = sim_nodes(&sim)
        .await
        .iter()
        .map(|n| n["nonce_conflicts"].as_u64().unwrap_or(0))
        .sum();
    println!(
        "messages: [messages] {}: new primary's nonce {} {:.0} ms after the switch was seen; next message nonce {next}; conflicts {conflicts}",
        if messages { "on" } else { "off" },
        if nonce(&new_url).await >= 3 { "right" } else { "still wrong" },
        right_after.as_secs_f64() * 1000.0
    );
    let status = status_json(&api).await;
    (next, nonce(&new_url).await, status, run.stderr())
}

#[tokio::test]
async fn pending_messages_follow_the_miner_to_the_new_primary() {
    let (next, after, status, log) = scenario(true, false).await;
    assert_eq!(
        next, 3,
        "the miner's next message takes the next nonce\n{log}"
    );
    assert_eq!(after, 4);
    let m = &status["messages"];
    assert_eq!(m["carried"], 3, "{status:#}");
    assert!(
        m["recent"][0]
            .as_str()
            .is_some_and(|l| l.contains(&format!("carried 3 messages of {SENDER}, nonces 0–2"))),
        "{status:#}"
    );
    assert!(log.contains("carried 3 messages"), "{log}");
}

/// The failure chain-co prevents, measured: without `[messages]` the new primary hands out
/// nonce 0 again, and the three messages the old primary holds can never all land.
#[tokio::test]
async fn without_messages_the_new_primary_reuses_the_nonces() {
    let (next, _, status, _) = scenario(false, false).await;
    assert_eq!(next, 0, "nonce reused");
    assert!(status.get("messages").is_none(), "{status:#}");
}

/// A new primary that refuses every `MpoolPush`: the switch still happens (the scenario
/// checks it), nothing is carried, and the refusal is reported once, in words.
#[tokio::test]
async fn a_node_refusing_every_message_is_reported_and_holds_nothing_up() {
    let (_, _, status, log) = scenario(true, true).await;
    let m = &status["messages"];
    assert_eq!(m["carried"], 0, "{status:#}");
    let problems = m["problems"].to_string();
    assert!(
        problems.contains("refused 3 of") && problems.contains("mpool is full"),
        "{status:#}\n{log}"
    );
}

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

/// The node nginx sends a request to now (`X-Sim-Node`).
async fn answering_node(nginx_url: &str) -> String {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "Filecoin.ChainHead", "params": []});
    reqwest::Client::new()
        .post(nginx_url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .ok()
        .and_then(|r| {
            r.headers()
                .get("x-sim-node")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// What the miner does: `MpoolPushMessage` through nginx; the nonce it was given.
async fn send(nginx_url: &str, i: u64) -> u64 {
    let msg = json!({"From": SENDER, "To": "f01000", "Method": 5, "Params": format!("p{i}"), "Value": "0"});
    let reply = rpc(nginx_url, "Filecoin.MpoolPushMessage", json!([msg, null])).await;
    reply["result"]["Message"]["Nonce"]
        .as_u64()
        .unwrap_or_else(|| panic!("not pushed: {reply}"))
}

/// Fast probes, a private nginx's config, and with `messages` a token file (`key` =
/// `write_token_file` or `token_file`, holding `token`) on every node plus the section
/// `messages`; written beside `dir`'s nginx. Returns the config's path.
fn messages_config(
    dir: &std::path::Path,
    sim: &Sim,
    nginx: &chain_co_sim::testbed::PrivateNginx,
    messages: Option<(&str, &str, &str)>,
) -> std::path::PathBuf {
    let mut text = config_text(
        dir,
        sim,
        nginx,
        "[probe]\ninterval = \"300ms\"\ntimeout = \"250ms\"\n[select]\nrise = 2\nfall = 2\nlag_grace = \"1s\"\n",
    );
    if let Some((key, token, section)) = messages {
        let file = dir.join(format!("{key}.token"));
        std::fs::write(&file, format!("{token}\n")).expect("token");
        text = text.replace(
            "[[node]]\n",
            &format!("[[node]]\n{key} = {:?}\n", file.display().to_string()),
        ) + &format!("[messages]\n{section}\n");
    }
    let config = dir.join("chain-co.toml");
    std::fs::write(&config, text).expect("config");
    config
}

/// chain-co running, healthy, over `sim` (nginx seeded with node a) with
/// `messages_config(.., messages)`; the temporary directory lives as long as what is returned.
async fn start_chain_co(
    sim: &Sim,
    messages: Option<(&str, &str, &str)>,
) -> (
    tempfile::TempDir,
    chain_co_sim::testbed::PrivateNginx,
    ChildGuard,
    String,
) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nginx = start_nginx(tmp.path(), &[sim.addr("a")]);
    let config = messages_config(tmp.path(), sim, &nginx, messages);
    let run = start_run(&config);
    let api = api_url(&run).await;
    wait_healthy(&api, &run).await;
    (tmp, nginx, run, api)
}

/// The pool and a running chain-co; `messages` adds the `[messages]` section; `refuse` makes
/// every node but the first primary answer `MpoolPush` with an error.
async fn scenario(messages: bool, refuse: bool) -> (u64, u64, serde_json::Value, String) {
    let sim = Sim::start(&["a", "b", "c"], "1s");
    let section = format!("addresses = [\"{SENDER}\"]");
    let (_tmp, nginx, run, api) = start_chain_co(
        &sim,
        messages.then_some(("write_token_file", "write-token", section.as_str())),
    )
    .await;
    let primary = primary_name(&sim, &nginx.upstream_file);
    let through = nginx.rpc_url();
    if refuse {
        for n in others(&sim, &primary) {
            sim.op(
                n,
                r#"{"op":"refuse","method":"Filecoin.MpoolPush","code":1,"message":"mpool is full"}"#,
            )
            .await;
        }
    }
    // Its pubsub breaks and the node stalls at once; the miner sends three messages through
    // nginx to it before chain-co moves it. No other node gets them by gossip; with
    // [messages] chain-co relays or carries them.
    sim.op(&primary, r#"{"op":"gossip_cut"}"#).await;
    sim.op(&primary, r#"{"op":"stall"}"#).await;
    for i in 0..3 {
        assert_eq!(send(&through, i).await, i);
    }
    if !messages {
        let other = others(&sim, &primary)[0].to_string();
        assert_eq!(
            nonce(&sim.node(&other).url).await,
            0,
            "nobody else has them"
        );
    }
    let moved = wait_until(Duration::from_secs(15), || {
        primary_in(&nginx.upstream_file).is_some_and(|p| p != sim.addr(&primary))
    })
    .await;
    assert!(moved.is_some(), "{}", run.stderr());
    let new = primary_name(&sim, &nginx.upstream_file);
    let new_url = sim.node(&new).url.clone();
    // The file is written before nginx reloads: wait until nginx itself sends there.
    for _ in 0..100 {
        if answering_node(&through).await == new {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
        match (messages, refuse) {
            (false, _) => "off",
            (true, false) => "on",
            (true, true) => "on, every MpoolPush refused",
        },
        if nonce(&new_url).await >= 3 { "right" } else { "still wrong" },
        right_after.as_secs_f64() * 1000.0
    );
    // A message that reached the old primary through an old nginx worker (its accept races
    // the reload) is relayed from it: wait a few rounds for it.
    let mut after = nonce(&new_url).await;
    for _ in 0..30 {
        if after > next || !messages {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = nonce(&new_url).await;
    }
    let status = status_json(&api).await;
    (next, after, status, run.stderr())
}

#[tokio::test]
async fn pending_messages_follow_the_miner_to_the_new_primary() {
    let (next, after, status, log) = scenario(true, false).await;
    assert_eq!(
        next, 3,
        "the miner's next message takes the next nonce\n{log}"
    );
    assert_eq!(after, 4, "{log}");
    let m = &status["messages"];
    assert!(m["carried"].as_u64() >= Some(3), "{status:#}");
    // Relayed between switches (the primary holds them alone) or carried at the switch,
    // whichever came first: the words say which.
    let recent = m["recent"].to_string();
    assert!(
        recent.contains(&format!(" of {SENDER}, nonce")),
        "{status:#}"
    );
    assert!(
        log.contains("relayed ") || log.contains("carried "),
        "{log}"
    );
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
        problems.contains("refused") && problems.contains("mpool is full"),
        "{status:#}\n{log}"
    );
    // Met every round by the levelling, said once per node.
    let said = log.matches("refused").filter(|_| true).count();
    assert!(said <= 4, "said {said} times:\n{log}");
}

/// `MpoolGetNonce` of `address` on the node at `url`.
async fn worker_nonce(url: &str, address: &str) -> u64 {
    rpc(url, "Filecoin.MpoolGetNonce", json!([address])).await["result"]
        .as_u64()
        .unwrap_or(0)
}

/// A miner-like sender pushes from the worker's ID address every second through nginx while
/// the primary, its pubsub broken, stalls and is replaced. With `messages`, the config has only
/// `[messages] miner`. Returns what the sender saw, the conflicts the simulator counted, how
/// many messages the new primary lacked when the switch was seen, and chain-co's log.
async fn sender_scenario(messages: bool) -> (chain_co_sim::testbed::SentLog, u64, u64, String) {
    use chain_co_sim::actors::{ACCOUNTS, MINER};
    let worker = ACCOUNTS[1].1;
    let sim = Sim::start(&["a", "b", "c"], "1s");
    let section = format!("miner = \"{MINER}\"");
    let (_tmp, nginx, run, api) = start_chain_co(
        &sim,
        messages.then_some(("write_token_file", "write-token", section.as_str())),
    )
    .await;
    if messages {
        // The accounts are resolved within a few rounds.
        let mut senders = Value::Null;
        for _ in 0..50 {
            senders = status_json(&api).await["messages"]["senders"].clone();
            if senders.as_array().is_some_and(|s| s.len() == 3) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let worker_entry = senders
            .as_array()
            .and_then(|s| s.iter().find(|s| s["address"] == worker))
            .unwrap_or_else(|| panic!("worker not followed: {senders}\n{}", run.stderr()));
        assert_eq!(worker_entry["also"], ACCOUNTS[1].2, "{senders}");
        assert_eq!(worker_entry["role"], "worker", "{senders}");
    }
    let primary = primary_name(&sim, &nginx.upstream_file);
    sim.op(&primary, r#"{"op":"gossip_cut"}"#).await;
    let sender = chain_co_sim::testbed::MessageSender::start(
        nginx.addr,
        worker,
        "write-token",
        Duration::from_secs(1),
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    sim.op(&primary, r#"{"op":"stall"}"#).await;
    let moved = wait_until(Duration::from_secs(15), || {
        primary_in(&nginx.upstream_file).is_some_and(|p| p != sim.addr(&primary))
    })
    .await;
    assert!(moved.is_some(), "{}", run.stderr());
    let seen = std::time::Instant::now();
    let new = primary_name(&sim, &nginx.upstream_file);
    let new_url = sim.node(&new).url.clone();
    let sent_so_far = sender.log().sent.len() as u64;
    let lacking = sent_so_far.saturating_sub(worker_nonce(&new_url, worker).await);
    // From the switch until the new primary's nonce counts every message sent before it.
    let mut right_after = None;
    while seen.elapsed() < Duration::from_secs(3) {
        if worker_nonce(&new_url, worker).await >= sent_so_far {
            right_after = Some(seen.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let log = sender.stop().await;
    let conflicts: u64 = sim_nodes(&sim)
        .await
        .iter()
        .map(|n| n["nonce_conflicts"].as_u64().unwrap_or(0))
        .sum();
    let answered: std::collections::BTreeSet<&str> =
        log.sent.iter().map(|(_, _, node)| node.as_str()).collect();
    println!(
        "messages: miner sender, [messages] {}: {} sent, {} failed, new primary lacked {lacking} when the switch was seen, its nonce right {}, {} nonces reused (each a message lost), {conflicts} conflicts, answered by {answered:?}",
        if messages { "miner only" } else { "off" },
        log.sent.len(),
        log.failed.len(),
        right_after.map_or("never (3 s)".to_string(), |d| format!("{} ms after", d.as_millis())),
        log.reused()
    );
    assert!(answered.len() >= 2, "the sender was moved: {log:?}");
    (log, conflicts, lacking, run.stderr())
}

/// `[messages] miner` alone: chain-co reads the worker from `StateMinerInfo`, learns its key
/// address, and follows messages naming the worker's ID address (as lotus-miner's do): no
/// nonce is handed out twice, and the simulator counts no conflict.
#[tokio::test]
async fn a_miner_id_is_enough_and_a_sender_through_the_switch_reuses_no_nonce() {
    let (log, conflicts, _, stderr) = sender_scenario(true).await;
    let nonces: Vec<u64> = log.sent.iter().map(|(_, n, _)| *n).collect();
    assert_eq!(log.reused(), 0, "nonces {nonces:?}\n{stderr}");
    assert_eq!(conflicts, 0, "nonces {nonces:?}\n{stderr}");
    assert_eq!(
        nonces,
        (0..nonces.len() as u64).collect::<Vec<_>>(),
        "consecutive"
    );
}

/// The same sender without `[messages]`: the new primary hands the cut primary's nonces out
/// again.
#[tokio::test]
async fn without_messages_a_sender_through_the_switch_reuses_nonces() {
    let (log, _, lacking, _) = sender_scenario(false).await;
    assert!(lacking > 0, "{log:?}");
    assert!(log.reused() > 0, "{log:?}");
}

/// Probe tokens are `read` tokens: with no `write_token_file`, chain-co says once at start,
/// per node, that it cannot carry messages there (`AuthVerify`), shows it in `/status`, and
/// the switch away from a stalled primary happens all the same.
#[tokio::test]
async fn a_read_only_token_is_said_at_start_and_never_holds_a_switch() {
    let sim = Sim::start(&["a", "b"], "1s");
    for n in ["a", "b"] {
        sim.op(n, r#"{"op":"read_token","token":"read-token"}"#)
            .await;
    }
    let section = format!("addresses = [\"{SENDER}\"]");
    let (_tmp, nginx, run, api) =
        start_chain_co(&sim, Some(("token_file", "read-token", section.as_str()))).await;
    let primary = primary_name(&sim, &nginx.upstream_file);
    // The read token cannot push: the simulator refuses as go-jsonrpc does.
    let refused = {
        let body =
            json!({"jsonrpc": "2.0", "id": 1, "method": "Filecoin.MpoolPush", "params": [{}]});
        reqwest::Client::new()
            .post(&sim.node(&primary).url)
            .header("authorization", "Bearer read-token")
            .body(body.to_string())
            .send()
            .await
            .expect("answers")
            .text()
            .await
            .expect("body")
    };
    assert!(
        refused.contains("missing permission to invoke 'MpoolPush' (need 'write')"),
        "{refused}"
    );
    // Messages the primary holds alone cannot be carried to b.
    sim.op(&primary, r#"{"op":"gossip_cut"}"#).await;
    sim.op(&primary, r#"{"op":"stall"}"#).await;
    for i in 0..2 {
        send(&nginx.rpc_url(), i).await;
    }
    let moved = wait_until(Duration::from_secs(15), || {
        primary_in(&nginx.upstream_file).is_some_and(|p| p != sim.addr(&primary))
    })
    .await;
    assert!(moved.is_some(), "the switch happens: {}", run.stderr());
    rounds_pass(&api, 3).await;
    assert_eq!(status_json(&api).await["messages"]["carried"], 0);
    let status = status_json(&api).await;
    let problems = status["messages"]["problems"].to_string();
    for n in ["a", "b"] {
        assert!(
            problems.contains(&format!(
                "cannot carry messages to {n}: its token lacks write"
            )),
            "{status:#}"
        );
    }
    let log = run.stderr();
    assert_eq!(
        log.matches("cannot carry messages to b: its token lacks write")
            .count(),
        1,
        "said once:\n{log}"
    );
}

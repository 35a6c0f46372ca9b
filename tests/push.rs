//! Push: ChainNotify subscriptions make a stalled primary visible at the physical limit (the
//! next tipset elsewhere + lag_grace), with polling as the fallback.

mod common;

use std::time::Duration;

use common::*;

/// Polling alone would take (max_lag + 1) block delays + fall × interval = 3 × 2 s + 3 × 5 s.
const SLOW_POLLING: &str = "[probe]\ninterval = \"5s\"\ntimeout = \"2s\"\n[select]\nrise = 1\nfall = 3\nlag_grace = \"1s\"\n";

async fn pool(
    ops: &[(&str, &str)],
    extra: &str,
) -> (
    tempfile::TempDir,
    Sim,
    chain_co_sim::testbed::PrivateNginx,
    ChildGuard,
    String,
) {
    pool_with(SLOW_POLLING, ops, extra).await
}

async fn pool_with(
    rules: &str,
    ops: &[(&str, &str)],
    extra: &str,
) -> (
    tempfile::TempDir,
    Sim,
    chain_co_sim::testbed::PrivateNginx,
    ChildGuard,
    String,
) {
    let sim = Sim::start(&["a", "b", "c"], "2s");
    for (node, op) in ops {
        sim.op(node, op).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let nginx = start_nginx(dir.path(), &[sim.addr("a")]);
    let config = write_config(dir.path(), &sim, &nginx, &format!("{rules}{extra}"));
    let run = start_run(&config);
    let api = api_url(&run).await;
    let up = wait_until(Duration::from_secs(20), || {
        servers(&nginx.upstream_file).len() == 3
    })
    .await;
    assert!(up.is_some(), "not up; log:\n{}", run.stderr());
    wait_healthy(&api, &run).await;
    (dir, sim, nginx, run, api)
}

async fn status(api: &str) -> serde_json::Value {
    let body = reqwest::get(format!("{api}/status"))
        .await
        .expect("status")
        .text()
        .await
        .expect("body");
    serde_json::from_str(&body).expect("JSON")
}

#[tokio::test]
async fn with_push_a_stalled_primary_is_replaced_within_lag_grace_of_the_next_tipset() {
    let (_dir, sim, nginx, run, api) = pool(&[], "").await;
    let file = nginx.upstream_file.clone();
    let s = status(&api).await;
    for n in s["nodes"].as_array().expect("nodes") {
        assert_eq!(n["source"], "push", "{n:#}");
    }
    let a = primary_name(&sim, &file);
    let a = a.as_str();
    sim.op(a, r#"{"op":"stall"}"#).await;
    let t0 = std::time::Instant::now();
    let moved = wait_until(Duration::from_secs(20), || {
        primary_in(&file) != Some(sim.addr(a))
    })
    .await
    .unwrap_or_else(|| panic!("never moved; log:\n{}", run.stderr()));
    println!("push: stalled primary left the upstream {moved:?} after the stall (next tipset ≤ 2 s, lag_grace 1 s)");
    // The next tipset elsewhere comes within one block delay (2 s); then lag_grace (1 s); then
    // a reload. Polling alone would need more than 20 s here.
    assert!(
        moved <= Duration::from_secs(5),
        "took {moved:?}; log:\n{}",
        run.stderr()
    );
    assert!(t0.elapsed() < Duration::from_secs(20));
    // The file is swapped in before the round's report is published: read the report once it
    // has caught up.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let a = loop {
        let s = status(&api).await;
        let node = s["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["name"] == a)
            .expect("the stalled node")
            .clone();
        if node["role"] == "excluded" || std::time::Instant::now() > deadline {
            break node;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reason = a["reason"].as_str().expect("reason");
    assert!(
        reason.contains("behind the best head") || reason.contains("lagging"),
        "{a:#}"
    );
    assert!(
        run.stderr().contains("behind the best head"),
        "{}",
        run.stderr()
    );
    // While the reason is still "behind", the status says for how long; a loaded machine
    // (the flood test runs beside this one) may read it only once the lag has grown past
    // max_lag, when the reason is "lagging" and the log above shows the "behind" exclusion.
    if reason.contains("behind the best head") {
        assert!(a["behind"].as_str().is_some(), "{a:#}");
    }
}

#[tokio::test]
async fn healthy_nodes_with_arrival_jitter_never_switch() {
    // Mainnet timing compressed tenfold: 3 s blocks (30 s), tipsets reaching each node up to
    // 0.6 s apart (6 s), probes every 0.5 s (5 s), the default lag_grace of 0.4 block delays
    // (1.2 s; 12 s on mainnet).
    let sim = Sim::start(&["a", "b", "c"], "3s");
    for n in ["a", "b", "c"] {
        sim.op(n, r#"{"op":"jitter","max":"600ms"}"#).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let nginx = start_nginx(dir.path(), &[sim.addr("a")]);
    let config = write_config(
        dir.path(),
        &sim,
        &nginx,
        "[probe]\ninterval = \"500ms\"\ntimeout = \"400ms\"\n[select]\nrise = 2\nfall = 3\n",
    );
    let run = start_run(&config);
    let api = api_url(&run).await;
    wait_healthy(&api, &run).await;
    let p = primary_name(&sim, &nginx.upstream_file);
    let before = status(&api).await["switches"].as_u64().expect("switches");
    // Ten epochs, each reaching the nodes at different moments (six probe rounds, with every
    // pushed head evaluated in between).
    rounds_pass(&api, 6).await;
    let s = status(&api).await;
    assert_eq!(
        s["switches"].as_u64(),
        Some(before),
        "a healthy pool with arrival jitter switched:\n{}",
        run.stderr()
    );
    assert_eq!(primary_in(&nginx.upstream_file), Some(sim.addr(&p)));
    assert!(!run.stderr().contains("node down"), "{}", run.stderr());
}

#[tokio::test]
async fn without_push_polling_still_finds_a_stalled_primary() {
    let ops = [
        ("a", r#"{"op":"no_push"}"#),
        ("b", r#"{"op":"no_push"}"#),
        ("c", r#"{"op":"no_push"}"#),
    ];
    let (_dir, sim, nginx, run, api) = pool(&ops, "").await;
    let s = status(&api).await;
    for n in s["nodes"].as_array().expect("nodes") {
        assert_eq!(n["source"], "poll", "{n:#}");
        assert_eq!(n["push"]["state"], "unavailable", "{n:#}");
    }
    let a = primary_name(&sim, &nginx.upstream_file);
    sim.op(&a, r#"{"op":"stall"}"#).await;
    let moved = wait_until(Duration::from_secs(40), || {
        primary_in(&nginx.upstream_file) != Some(sim.addr(&a))
    })
    .await;
    assert!(
        moved.is_some(),
        "polling did not catch the stall; log:\n{}",
        run.stderr()
    );
    println!(
        "poll only: stalled primary left the upstream {:?} after the stall",
        moved.expect("checked")
    );
}

#[tokio::test]
async fn a_silent_subscription_falls_back_to_polls_without_a_false_switch() {
    let (_dir, sim, nginx, run, api) = pool(&[], "").await;
    let a = primary_name(&sim, &nginx.upstream_file);
    sim.op(&a, r#"{"op":"push_silent"}"#).await;
    // a's pushes stop, but its polls keep up: no switch on a's account.
    rounds_pass(&api, 2).await;
    assert_eq!(
        primary_in(&nginx.upstream_file),
        Some(sim.addr(&a)),
        "log:\n{}",
        run.stderr()
    );
    let s = status(&api).await;
    assert!(
        s["warnings"].as_array().expect("warnings").iter().any(|w| w
            .as_str()
            .is_some_and(|w| w.contains(&format!("{a}: ChainNotify delivered nothing")))),
        "{s:#}"
    );
}

/// The requests the honest nodes received, from the simulator's counters.
async fn requests(sim: &Sim, nodes: &[&str]) -> u64 {
    sim_nodes(sim)
        .await
        .iter()
        .filter(|n| nodes.contains(&n["name"].as_str().unwrap_or("")))
        .map(|n| n["requests"].as_u64().expect("requests"))
        .sum()
}

/// A node pushing its head thousands of times a second, each time a little heavier: the
/// subscription is dropped as a flood, the loop is not woken per frame, and the honest nodes
/// get no more calls than in a quiet pool.
#[tokio::test]
async fn a_push_flood_costs_the_honest_nodes_nothing() {
    let fast = "[probe]\ninterval = \"500ms\"\ntimeout = \"400ms\"\n[select]\nrise = 1\nfall = 3\nlag_grace = \"1s\"\n";
    let (_dir, sim, _nginx, run, api) = pool_with(fast, &[], "").await;
    let honest = ["a", "b"];
    let watch = Duration::from_secs(3);
    let (r0, q0) = (
        status(&api).await["round"].as_u64().expect("round"),
        requests(&sim, &honest).await,
    );
    tokio::time::sleep(watch).await;
    let (r1, q1) = (
        status(&api).await["round"].as_u64().expect("round"),
        requests(&sim, &honest).await,
    );
    sim.op(
        "c",
        r#"{"op":"push_flood","per_second":5000,"inflate":true}"#,
    )
    .await;
    tokio::time::sleep(watch).await;
    let (r2, q2) = (
        status(&api).await["round"].as_u64().expect("round"),
        requests(&sim, &honest).await,
    );
    let (quiet_calls, flood_calls) = (q1 - q0, q2 - q1);
    let (quiet_rounds, flood_rounds) = (r1 - r0, r2 - r1);
    println!(
        "quiet: {quiet_calls} calls to the honest nodes, {quiet_rounds} evaluations in {watch:?}; flood: {flood_calls} calls, {flood_rounds} evaluations"
    );
    assert!(
        flood_calls <= quiet_calls * 2 + 12,
        "the flood multiplied calls to honest nodes: {flood_calls} vs {quiet_calls} quiet\n{}",
        run.stderr()
    );
    assert!(
        flood_rounds <= quiet_rounds * 2 + 12,
        "the flood woke the loop per frame: {flood_rounds} vs {quiet_rounds} quiet"
    );
    assert!(run.stderr().contains("flood"), "{}", run.stderr());
}

//! Chaos soak: random faults on a simulated pool (stall, die, lag, fork, slow, garbage,
//! recover) while a client sends requests through the real nginx. Checked all along:
//! - the upstream file on disk passes `nginx -t` and has at least one server;
//! - the primary is never a node that has been faulty for longer than detection allows;
//! - requests fail only at the instant a primary dies (in flight);
//! - chain-co's memory and open files stay flat.
//!
//! Runs `CHAIN_CO_SOAK_SECS` seconds (default 30, bounded for CI); prints what it did.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use chain_co_sim::testbed::{open_fds, rss_kib};
use common::*;

/// A tiny deterministic generator, so a failing run can be replayed with the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test]
async fn chaos_soak_keeps_a_valid_upstream_on_a_healthy_node() {
    let secs: u64 = std::env::var("CHAIN_CO_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("CHAIN_CO_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0de);
    let names = ["a", "b", "c", "d"];
    let sim = Sim::start(&names, "1s");
    let dir = tempfile::tempdir().expect("tempdir");
    let nginx = start_nginx(dir.path(), &[sim.addr("a")]);
    let config = write_config(
        dir.path(),
        &sim,
        &nginx,
        "[probe]\ninterval = \"300ms\"\ntimeout = \"250ms\"\n[select]\nrise = 2\nfall = 2\nlag_grace = \"1s\"\n",
    );
    let run = start_run(&config);
    let api = api_url(&run).await;
    wait_healthy(&api, &run).await;
    let pid = run.child.id();
    let load = Load::start(nginx.rpc_url());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss0, fds0) = (rss_kib(pid), open_fds(pid));

    let faults = [
        r#"{"op":"stall"}"#,
        r#"{"op":"die"}"#,
        r#"{"op":"lag","epochs":5}"#,
        r#"{"op":"fork"}"#,
        r#"{"op":"slow","delay":"2s"}"#,
        r#"{"op":"garbage"}"#,
    ];
    let mut rng = Rng(seed);
    // node → (fault, since)
    let mut faulty: BTreeMap<&str, (&str, Instant)> = BTreeMap::new();
    let mut injected: BTreeMap<&str, u32> = BTreeMap::new();
    let mut deaths = 0u64;
    let mut checks = 0u64;
    let test_cmd = nginx.test_cmd();
    let start = Instant::now();
    let mut next_fault = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if Instant::now() >= next_fault {
            next_fault = Instant::now() + Duration::from_millis(1500);
            let node = names[rng.next(names.len() as u64) as usize];
            if faulty.contains_key(node) || faulty.len() >= 2 {
                // Keep at least two healthy nodes: recover one.
                let heal = *faulty.keys().next().expect("some faulty node");
                sim.op(heal, r#"{"op":"heal"}"#).await;
                faulty.remove(heal);
                *injected.entry("heal").or_default() += 1;
            } else {
                let fault = faults[rng.next(faults.len() as u64) as usize];
                let primary_before = primary_name(&sim, &nginx.upstream_file);
                sim.op(node, fault).await;
                if fault.contains("die") && primary_before == node {
                    deaths += 1;
                }
                let kind = fault.split('"').nth(3).expect("op name");
                *injected.entry(kind).or_default() += 1;
                faulty.insert(node, (kind, Instant::now()));
            }
        }
        // The file on disk is always one nginx accepts, with at least one server.
        let ok = Command::new(&test_cmd[0])
            .args(&test_cmd[1..])
            .output()
            .expect("nginx -t");
        assert!(
            ok.status.success(),
            "nginx -t refused the live file: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert!(
            !servers(&nginx.upstream_file).is_empty(),
            "an empty upstream was published"
        );
        // The primary is not a node faulty for longer than detection allows: stall/lag/fork
        // (next tipset + lag_grace, or max_lag + 1 epochs), the rest fall × interval; plus a
        // reload and scheduling slack.
        let primary = primary_name(&sim, &nginx.upstream_file);
        if let Some((kind, since)) = faulty.get(primary.as_str()) {
            let limit = match *kind {
                "stall" | "lag" | "fork" => Duration::from_secs(5),
                _ => Duration::from_secs(3),
            };
            assert!(
                since.elapsed() < limit,
                "{primary} is still primary {:?} after {kind}; log:\n{}",
                since.elapsed(),
                run.stderr()
            );
        }
        checks += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (rss1, fds1) = (rss_kib(pid), open_fds(pid));
    let (answered, failed) = load.stop().await;
    let status: serde_json::Value = status_json(&api).await;
    println!("chaos soak, {secs}s, seed {seed:#x}:");
    println!("  faults injected: {injected:?}");
    println!(
        "  primary switches {}, nginx reloads {}, failed applies {}",
        status["switches"], status["reloads"], status["failed_applies"]
    );
    println!("  requests: {answered} answered, {failed} failed ({deaths} deaths of the primary)");
    println!("  invariant checks: {checks}; chain-co RSS {rss0} → {rss1} KiB, open files {fds0} → {fds1}");
    assert_eq!(status["failed_applies"], 0, "an apply failed");
    // A request may fail when it is in flight to a primary that dies, or when it races nginx
    // closing an idle keep-alive connection at a reload; nothing else.
    let reloads = status["reloads"].as_u64().expect("reloads");
    assert!(
        failed <= 2 * deaths + reloads,
        "{failed} requests failed with {deaths} primary deaths and {reloads} reloads"
    );
    assert!(
        rss1 <= rss0 + rss0 / 2 + 4096,
        "RSS grew from {rss0} to {rss1} KiB"
    );
    assert!(fds1 <= fds0 + 10, "open files grew from {fds0} to {fds1}");
}

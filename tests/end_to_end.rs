//! End to end with the real programs: `chain-co sim` (three nodes), a private nginx in front of
//! them, and `chain-co run` between, with a client sending requests through nginx.
//!
//! Bounds are checked with slack for a loaded CI machine; the measured times are printed
//! (`cargo test -- --nocapture`) and reported in the README.

mod common;

use std::time::Duration;

use common::*;

const INTERVAL: Duration = Duration::from_millis(300);
const FALL: u32 = 2;
const RISE: u32 = 2;
const MAX_LAG: u64 = 2;
const BLOCK_DELAY: Duration = Duration::from_secs(1);
/// Time for what the formulas leave out: a probe in flight, the nginx reload, a busy machine.
const SLACK: Duration = Duration::from_secs(2);

fn select_section() -> String {
    format!(
        "[probe]\ninterval = \"{}ms\"\ntimeout = \"250ms\"\n[select]\nmax_lag = {MAX_LAG}\nrise = {RISE}\nfall = {FALL}\n",
        INTERVAL.as_millis()
    )
}

/// Sim + nginx (seeded with node a as primary) + chain-co run, waiting until all three are up.
async fn pool() -> (
    tempfile::TempDir,
    Sim,
    chain_co_sim::testbed::PrivateNginx,
    ChildGuard,
) {
    let sim = Sim::start(&["a", "b", "c"], "1s");
    let dir = tempfile::tempdir().expect("tempdir");
    let nginx = start_nginx(dir.path(), &[sim.addr("a")]);
    let seed_workers = nginx.workers();
    assert!(!seed_workers.is_empty(), "nginx has workers");
    let config = write_config(dir.path(), &sim, &nginx, &select_section());
    let run = start_run(&config);
    let up = wait_until(Duration::from_secs(15), || {
        servers(&nginx.upstream_file).len() == 3
    })
    .await;
    assert!(
        up.is_some(),
        "chain-co did not publish all three nodes; its log:\n{}",
        run.stderr()
    );
    // The file is in place before nginx -t and the reload; wait until the workers that had the
    // seed config are gone, so that every request from now on sees chain-co's upstream.
    let reloaded = wait_until(Duration::from_secs(10), || {
        let now = nginx.workers();
        !now.is_empty() && seed_workers.iter().all(|w| !now.contains(w))
    })
    .await;
    assert!(reloaded.is_some(), "nginx did not reload");
    (dir, sim, nginx, run)
}

#[tokio::test]
async fn primary_death_moves_traffic_without_failed_requests() {
    let (_dir, sim, nginx, run) = pool().await;
    let file = nginx.upstream_file.clone();
    // The heaviest head decides the first primary: the first node in config order, unless a
    // probe round straddled an epoch boundary.
    let a = primary_name(&sim, &file);
    let a = a.as_str();
    let load = Load::start(nginx.rpc_url());
    assert!(wait_until(Duration::from_secs(5), || load.last_node() == a)
        .await
        .is_some());

    let failed_before = load.failed();
    sim.op(a, r#"{"op":"die"}"#).await;
    let left = wait_until(Duration::from_secs(20), || {
        !servers(&file).iter().any(|(addr, _)| *addr == sim.addr(a))
    })
    .await
    .unwrap_or_else(|| panic!("a never left the upstream; log:\n{}", run.stderr()));
    let reached = wait_until(Duration::from_secs(5), || load.last_node() != a)
        .await
        .expect("requests moved");
    let failed = load.failed() - failed_before;
    println!(
        "primary death: requests on another node after {reached:?}, a out of the upstream after {left:?}, {failed} failed requests"
    );
    let bound = INTERVAL * (FALL + 1) + SLACK;
    assert!(
        left <= bound,
        "a left the upstream after {left:?}, bound {bound:?}"
    );
    assert!(
        // The one in flight at the death, and one racing the reload's close of an idle
        // keep-alive connection.
        failed <= 2,
        "{failed} requests failed; at most the one in flight may. nginx error log:\n{}",
        std::fs::read_to_string(nginx.dir.join("logs/error.log")).unwrap_or_default()
    );
    let b = primary_name(&sim, &file);
    assert_ne!(b, a, "another node takes over");

    // Back from the dead: a returns as a backup after `rise` probes; b stays primary.
    sim.op(a, r#"{"op":"revive"}"#).await;
    let back = wait_until(Duration::from_secs(10), || {
        servers(&file).contains(&(sim.addr(a), true))
    })
    .await;
    assert!(back.is_some(), "a did not come back as a backup");
    let api = api_url(&run).await;
    rounds_pass(&api, 4).await;
    assert_eq!(primary_in(&file), Some(sim.addr(&b)), "no flip back to a");

    // Steady state: no rewrite, no reload, no log line.
    let mtime = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .expect("mtime");
    let log_len = run.stderr().len();
    // Ten rounds (3 s at this interval) in which the loop ran and changed nothing.
    rounds_pass(&api, 10).await;
    assert_eq!(
        std::fs::metadata(&file)
            .and_then(|m| m.modified())
            .expect("mtime"),
        mtime,
        "the upstream file was rewritten at steady state"
    );
    let new_lines = run.stderr()[log_len..].to_string();
    assert!(
        new_lines.is_empty(),
        "log lines at steady state:\n{new_lines}"
    );
    let (ok, failed_total) = load.stop().await;
    println!("load: {ok} answered, {failed_total} failed");
}

#[tokio::test]
async fn a_stalled_primary_loses_traffic_and_comes_back_as_backup() {
    let (_dir, sim, nginx, run) = pool().await;
    let file = nginx.upstream_file.clone();
    let a = primary_name(&sim, &file);
    let a = a.as_str();
    let load = Load::start(nginx.rpc_url());
    assert!(wait_until(Duration::from_secs(5), || load.last_node() == a)
        .await
        .is_some());

    sim.op(a, r#"{"op":"stall"}"#).await;
    let moved = wait_until(Duration::from_secs(30), || {
        let n = load.last_node();
        !n.is_empty() && n != a
    })
    .await
    .unwrap_or_else(|| panic!("traffic stayed on the stalled node; log:\n{}", run.stderr()));
    println!("primary stall: requests reach another node after {moved:?}");
    let bound = BLOCK_DELAY * (MAX_LAG as u32 + 1) + INTERVAL * FALL + SLACK;
    assert!(moved <= bound, "moved after {moved:?}, bound {bound:?}");
    let log = run.stderr();
    assert!(
        log.contains("behind the best head") || log.contains("lagging"),
        "the reason is logged:\n{log}"
    );
    // A stall itself fails no request; the one reload may close an idle keep-alive connection
    // just as the client reuses it (a race every HTTP server has on a graceful close).
    assert!(
        load.failed() <= 1,
        "{} requests failed during a stall",
        load.failed()
    );

    sim.op(a, r#"{"op":"resume"}"#).await;
    let back = wait_until(Duration::from_secs(10), || {
        servers(&file).contains(&(sim.addr(a), true))
    })
    .await;
    assert!(
        back.is_some(),
        "a did not come back as a backup; log:\n{}",
        run.stderr()
    );
    rounds_pass(&api_url(&run).await, 4).await;
    assert_ne!(primary_in(&file), Some(sim.addr(a)), "no flip back");
    load.stop().await;
}

#[tokio::test]
async fn a_config_nginx_rejects_is_rolled_back_and_nginx_keeps_serving() {
    let sim = Sim::start(&["a", "b", "c"], "1s");
    let dir = tempfile::tempdir().expect("tempdir");
    let nginx = start_nginx(dir.path(), &[sim.addr("a")]);
    let seed = std::fs::read_to_string(&nginx.upstream_file).expect("seed");
    // A template nginx refuses: an unknown server parameter.
    std::fs::write(
        dir.path().join("bad.tera"),
        "upstream {{ upstream_name }} {\n{% for s in servers %}    server {{ s.address }} not_a_parameter;\n{% endfor %}}\n",
    )
    .expect("template");
    let config = write_config(
        dir.path(),
        &sim,
        &nginx,
        &format!("template = \"bad.tera\"\n{}", select_section()),
    );
    let run = start_run(&config);
    let refused = wait_until(Duration::from_secs(15), || {
        run.stderr().contains("nginx test rejected")
    })
    .await;
    assert!(
        refused.is_some(),
        "no refusal reported; log:\n{}",
        run.stderr()
    );
    assert!(run.stderr().contains("kept the previous file"));
    assert_eq!(
        std::fs::read_to_string(&nginx.upstream_file).expect("file"),
        seed,
        "the last good file is in place"
    );
    let leftovers: Vec<_> = std::fs::read_dir(nginx.upstream_file.parent().expect("dir"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    let load = Load::start(nginx.rpc_url());
    assert!(
        wait_until(Duration::from_secs(5), || load.last_node() == "a")
            .await
            .is_some(),
        "nginx keeps serving with the last good file"
    );
    // The same refusal is logged once, not every round.
    rounds_pass(&api_url(&run).await, 5).await;
    assert_eq!(
        run.stderr().matches("apply failed").count(),
        1,
        "{}",
        run.stderr()
    );
    load.stop().await;
}

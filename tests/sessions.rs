//! Sessions, as miners hold them: one websocket through nginx for hours, with a ChainNotify
//! subscription and `ChainHead` calls on it. nginx pins it to the daemon chosen when it was
//! opened; these tests check that it follows chain-co's choice and is cut only when that choice
//! concerns it.
//!
//! nginx runs with `worker_shutdown_timeout 60s`, longer than any test here: a session that is
//! cut within a test was cut by chain-co's session move, not by the old worker's timeout.
//! Figures are printed (`cargo test --test sessions -- --nocapture`); the benchmark in bench/
//! measures them side by side with plain nginx and HAProxy.

mod common;

use std::time::{Duration, Instant};

use chain_co_sim::testbed::Session;
use common::*;

const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
/// A move is a netlink call after the reload has settled: well under a second. Bounds leave
/// room for a loaded CI machine, and stay far below the 60 s the old worker would hold on.
const SLACK: Duration = Duration::from_secs(5);

fn section(extra: &str) -> String {
    format!(
        "[probe]\ninterval = \"300ms\"\ntimeout = \"250ms\"\n[select]\nmax_lag = 2\nrise = 2\nfall = 2\nlag_grace = \"1s\"\n{extra}"
    )
}

struct Pool {
    _dir: tempfile::TempDir,
    sim: Sim,
    nginx: chain_co_sim::testbed::PrivateNginx,
    run: ChildGuard,
    api: String,
}

/// Sim (a, b, c) + nginx + chain-co run, once chain-co's first upstream is in force.
async fn pool(extra: &str, wrap: Option<&[&str]>) -> Pool {
    let sim = Sim::start(&["a", "b", "c"], "1s");
    let dir = tempfile::tempdir().expect("tempdir");
    let nginx = start_nginx_with(dir.path(), &[sim.addr("a")], SHUTDOWN_TIMEOUT);
    let seed_workers = nginx.workers();
    let config = write_config(dir.path(), &sim, &nginx, &section(extra));
    let run = match wrap {
        None => start_run(&config),
        Some(prefix) => start_run_wrapped(prefix, &[], &config),
    };
    let api = api_url(&run).await;
    wait_healthy(&api, &run).await;
    let published = wait_until(Duration::from_secs(15), || {
        servers(&nginx.upstream_file).len() == 3
    })
    .await;
    assert!(
        published.is_some(),
        "not all nodes up; log:\n{}",
        run.stderr()
    );
    // The seed's workers hold nothing: they leave as soon as chain-co's reload is in force.
    let reloaded = wait_until(Duration::from_secs(10), || {
        let now = nginx.workers();
        !now.is_empty() && seed_workers.iter().all(|w| !now.contains(w))
    })
    .await;
    assert!(reloaded.is_some(), "nginx did not reload");
    Pool {
        _dir: dir,
        sim,
        nginx,
        run,
        api,
    }
}

impl Pool {
    fn name_of(&self, addr: &str) -> String {
        self.sim
            .ready
            .nodes
            .iter()
            .find(|n| n.addr.to_string() == addr)
            .map(|n| n.name.clone())
            .unwrap_or_default()
    }

    /// Waits for a session's first connection and returns the node it is on.
    async fn session_on(&self, s: &Session) -> String {
        let on = wait_until(Duration::from_secs(10), || {
            s.log().heads.len() >= 2 && s.log().upstream().is_some()
        })
        .await;
        assert!(on.is_some(), "the session never got going: {:?}", s.log());
        self.name_of(s.log().upstream().expect("connected"))
    }

    async fn reloads(&self) -> u64 {
        status_json(&self.api).await["reloads"]
            .as_u64()
            .expect("reloads")
    }
}

#[tokio::test]
async fn a_stalled_primary_moves_its_session_at_once_and_only_once() {
    let p = pool("", None).await;
    let s = Session::start(p.nginx.addr);
    let primary = p.session_on(&s).await;
    assert_eq!(primary, primary_name(&p.sim, &p.nginx.upstream_file));
    let status = status_json(&p.api).await;
    assert_eq!(status["session_mode"], "destroy", "{status}");

    p.sim.op(&primary, r#"{"op":"stall"}"#).await;
    let switched = wait_until(Duration::from_secs(15), || {
        primary_in(&p.nginx.upstream_file).is_some_and(|a| a != p.sim.addr(&primary))
    })
    .await;
    assert!(switched.is_some(), "no switch; log:\n{}", p.run.stderr());
    let switch_at = Instant::now();
    // Until the switch the session was on the stalled daemon: its head is the stale one.
    let stalled_at = s.log().max_height_before(switch_at);
    let fresh = wait_until(SLACK, || {
        s.log().first_head_above(switch_at, stalled_at).is_some()
    })
    .await;
    let log = s.log();
    assert!(
        fresh.is_some(),
        "the session got no fresh head within {SLACK:?} of the switch (worker_shutdown_timeout is {SHUTDOWN_TIMEOUT:?}): {log:?}\n{}",
        p.run.stderr()
    );
    println!(
        "stall: session fresh again {} ms after chain-co's switch",
        fresh.expect("checked").as_millis()
    );
    let new = p.name_of(log.upstream().expect("reconnected"));
    assert_ne!(new, primary, "the session left the stalled daemon");
    // Stay a while: no second cut.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = s.stop().await;
    assert_eq!(log.cuts.len(), 1, "one cut at the switch, no more: {log:?}");
    assert!(
        p.run.stderr().contains("sessions moved off the node"),
        "{}",
        p.run.stderr()
    );
}

#[tokio::test]
async fn a_backup_that_comes_and_goes_cuts_no_session_and_reloads_nothing() {
    let p = pool("", None).await;
    let s = Session::start(p.nginx.addr);
    let primary = p.session_on(&s).await;
    let backup = others(&p.sim, &primary)[0].to_string();
    let reloads = p.reloads().await;
    let workers = p.nginx.workers();

    for _ in 0..2 {
        p.sim.op(&backup, r#"{"op":"lag","epochs":6}"#).await;
        let gone = wait_until(Duration::from_secs(15), || {
            !servers(&p.nginx.upstream_file)
                .iter()
                .any(|(a, _)| *a == p.sim.addr(&backup))
        })
        .await;
        assert!(
            gone.is_some(),
            "the lagging backup stayed; {}",
            p.run.stderr()
        );
        p.sim.op(&backup, r#"{"op":"heal"}"#).await;
        let back = wait_until(Duration::from_secs(15), || {
            servers(&p.nginx.upstream_file)
                .iter()
                .any(|(a, _)| *a == p.sim.addr(&backup))
        })
        .await;
        assert!(
            back.is_some(),
            "the backup did not come back; {}",
            p.run.stderr()
        );
    }
    assert_eq!(p.reloads().await, reloads, "backup changes reload nothing");
    assert_eq!(p.nginx.workers(), workers, "the same nginx workers serve");
    assert!(
        p.run.stderr().contains("nginx not reloaded"),
        "{}",
        p.run.stderr()
    );
    let log = s.stop().await;
    assert_eq!(log.cuts.len(), 0, "no session cut: {log:?}");
    assert_eq!(p.name_of(log.upstream().expect("on")), primary);
}

/// A session that reached another daemon (nginx fell back to a backup while chain-co was not
/// looking) is not cut when chain-co switches: only the old primary's sessions move.
#[tokio::test]
async fn sessions_on_other_daemons_survive_a_switch() {
    let p = pool("", None).await;
    let old = Session::start(p.nginx.addr);
    let primary = p.session_on(&old).await;
    // Freeze chain-co, kill the primary, and connect: nginx sends the new session to a backup.
    let pid = nix::unistd::Pid::from_raw(p.run.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("stop chain-co");
    p.sim.op(&primary, r#"{"op":"die"}"#).await;
    let elsewhere = Session::start(p.nginx.addr);
    let on = p.session_on(&elsewhere).await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("continue chain-co");
    assert_ne!(on, primary);
    let switched = wait_until(Duration::from_secs(15), || {
        primary_in(&p.nginx.upstream_file).is_some_and(|a| a != p.sim.addr(&primary))
    })
    .await;
    assert!(switched.is_some(), "no switch; {}", p.run.stderr());
    // Long enough for any move to have happened.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = elsewhere.stop().await;
    assert_eq!(
        log.cuts.len(),
        0,
        "the session on {on} was cut by a switch away from {primary}: {log:?}"
    );
    let old = old.stop().await;
    assert!(old.cuts.len() <= 2, "the dead daemon's session: {old:?}");
}

#[tokio::test]
async fn a_drain_with_grace_moves_the_session_after_the_grace() {
    let p = pool("", None).await;
    let s = Session::start(p.nginx.addr);
    let primary = p.session_on(&s).await;
    let out = std::process::Command::new(BIN)
        .args(["drain", &primary, "--grace", "2s", "--url", &p.api])
        .output()
        .expect("chain-co drain");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drained_at = Instant::now();
    let switched = wait_until(Duration::from_secs(10), || {
        primary_in(&p.nginx.upstream_file).is_some_and(|a| a != p.sim.addr(&primary))
    })
    .await;
    assert!(switched.is_some(), "no switch; {}", p.run.stderr());
    let mut pending = serde_json::Value::Null;
    for _ in 0..50 {
        pending = status_json(&p.api).await["pending_session_moves"].clone();
        if pending[0]["node"] == primary.as_str() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pending[0]["node"], primary.as_str(), "{pending}");
    let cut = wait_until(Duration::from_secs(10), || s.cuts() > 0).await;
    assert!(cut.is_some(), "never moved; {}", p.run.stderr());
    let after = drained_at.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "moved before the grace: {after:?}"
    );
    let again = wait_until(Duration::from_secs(5), || s.log().connects.len() >= 2).await;
    assert!(again.is_some(), "no reconnect: {:?}", s.log());
    let log = s.stop().await;
    assert_eq!(log.cuts.len(), 1, "{log:?}");
    assert_ne!(p.name_of(log.upstream().expect("on")), primary);
}

/// Without CAP_NET_ADMIN the sessions are left to worker_shutdown_timeout: said once at start
/// and in status, and the switch itself still works.
#[tokio::test]
async fn without_cap_net_admin_sessions_fall_back_to_worker_shutdown_timeout() {
    if !nix::unistd::geteuid().is_root() || which("setpriv").is_none() {
        skip("needs root and setpriv to drop CAP_NET_ADMIN");
        return;
    }
    let p = pool("", Some(&["setpriv", "--bounding-set", "-net_admin", "--"])).await;
    let status = status_json(&p.api).await;
    assert_eq!(
        status["session_mode"], "worker_shutdown_timeout",
        "{status}"
    );
    let s = Session::start(p.nginx.addr);
    let primary = p.session_on(&s).await;
    p.sim.op(&primary, r#"{"op":"stall"}"#).await;
    let switched = wait_until(Duration::from_secs(15), || {
        primary_in(&p.nginx.upstream_file).is_some_and(|a| a != p.sim.addr(&primary))
    })
    .await;
    assert!(switched.is_some(), "no switch; {}", p.run.stderr());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        s.cuts(),
        0,
        "nothing destroyed: the old worker holds the session"
    );
    let log = p.run.stderr();
    assert_eq!(log.matches("CAP_NET_ADMIN").count(), 1, "said once: {log}");
    s.stop().await;
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// A switch whose apply nginx refuses moves no session: nginx still sends sessions to the old
/// primary, so cutting them would only make them reconnect to it.
#[tokio::test]
async fn a_refused_apply_moves_no_session() {
    let p = pool("", None).await;
    let s = Session::start(p.nginx.addr);
    let primary = p.session_on(&s).await;
    // From now on every file is refused: a template nginx rejects, hot-reloaded.
    let dir = p._dir.path();
    std::fs::write(
        dir.join("bad.tera"),
        "upstream {{ upstream_name }} {\n{% for s in servers %}    server {{ s.address }} not_a_parameter;\n{% endfor %}}\n",
    )
    .expect("template");
    let config = dir.join("chain-co.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("[nginx]\n", "[nginx]\ntemplate = \"bad.tera\"\n"),
    )
    .expect("config");
    let pid = nix::unistd::Pid::from_raw(p.run.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    let reloaded = wait_until(Duration::from_secs(5), || {
        p.run.stderr().contains("configuration reloaded")
    })
    .await;
    assert!(reloaded.is_some(), "{}", p.run.stderr());
    p.sim.op(&primary, r#"{"op":"stall"}"#).await;
    let refused = wait_until(Duration::from_secs(15), || {
        p.run.stderr().contains("nginx test rejected")
    })
    .await;
    assert!(refused.is_some(), "{}", p.run.stderr());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = s.stop().await;
    assert_eq!(
        log.cuts.len(),
        0,
        "a refused apply cut the session: {log:?}"
    );
    assert!(
        !p.run.stderr().contains("sessions moved"),
        "{}",
        p.run.stderr()
    );
}

/// Session moves touch nginx's sockets only: nginx's cgroup, not a uid. Direct clients of the
/// old primary (root, as nginx's workers run here; uid 1234; nobody) keep their connections
/// while the miner's session through nginx moves.
#[tokio::test]
async fn direct_clients_of_the_old_primary_are_never_cut() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root (clients of other users, SOCK_DESTROY)");
        return;
    }
    let p = pool("", None).await;
    let s = Session::start(p.nginx.addr);
    let primary = p.session_on(&s).await;
    let clients: Vec<DirectClient> = [0, 1234, 65534]
        .iter()
        .map(|&uid| DirectClient::start(uid, &p.sim.addr(&primary)))
        .collect();
    let up = wait_until(Duration::from_secs(5), || {
        clients.iter().all(|c| c.said("up"))
    })
    .await;
    assert!(up.is_some(), "the direct clients did not connect");

    p.sim.op(&primary, r#"{"op":"stall"}"#).await;
    let moved = wait_until(Duration::from_secs(15), || {
        s.log()
            .upstream()
            .is_some_and(|u| u != p.sim.addr(&primary))
    })
    .await;
    assert!(
        moved.is_some(),
        "the session did not move: {}",
        p.run.stderr()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (c, uid) in clients.iter().zip([0, 1234, 65534]) {
        assert!(!c.said("closed"), "the direct client of uid {uid} was cut");
    }
    assert!(p.run.stderr().contains("sessions moved off the node"));
    drop(s.stop().await);
}

/// nginx without a cgroup of its own (started by hand in this test's own cgroup): no session
/// is moved, and /status says why.
#[tokio::test]
async fn without_a_cgroup_of_its_own_nginx_sessions_are_left_and_status_says_why() {
    let sim = Sim::start(&["a", "b", "c"], "1s");
    let dir = tempfile::tempdir().expect("tempdir");
    let nginx = start_nginx_with(dir.path(), &[sim.addr("a")], SHUTDOWN_TIMEOUT);
    // Back into the test's cgroup, with the test itself: a cgroup shared with others.
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("v2")
        .to_string();
    if let Some(mount) = chain_co::apply::sessions::cgroup2_mount() {
        let procs = mount
            .join(path.trim_start_matches('/'))
            .join("cgroup.procs");
        let master: u32 = std::fs::read_to_string(&nginx.pid_file)
            .expect("pid")
            .trim()
            .parse()
            .expect("pid");
        for pid in std::iter::once(master).chain(chain_co::apply::sessions::children(master)) {
            let _ = std::fs::write(&procs, pid.to_string());
        }
    }
    let config = write_config(dir.path(), &sim, &nginx, &section(""));
    let run = start_run(&config);
    let api = api_url(&run).await;
    wait_healthy(&api, &run).await;
    let status = status_json(&api).await;
    assert_eq!(status["session_mode"], "no_nginx_cgroup", "{status:#}");
    let notices = status["notices"].to_string();
    assert!(notices.contains("sessions are not moved"), "{notices}");
}

//! HAProxy as the target, through its runtime API, with the real haproxy: the primary is the
//! only ready server, a stalled primary loses the traffic and its websocket sessions (`shutdown
//! sessions server`), and HAProxy is never reloaded.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chain_co_sim::testbed::Session;
use common::*;

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_stalled_primary_loses_traffic_without_a_haproxy_reload() {
    let Ok(out) = Command::new("haproxy").arg("-v").output() else {
        panic!("this test runs a real haproxy; install it (apt-get install -y haproxy)");
    };
    assert!(out.status.success());
    let sim = Sim::start(&["a", "b", "c"], "1s");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    // The shipped example, with private paths and the simulated nodes.
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("haproxy-examples/haproxy.cfg"),
    )
    .expect("example");
    let mut cfg = example
        .replace("/run/haproxy/admin.sock", &format!("{d}/admin.sock"))
        .replace("    log /dev/log local0\n", "")
        .replace("bind :1234", &format!("bind 127.0.0.1:{port}"));
    for (old, node) in [
        ("lotus-a 10.0.0.11:1234", "a"),
        ("lotus-b 10.0.0.12:1234", "b"),
        ("forest-c 10.0.0.13:2345", "c"),
    ] {
        cfg = cfg.replace(old, &format!("{node} {}", sim.addr(node)));
    }
    std::fs::write(dir.path().join("haproxy.cfg"), cfg).expect("cfg");
    let ok = Command::new("haproxy")
        .args(["-c", "-f", &format!("{d}/haproxy.cfg")])
        .output()
        .expect("haproxy -c");
    assert!(
        ok.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let child = Command::new("haproxy")
        .args(["-db", "-f", &format!("{d}/haproxy.cfg")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("haproxy.log")).expect("log"))
        .process_group(0)
        .spawn()
        .expect("haproxy");
    let haproxy = Haproxy(child);
    let pid = haproxy.0.id();
    let sock = dir.path().join("admin.sock");
    assert!(
        wait_until(Duration::from_secs(10), || sock.exists())
            .await
            .is_some(),
        "haproxy did not start"
    );

    let mut text = String::new();
    for n in &sim.ready.nodes {
        text.push_str(&format!(
            "[[node]]\nname = \"{}\"\nurl = \"{}\"\n",
            n.name, n.url
        ));
    }
    text.push_str(&format!(
        "[probe]\ninterval = \"300ms\"\ntimeout = \"250ms\"\n[select]\nrise = 2\nfall = 2\nlag_grace = \"1s\"\n\
         [api]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{d}/state.json\"\n[haproxy]\nsocket = \"{d}/admin.sock\"\n"
    ));
    let config = dir.path().join("chain-co.toml");
    std::fs::write(&config, text).expect("config");
    let run = start_run(&config);
    let api = api_url(&run).await;
    wait_healthy(&api, &run).await;

    let url = format!("http://127.0.0.1:{port}/rpc/v1");
    let load = Load::start(url);
    // Only the primary answers now.
    rounds_pass(&api, 2).await;
    let s: serde_json::Value = status_json(&api).await;
    let primary = s["primary"].as_str().expect("primary").to_string();
    let only = wait_until(Duration::from_secs(5), || load.last_node() == primary).await;
    assert!(
        only.is_some(),
        "requests do not reach the primary {primary}"
    );
    // A miner's websocket, pinned to the primary: HAProxy never moves it by itself.
    let session = Session::start(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let on = wait_until(Duration::from_secs(10), || session.log().heads.len() >= 2).await;
    assert!(
        on.is_some(),
        "the session never got going: {:?}",
        session.log()
    );
    assert_eq!(session.log().upstream(), Some(primary.as_str()));
    // Direct clients of the same daemon, as root and as another user: HAProxy's `shutdown
    // sessions server` ends HAProxy's own sessions only.
    let direct: Vec<DirectClient> = [0, 1234]
        .iter()
        .map(|&uid| DirectClient::start(uid, &sim.addr(&primary)))
        .collect();
    let up = wait_until(Duration::from_secs(5), || {
        direct.iter().all(|c| c.said("up"))
    })
    .await;
    assert!(up.is_some(), "the direct clients did not connect");
    sim.op(&primary, r#"{"op":"stall"}"#).await;
    let moved = wait_until(Duration::from_secs(15), || {
        let n = load.last_node();
        !n.is_empty() && n != primary
    })
    .await
    .unwrap_or_else(|| panic!("traffic stayed on the stalled node; log:\n{}", run.stderr()));
    println!("haproxy: requests left the stalled primary after {moved:?}");
    let switch_at = std::time::Instant::now();
    let stalled_at = session.log().max_height_before(switch_at);
    let fresh = wait_until(Duration::from_secs(5), || {
        session
            .log()
            .first_head_above(switch_at, stalled_at)
            .is_some()
    })
    .await;
    assert!(
        fresh.is_some(),
        "the websocket stayed on the stalled daemon: {:?}\n{}",
        session.log(),
        run.stderr()
    );
    println!(
        "haproxy: session fresh again {} ms after the switch",
        fresh.expect("checked").as_millis()
    );
    let log = session.stop().await;
    assert_eq!(log.cuts.len(), 1, "one cut at the switch: {log:?}");
    for c in &direct {
        assert!(
            !c.said("closed"),
            "a direct client of the old primary was cut"
        );
    }
    assert_ne!(log.upstream(), Some(primary.as_str()));
    let (_, failed) = load.stop().await;
    assert_eq!(
        failed, 0,
        "switching through the runtime API fails no request"
    );
    assert_eq!(haproxy.0.id(), pid);
    assert!(
        !std::fs::read_to_string(dir.path().join("haproxy.log"))
            .unwrap_or_default()
            .contains("Reexecuting"),
        "haproxy was reloaded"
    );
}

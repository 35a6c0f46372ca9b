//! chain-co against real Forest 0.39.0 daemons (ChainSafe's node, built from crates.io), in a
//! network namespace that reaches nothing but its own loopback (`../shared/daemons/`). Their
//! head is calibnet's genesis: years stale by the real clock, a healthy pool under a wall clock
//! near genesis (Debian's `faketime`). Needs root, iproute2, curl, xz-utils and faketime.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// A pool of real Forest daemons in namespace `ns`, stopped (and the namespace removed) on drop.
struct ForestPool {
    ns: String,
    script: PathBuf,
    /// (name, rpc url, token file, pid)
    nodes: Vec<(String, String, String, u32)>,
    _dir: tempfile::TempDir,
}

impl ForestPool {
    fn start(ns: &str, n: usize) -> Option<ForestPool> {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/daemons/forest-netns.sh");
        if !script.exists() {
            skip("../shared/daemons/forest-netns.sh is not beside the checkout");
            return None;
        }
        if !nix::unistd::geteuid().is_root() {
            skip("real Forest pools need root (network namespaces)");
            return None;
        }
        // One start at a time: the script unpacks the binary to one cache file.
        static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        // A pool left by an interrupted run would hold the namespace's name.
        let _ = Command::new("bash")
            .arg(&script)
            .args(["stop", ns])
            .output();
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("bash")
            .arg(&script)
            .args(["start", ns, &n.to_string()])
            .arg(dir.path())
            .output()
            .expect("run forest-netns.sh");
        assert!(
            out.status.success(),
            "forest-netns.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let nodes = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 5).then(|| {
                    (
                        f[0].to_string(),
                        f[1].to_string(),
                        f[3].to_string(),
                        f[4].parse().expect("pid"),
                    )
                })
            })
            .collect::<Vec<_>>();
        assert_eq!(nodes.len(), n, "{}", String::from_utf8_lossy(&out.stdout));
        Some(ForestPool {
            ns: ns.to_string(),
            script,
            nodes,
            _dir: dir,
        })
    }

    fn config(&self, dir: &Path) -> PathBuf {
        let mut text = String::new();
        for (name, url, token, _) in &self.nodes {
            text.push_str(&format!(
                "[[node]]\nname = \"{name}\"\nurl = \"{url}\"\ntoken_file = \"{token}\"\n"
            ));
        }
        text.push_str("[nginx]\noutput = \"/nonexistent/upstream.conf\"\n");
        let path = dir.join("chain-co.toml");
        std::fs::write(&path, text).expect("config");
        path
    }

    /// `chain-co ARGS` inside the namespace, optionally under a wall clock near genesis.
    fn chain_co(&self, near_genesis: bool, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]);
        if near_genesis {
            cmd.args([
                "env",
                "FAKETIME_DONT_FAKE_MONOTONIC=1",
                "faketime",
                "2022-11-01 18:13:20",
            ]);
        }
        cmd.arg(BIN)
            .args(args)
            .output()
            .expect("run chain-co in the namespace")
    }
}

impl Drop for ForestPool {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .args(["stop", &self.ns])
            .output();
    }
}

fn check_json(pool: &ForestPool, near_genesis: bool, config: &Path) -> serde_json::Value {
    let out = pool.chain_co(
        near_genesis,
        &[
            "check",
            "--json",
            "--rounds",
            "4",
            "--config",
            config.to_str().expect("utf-8"),
        ],
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn real_forest_daemons_are_identified_stale_by_the_clock_and_healthy_near_genesis() {
    let Some(pool) = ForestPool::start("cc-forest-check", 2) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = pool.config(dir.path());

    let json = check_json(&pool, false, &config);
    for n in json["nodes"].as_array().expect("nodes") {
        assert_eq!(n["implementation"], "forest", "{n:#}");
        assert_eq!(n["network"], "calibrationnet", "{n:#}");
        assert_eq!(n["healthy"], false, "{n:#}");
        let reason = n["reason"].as_str().expect("reason");
        assert!(
            reason.starts_with("stale: head is 4y"),
            "rounded, no nanoseconds: {reason}"
        );
        // F3 is not built into this Forest: F3 down, not a broken node.
        assert_eq!(n["f3"], "F3 not running (client error (Connect))", "{n:#}");
        // Its genesis head's header hashes to its CID, as chain-co encodes it.
        assert_eq!(n["headers"], "verified", "{n:#}");
        assert_eq!(n["finalized_epoch"], 0, "EC finality still answers: {n:#}");
        assert!(n["latency_ms"].is_f64(), "{n:#}");
    }
    assert!(json["primary"].is_null());
    let warnings = json["warnings"].as_array().expect("warnings");
    // The pool is stale; each daemon signs tokens with its own secret. Nodes that are not
    // used are not warned about for saying they are not ready.
    let texts: Vec<&str> = warnings.iter().filter_map(|w| w.as_str()).collect();
    assert_eq!(texts.len(), 2, "{texts:#?}");
    assert!(texts
        .iter()
        .any(|w| w.starts_with("per-node tokens differ")));
    assert!(texts.iter().any(|w| w.contains("pool is stale")));

    let json = check_json(&pool, true, &config);
    assert_eq!(json["primary"], "forest-0", "{json:#}");
    assert_eq!(json["backups"][0], "forest-1", "{json:#}");
    assert_eq!(json["expected_height"], 0, "{json:#}");
    // A pool whose nodes all have F3 down is a pool without F3 finality: no exclusion, no
    // finality of its own.
    assert!(json["finalized"].is_null(), "{json:#}");
}

#[test]
fn a_real_forest_without_peers_reads_as_zero_peers_and_fullnode_api_info_works() {
    let Some(pool) = ForestPool::start("cc-forest-alone", 1) else {
        return;
    };
    let (_, url, token, _) = &pool.nodes[0];
    let out = pool.chain_co(false, &["probe", url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("peers:    0"),
        "NetPeers null is no peer: {text}"
    );
    assert!(text.contains("forest"), "{text}");
    let token = std::fs::read_to_string(token).expect("token");
    let port = url
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .expect("port");
    let info = format!("{}:/ip4/127.0.0.1/tcp/{port}/http", token.trim());
    let mut cmd = Command::new("ip");
    let out = cmd
        .args(["netns", "exec", &pool.ns, BIN, "probe"])
        .env("FULLNODE_API_INFO", &info)
        .output()
        .expect("probe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("network:  calibrationnet"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(token.trim()), "the token is never printed");
}

#[test]
fn a_hung_real_forest_is_left_and_a_killed_one_excluded() {
    let Some(pool) = ForestPool::start("cc-forest-faults", 3) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = pool.config(dir.path());
    let pid = |i: usize| nix::unistd::Pid::from_raw(pool.nodes[i].3 as i32);
    nix::sys::signal::kill(pid(0), nix::sys::signal::Signal::SIGSTOP).expect("stop forest-0");
    let json = check_json(&pool, true, &config);
    let _ = nix::sys::signal::kill(pid(0), nix::sys::signal::Signal::SIGCONT);
    assert_ne!(json["primary"], "forest-0", "{json:#}");
    assert!(json["primary"].is_string(), "{json:#}");
    let hung = &json["nodes"][0];
    assert!(
        hung["reason"].as_str().expect("reason").contains("timeout"),
        "{hung:#}"
    );

    nix::sys::signal::kill(pid(1), nix::sys::signal::Signal::SIGKILL).expect("kill forest-1");
    let json = check_json(&pool, true, &config);
    assert!(json["primary"].is_string(), "{json:#}");
    assert_ne!(json["primary"], "forest-1", "{json:#}");
    let dead = &json["nodes"][1];
    assert_eq!(dead["healthy"], false, "{dead:#}");
}

/// Runs `f` on a thread of its own inside namespace `ns`: every socket it opens and every
/// process it starts is in the namespace (a thread's network namespace is its own, and
/// children inherit it). `f` gets a runtime of its own on that thread.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("the namespace exists");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter namespace");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        f(&rt)
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// `nodes` (the `[[node]]` tables) with fast probes, a state file in `dir`, the private
/// `nginx` as the target and `extra`, written to `dir/chain-co.toml` for `run`.
fn write_run_config(
    dir: &Path,
    nginx: &chain_co_sim::testbed::PrivateNginx,
    mut nodes: String,
    extra: &str,
) -> PathBuf {
    let test_cmd: Vec<String> = nginx.test_cmd().iter().map(|a| format!("{a:?}")).collect();
    nodes.push_str(&format!(
        "[probe]\ninterval = \"500ms\"\ntimeout = \"400ms\"\n\
         [select]\nrise = 2\nfall = 2\nstale_after = \"1h\"\n\
         [api]\nlisten = \"127.0.0.1:0\"\nstate_file = {:?}\n\
         [nginx]\noutput = {:?}\ntest_cmd = [{}]\nreload = {{ pid_file = {:?} }}\n{extra}",
        dir.join("state.json").display().to_string(),
        nginx.upstream_file.display().to_string(),
        test_cmd.join(", "),
        nginx.pid_file.display().to_string(),
    ));
    let config = dir.join("chain-co.toml");
    std::fs::write(&config, nodes).expect("config");
    config
}

/// `chain-co run` under a wall clock near genesis, its log in a file.
fn start_run_near_genesis(config: &Path) -> ChildGuard {
    start_run_wrapped(
        &["faketime", "2022-11-01 18:13:20"],
        &[("FAKETIME_DONT_FAKE_MONOTONIC", "1")],
        config,
    )
}

/// Real Forest pool + real nginx + `chain-co run`, all in the namespace; a miner-like websocket
/// session through nginx; the primary hung, then the next one killed. Each time the session
/// must leave the daemon and land on a live one.
#[test]
fn a_miner_session_through_nginx_leaves_a_hung_and_a_killed_real_forest() {
    let Some(pool) = ForestPool::start("cc-forest-nginx", 3) else {
        return;
    };
    let nodes = pool.nodes.clone();
    in_netns(&pool.ns, move |rt| {
        rt.block_on(async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let upstream = |i: usize| nodes[i].1.split('/').nth(2).expect("host:port").to_string();
            let nginx = start_nginx_with(dir.path(), &[upstream(0)], Duration::from_secs(60));
            let mut text = String::new();
            for (name, url, token, _) in &nodes {
                text.push_str(&format!(
                    "[[node]]\nname = \"{name}\"\nurl = \"{url}\"\ntoken_file = \"{token}\"\n"
                ));
            }
            let config = write_run_config(dir.path(), &nginx, text, "");
            let run = start_run_near_genesis(&config);
            let api = api_url(&run).await;
            let up = wait_until(Duration::from_secs(20), || {
                servers(&nginx.upstream_file).len() == 3
            })
            .await;
            assert!(up.is_some(), "the pool never came up:\n{}", run.stderr());

            let session = chain_co_sim::testbed::Session::start(nginx.addr);
            let first = wait_until(Duration::from_secs(10), || {
                session.log().upstream().is_some_and(|u| !u.is_empty())
            })
            .await;
            assert!(first.is_some(), "no session: {:?}", session.log());
            let on = session.log().upstream().expect("connected").to_string();
            // nginx's $upstream_addr lists every daemon it tried: the last one served.
            let index = |addr: &str| {
                let last = addr.rsplit(", ").next().unwrap_or(addr);
                (0..3).find(|&i| upstream(i) == last)
            };
            let hung = index(&on).expect("the session is on a pool daemon");

            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(nodes[hung].3 as i32),
                nix::sys::signal::Signal::SIGSTOP,
            )
            .expect("hang the session's daemon");
            let hung_at = std::time::Instant::now();
            let moved = wait_until(Duration::from_secs(20), || {
                session
                    .log()
                    .upstream()
                    .is_some_and(|u| index(u).is_some_and(|i| i != hung))
            })
            .await;
            let log = session.log();
            assert!(
                moved.is_some(),
                "the session stayed on the hung daemon: {log:?}\n{}",
                run.stderr()
            );
            println!(
                "hung real Forest: the session was on another daemon {} ms later",
                hung_at.elapsed().as_millis()
            );
            let status = status_json(&api).await;
            assert_ne!(status["primary"], nodes[hung].0.as_str(), "{status:#}");

            let killed = index(log.upstream().expect("connected")).expect("on a pool daemon");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(nodes[killed].3 as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .expect("kill the session's daemon");
            let killed_at = std::time::Instant::now();
            let moved = wait_until(Duration::from_secs(20), || {
                session
                    .log()
                    .upstream()
                    .is_some_and(|u| index(u).is_some_and(|i| i != killed && i != hung))
            })
            .await;
            let log = session.stop().await;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(nodes[hung].3 as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
            assert!(
                moved.is_some(),
                "the session did not reach the last live daemon: {log:?}\n{}",
                run.stderr()
            );
            println!(
                "killed real Forest: the session was on the last live daemon {} ms later",
                killed_at.elapsed().as_millis()
            );
        })
    });
}

#[test]
fn tokens_signed_by_different_secrets_are_said_before_a_switch_fails_a_client() {
    let Some(pool) = ForestPool::start("cc-forest-tokens", 2) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = pool.config(dir.path());
    let json = check_json(&pool, true, &config);
    let warnings: Vec<&str> = json["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("per-node tokens differ")),
        "{warnings:#?}"
    );
    // Each Forest says it is not ready by its own clock; chain-co still uses both.
    assert_eq!(json["primary"], "forest-0", "{json:#}");
    let own = &json["nodes"][0]["own_word"];
    assert_eq!(own["readiness"]["state"], "not_ready", "{json:#}");
    assert!(own["node_status"]["behind"].as_u64().is_some(), "{json:#}");

    // The clients' token: forest-0's, which forest-1 never signed.
    let text = std::fs::read_to_string(&config).expect("config");
    let client = format!(
        "[chain]\nclient_token_file = \"{}\"\n{text}",
        pool.nodes[0].2
    );
    std::fs::write(&config, client).expect("config");
    let json = check_json(&pool, true, &config);
    let warnings: Vec<&str> = json["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    assert!(
        warnings
            .contains(&"clients' token refused by forest-1: they will fail after a switch to it"),
        "{warnings:#?}"
    );
    assert!(
        !warnings
            .iter()
            .any(|w| w.starts_with("per-node tokens differ")),
        "{warnings:#?}"
    );
    assert_eq!(json["nodes"][0]["client_token"], "accepted", "{json:#}");
    assert_eq!(json["nodes"][1]["client_token"], "refused", "{json:#}");
    let out = String::from_utf8_lossy(&std::fs::read(&config).expect("config")).to_string();
    let token = std::fs::read_to_string(&pool.nodes[0].2).expect("token");
    assert!(!json.to_string().contains(token.trim()), "{out}");
}

/// `[messages]` against real Forest daemons: probe tokens made with `read` only (`AuthNew`)
/// are said at start to lack write, per node, in Forest's own refusal; a miner whose state the
/// genesis-stuck daemon cannot read is said once, in its words made inert; the loop runs on
/// and the pool is published; every `MpoolGetNonce` of the levelling answers, so no other
/// problem appears.
#[test]
fn real_forest_read_tokens_and_an_unreadable_miner_are_said_and_hold_nothing() {
    let Some(pool) = ForestPool::start("cc-forest-msgs", 2) else {
        return;
    };
    let nodes = pool.nodes.clone();
    in_netns(&pool.ns, move |rt| {
        rt.block_on(async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let nginx = start_nginx_with(
                dir.path(),
                &[nodes[0].1.split('/').nth(2).expect("host:port").to_string()],
                Duration::from_secs(60),
            );
            let mut text = String::new();
            for (i, (name, url, admin, _)) in nodes.iter().enumerate() {
                // A read token, made by the daemon itself.
                let admin = std::fs::read_to_string(admin).expect("token");
                let body = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"Filecoin.AuthNew","params":[["read"]]});
                let reply = reqwest::Client::new()
                    .post(url)
                    .bearer_auth(admin.trim())
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("AuthNew")
                    .text()
                    .await
                    .expect("a body");
                let reply: serde_json::Value = serde_json::from_str(&reply).expect("JSON");
                // AuthNew gives the token's bytes, base64 in JSON.
                let read = base64_decode(reply["result"].as_str().expect("a token"));
                let file = dir.path().join(format!("read{i}.token"));
                std::fs::write(&file, read).expect("token");
                text.push_str(&format!(
                    "[[node]]\nname = \"{name}\"\nurl = \"{url}\"\ntoken_file = {:?}\n",
                    file.display().to_string()
                ));
            }
            let config =
                write_run_config(dir.path(), &nginx, text, "[messages]\nminer = \"t01000\"\n");
            let run = start_run_near_genesis(&config);
            let api = api_url(&run).await;
            let up = wait_until(Duration::from_secs(20), || {
                servers(&nginx.upstream_file).len() == 2
            })
            .await;
            assert!(up.is_some(), "the pool never came up:\n{}", run.stderr());
            rounds_pass(&api, 4).await;
            let status = status_json(&api).await;
            let problems: Vec<String> = status["messages"]["problems"]
                .as_array()
                .expect("problems")
                .iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect();
            for (name, ..) in &nodes {
                assert!(
                    problems.contains(&format!(
                        "cannot carry messages to {name}: its token lacks write (set [[node]] write_token_file)"
                    )),
                    "{problems:#?}"
                );
            }
            let miner: Vec<&String> = problems
                .iter()
                .filter(|p| p.starts_with("cannot resolve miner t01000's addresses"))
                .collect();
            assert_eq!(miner.len(), 1, "{problems:#?}\n{}", run.stderr());
            assert!(miner[0].contains("StateMinerInfo"), "{miner:?}");
            assert_eq!(problems.len(), 3, "no other problem: {problems:#?}");
            assert!(!status["primary"].is_null(), "{status:#}");
            println!("real Forest [messages]: {problems:?}");
        })
    });
}

/// Standard base64 (with padding) to text: what `AuthNew` returns.
fn base64_decode(b64: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in b64.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

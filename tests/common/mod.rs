//! Helpers for the integration tests: real processes on loopback, cleaned up on drop.

#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chain_co_sim::testbed::{find_nginx, PrivateNginx};
use chain_co_sim::SimReady;

pub const BIN: &str = env!("CARGO_BIN_EXE_chain-co");

/// A child process killed when the guard drops, even when the test panics.
pub struct ChildGuard {
    pub child: Child,
    pub stderr_file: Option<PathBuf>,
}

impl ChildGuard {
    pub fn stderr(&self) -> String {
        self.stderr_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // A child that leads its own process group (a wrapper such as faketime, which forks
        // chain-co and waits) goes with everything it started: killing the wrapper alone
        // would leave chain-co running after the test.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if nix::unistd::getpgid(Some(pid)) == Ok(pid) {
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The simulator, started through the binary as a user would.
pub struct Sim {
    pub guard: ChildGuard,
    pub ready: SimReady,
}

impl Sim {
    pub fn start(names: &[&str], block_delay: &str) -> Sim {
        Sim::start_args(&["--nodes", &names.join(","), "--block-delay", block_delay])
    }

    /// `chain-co sim` with these arguments.
    pub fn start_args(args: &[&str]) -> Sim {
        let mut child = Command::new(BIN)
            .arg("sim")
            .args(args)
            .env("CHAIN_CO_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chain-co sim");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the ready line");
        let ready: SimReady = serde_json::from_str(&line).expect("the ready line is JSON");
        Sim {
            guard: ChildGuard {
                child,
                stderr_file: None,
            },
            ready,
        }
    }

    pub fn addr(&self, name: &str) -> String {
        self.node(name).addr.to_string()
    }

    pub fn node(&self, name: &str) -> &chain_co_sim::SimNodeAddr {
        self.ready
            .nodes
            .iter()
            .find(|n| n.name == name)
            .expect("known node")
    }

    /// Sends an op to the control endpoint, e.g. `{"op":"die"}`.
    pub async fn op(&self, name: &str, op: &str) {
        let url = format!("http://{}/nodes/{name}", self.ready.control);
        let resp = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(op.to_string())
            .send()
            .await
            .expect("control endpoint answers");
        assert!(resp.status().is_success(), "control refused {op}");
    }
}

/// nginx is required: CI installs it; elsewhere the failure says how to get it.
pub fn nginx_binary() -> PathBuf {
    find_nginx().expect(
        "these tests run a real nginx; install it (Debian: apt-get install -y nginx) \
         or point NGINX at the binary",
    )
}

pub fn start_nginx(dir: &Path, seed: &[String]) -> PrivateNginx {
    PrivateNginx::start(&nginx_binary(), dir, seed).expect("private nginx starts")
}

/// A chain-co config for the simulated pool, pointing at a private nginx. The status API
/// listens on a port the OS picks; [`api_url`] reads it from the log.
pub fn write_config(dir: &Path, sim: &Sim, nginx: &PrivateNginx, extra: &str) -> PathBuf {
    let path = dir.join("chain-co.toml");
    std::fs::write(&path, config_text(dir, sim, nginx, extra)).expect("write config");
    path
}

/// The text of `write_config`.
pub fn config_text(dir: &Path, sim: &Sim, nginx: &PrivateNginx, extra: &str) -> String {
    let mut text = String::new();
    for n in &sim.ready.nodes {
        text.push_str(&format!(
            "[[node]]\nname = \"{}\"\nurl = \"{}\"\n\n",
            n.name, n.url
        ));
    }
    let test_cmd: Vec<String> = nginx.test_cmd().iter().map(|a| format!("{a:?}")).collect();
    text.push_str(&format!(
        "[api]\nlisten = \"127.0.0.1:0\"\nstate_file = {:?}\n",
        dir.join("state.json").display().to_string()
    ));
    text.push_str(&format!(
        "[nginx]\noutput = {:?}\ntest_cmd = [{}]\nreload = {{ pid_file = {:?} }}\n{extra}\n",
        nginx.upstream_file.display().to_string(),
        test_cmd.join(", "),
        nginx.pid_file.display().to_string(),
    ));
    text
}

/// The status API's URL of a `chain-co run`, from its "status API listening" log line.
pub async fn api_url(run: &ChildGuard) -> String {
    let found = wait_until(Duration::from_secs(10), || {
        run.stderr().contains("status API listening")
    })
    .await;
    assert!(
        found.is_some(),
        "the API did not start; log:\n{}",
        run.stderr()
    );
    let log = run.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("status API listening"))
        .expect("found above");
    // Text logs say `listen=ADDR`, JSON logs `"listen":"ADDR"`.
    let addr = line
        .split("listen=")
        .nth(1)
        .or_else(|| line.split("\"listen\":\"").nth(1))
        .expect("a listen field")
        .split([' ', '"'])
        .next()
        .expect("address");
    format!("http://{addr}")
}

/// `chain-co run`, with its stderr kept in a file for the assertions.
pub fn start_run(config: &Path) -> ChildGuard {
    start_run_wrapped(&[], &[], config)
}

/// `chain-co run` behind a wrapper command (`prefix`, e.g. faketime or setpriv) and with extra
/// environment, its stderr kept in a file.
pub fn start_run_wrapped(prefix: &[&str], env: &[(&str, &str)], config: &Path) -> ChildGuard {
    let stderr_file = config.with_extension("stderr");
    let mut cmd = match prefix.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(BIN);
            // Its own group, so the guard's drop reaches chain-co under the wrapper too.
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
            c
        }
        None => Command::new(BIN),
    };
    let child = cmd
        .args(["run", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .env("CHAIN_CO_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).expect("stderr file"))
        .spawn()
        .expect("start chain-co run");
    ChildGuard {
        child,
        stderr_file: Some(stderr_file),
    }
}

/// The simulator's view of its nodes (`GET /nodes`): requests and websockets per node.
pub async fn sim_nodes(sim: &Sim) -> Vec<serde_json::Value> {
    let url = format!("http://{}/nodes", sim.ready.control);
    let text = reqwest::get(url)
        .await
        .expect("control")
        .text()
        .await
        .expect("body");
    serde_json::from_str(&text).expect("json")
}

/// Polls `cond` until it holds or `limit` passes; returns the time it took, or None.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The upstream servers in an nginx upstream file: (address, backup).
pub fn servers(upstream_file: &Path) -> Vec<(String, bool)> {
    chain_co_sim::testbed::upstream_servers(upstream_file)
}

pub fn primary_in(upstream_file: &Path) -> Option<String> {
    servers(upstream_file)
        .into_iter()
        .find(|(_, backup)| !backup)
        .map(|(a, _)| a)
}

/// A client sending ChainHead through nginx in a loop, counting where answers came from.
pub struct Load {
    pub ok: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    pub last_node: Arc<Mutex<String>>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub fn start(url: String) -> Load {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let last_node = Arc::new(Mutex::new(String::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let (o, f, l, s) = (ok.clone(), failed.clone(), last_node.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !s.is_cancelled() {
                let r = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(r#"{"jsonrpc":"2.0","method":"Filecoin.ChainHead","params":[],"id":1}"#)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().is_success() => {
                        let node = resp
                            .headers()
                            .get("x-sim-node")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        *l.lock().expect("lock") = node;
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {
                        f.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Load {
            ok,
            failed,
            last_node,
            stop,
            task,
        }
    }

    pub fn last_node(&self) -> String {
        self.last_node.lock().expect("lock").clone()
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    pub async fn stop(self) -> (u64, u64) {
        self.stop.cancel();
        let _ = self.task.await;
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// Waits until `GET {api}/healthz` answers 200: the first upstream is applied and reported.
pub async fn wait_healthy(api: &str, run: &ChildGuard) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = reqwest::get(format!("{api}/healthz")).await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never healthy; log:\n{}",
            run.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The name of the node nginx's upstream has as primary (waits up to 10 s for one).
pub fn primary_name(sim: &Sim, upstream_file: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(addr) = primary_in(upstream_file) {
            if let Some(n) = sim.ready.nodes.iter().find(|n| n.addr.to_string() == addr) {
                return n.name.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no primary in {}",
            upstream_file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The configured nodes other than `not`, in order.
pub fn others<'a>(sim: &'a Sim, not: &str) -> Vec<&'a str> {
    sim.ready
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .filter(|n| *n != not)
        .collect()
}

/// `GET {api}/status` as JSON.
pub async fn status_json(api: &str) -> serde_json::Value {
    let body = reqwest::get(format!("{api}/status"))
        .await
        .expect("the status API answers")
        .text()
        .await
        .expect("a body");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("status is not JSON ({e}): {body}"))
}

/// A private nginx whose old workers keep their connections for `worker_shutdown_timeout`.
pub fn start_nginx_with(
    dir: &Path,
    seed: &[String],
    worker_shutdown_timeout: Duration,
) -> PrivateNginx {
    PrivateNginx::start_with(&nginx_binary(), dir, seed, worker_shutdown_timeout)
        .expect("private nginx starts")
}

/// Waits until `run`'s loop has completed `n` more probe rounds, by the status API's round
/// counter. A "nothing happened" check made after this means the loop ran and decided nothing,
/// not that it stalled (a fixed sleep cannot tell the two apart).
pub async fn rounds_pass(api: &str, n: u64) {
    let round = |s: serde_json::Value| s["round"].as_u64().unwrap_or(0);
    let start = round(status_json(api).await);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if round(status_json(api).await) >= start + n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the loop did not complete {n} probe rounds within 60s: stuck?"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A test that cannot run here says why and returns, except in CI (`CI` set), where a skip
/// would report a pass for a test that never ran: there it fails.
pub fn skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("CI must run this test, but: {why}");
    }
    println!("SKIPPED: {why}");
}

/// A process holding a plain TCP connection to `addr` as user `uid`; its stdout says "closed"
/// once the connection ends.
pub struct DirectClient {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl DirectClient {
    pub fn start(uid: u32, addr: &str) -> DirectClient {
        use std::io::BufRead;
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        let mut child = std::process::Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "bash",
                "-c",
                &format!(
                    "exec 3<>/dev/tcp/{host}/{port}; echo up; cat <&3 >/dev/null; echo closed"
                ),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("setpriv bash");
        let out = child.stdout.take().expect("stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().expect("lock").push(line);
            }
        });
        DirectClient { child, lines }
    }

    pub fn said(&self, what: &str) -> bool {
        self.lines.lock().expect("lock").iter().any(|l| l == what)
    }
}

impl Drop for DirectClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Benchmarks of what chain-co buys an operator, side by side with plain nginx passive checks.
//! Run through `bench/run-all.sh` (release build). Loopback only, bounded in time, cleans up.
//!
//! Systems: (a) chain-co + nginx (primary + backups, push on); (b) plain nginx round-robin over
//! the same nodes with passive checks (`max_fails=1 fail_timeout=10s`), no chain-co.
//! Scenarios: primary dies, primary stalls, primary slows down, flapping node, quiet period,
//! scale (10/100/1000 nodes), data-path cost, and miners' websocket sessions (`sessions`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chain_co_sim::testbed::{find_nginx, rss_kib, upstream_servers, PrivateNginx, Session};
use chain_co_sim::{Op, Profile, SimPool, SimSpec};

const BLOCK: Duration = Duration::from_secs(2);
const INTERVAL_MS: u64 = 500;
const FALL: u64 = 2;
const MAX_LAG: u64 = 2;

#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    latency: Duration,
    ok: bool,
    node: String,
    height: u64,
}

type Samples = Arc<Mutex<Vec<Sample>>>;

/// When the last fault run saw nginx's primary move off the victim.
static MOVED: Mutex<Option<Option<Duration>>> = Mutex::new(None);

fn moved() -> String {
    match MOVED.lock().expect("lock").take().flatten() {
        Some(d) => ms(d),
        None => "never".into(),
    }
}

/// `concurrency` clients sending ChainHead through `url` until `stop`.
fn load(
    url: String,
    concurrency: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Samples, Vec<tokio::task::JoinHandle<()>>) {
    let samples: Samples = Arc::default();
    let tasks = (0..concurrency)
        .map(|_| {
            let (url, samples, stop) = (url.clone(), samples.clone(), stop.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(
                            r#"{"jsonrpc":"2.0","method":"Filecoin.ChainHead","params":[],"id":1}"#,
                        )
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    let (ok, node, height) = match r {
                        Ok(resp) if resp.status().is_success() => {
                            let node = resp
                                .headers()
                                .get("x-sim-node")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let body = resp.text().await.unwrap_or_default();
                            let height = serde_json::from_str::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|v| v["result"]["Height"].as_u64());
                            (height.is_some(), node, height.unwrap_or(0))
                        }
                        _ => (false, String::new(), 0),
                    };
                    samples.lock().expect("lock").push(Sample {
                        at: t,
                        latency: t.elapsed(),
                        ok,
                        node,
                        height,
                    });
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    (samples, tasks)
}

/// A running system under test.
struct System {
    name: &'static str,
    _dir: tempfile::TempDir,
    nginx: PrivateNginx,
    chain_co: Option<Child>,
    api: Option<String>,
    /// Where clients send requests (nginx, or HAProxy for the third system).
    url: String,
    haproxy: Option<Child>,
}

impl Drop for System {
    fn drop(&mut self) {
        for c in [self.chain_co.as_mut(), self.haproxy.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The systems compared.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    ChainCo,
    PlainNginx,
    /// HAProxy with active HTTP checks (a JSON-RPC POST every 500 ms, fall 2, rise 2).
    Haproxy,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ChainCo => "chain-co + nginx",
            Kind::PlainNginx => "plain nginx (passive checks)",
            Kind::Haproxy => "HAProxy (active httpchk)",
        }
    }
}

/// HAProxy over the same nodes, checking each with a ChainHead POST.
fn start_haproxy(sim: &SimPool, dir: &Path) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let servers: String = sim
        .ready()
        .nodes
        .iter()
        .map(|n| format!("    server {} {} check\n", n.name, n.addr))
        .collect();
    let cfg = format!(
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 1h\n    timeout server 1h\n    retries 1\n    option redispatch\n\
         frontend f\n    bind 127.0.0.1:{port}\n    default_backend b\n\
         backend b\n    balance roundrobin\n    option httpchk\n\
             http-check send meth POST uri /rpc/v1 hdr Content-Type application/json body \"{{\\\"jsonrpc\\\":\\\"2.0\\\",\\\"method\\\":\\\"Filecoin.ChainHead\\\",\\\"params\\\":[],\\\"id\\\":1}}\"\n\
             http-check expect status 200\n    default-server inter 500ms fall 2 rise 2\n    http-response set-header X-Upstream-Server %s\n{servers}"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).expect("haproxy.cfg");
    let child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy (apt-get install -y haproxy)");
    (child, format!("http://127.0.0.1:{port}/rpc/v1"))
}

/// The chain-co binary measured: `CHAIN_CO_BIN` (another build, side by side), else the one
/// beside this bench.
fn chain_co_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("CHAIN_CO_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("exe");
    // target/release/examples/bench → target/release/chain-co
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("chain-co")
}

fn config(sim: &SimPool, nginx: &PrivateNginx, dir: &Path, extra: &str) -> PathBuf {
    let mut text = String::new();
    for n in &sim.ready().nodes {
        text.push_str(&format!(
            "[[node]]\nname = \"{}\"\nurl = \"{}\"\n",
            n.name, n.url
        ));
    }
    let cmd: Vec<String> = nginx.test_cmd().iter().map(|a| format!("{a:?}")).collect();
    // `# mainnet timing` in `extra`: lag_grace derived from the block delay, as shipped.
    let lag_grace = if extra.contains("# mainnet timing") {
        ""
    } else {
        "lag_grace = \"1s\"\n"
    };
    text.push_str(&format!(
        "[probe]\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"400ms\"\n{extra}\n[select]\nmax_lag = {MAX_LAG}\nrise = 2\nfall = {FALL}\n{lag_grace}\
         [api]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{d}/state.json\"\n\
         [nginx]\noutput = {:?}\ntest_cmd = [{}]\nreload = {{ pid_file = {:?} }}\n",
        nginx.upstream_file.display().to_string(),
        cmd.join(", "),
        nginx.pid_file.display().to_string(),
        d = dir.display()
    ));
    let path = dir.join("chain-co.toml");
    std::fs::write(&path, text).expect("config");
    path
}

async fn start(kind: Kind, name: &'static str, sim: &SimPool, extra: &str) -> System {
    let with_chain_co = kind == Kind::ChainCo;
    let dir = tempfile::tempdir().expect("tempdir");
    let addrs: Vec<String> = sim
        .ready()
        .nodes
        .iter()
        .map(|n| n.addr.to_string())
        .collect();
    let nginx =
        PrivateNginx::start(&find_nginx().expect("nginx"), dir.path(), &addrs[..1]).expect("nginx");
    if !with_chain_co {
        // What most operators have: every node an equal server, nginx's passive checks.
        let servers: String = addrs
            .iter()
            .map(|a| format!("    server {a} max_fails=1 fail_timeout=10s;\n"))
            .collect();
        std::fs::write(
            &nginx.upstream_file,
            format!("upstream filecoin {{\n{servers}    keepalive 16;\n}}\n"),
        )
        .expect("upstream");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(nginx.pid() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("reload");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (haproxy, url) = if kind == Kind::Haproxy {
            let (child, url) = start_haproxy(sim, dir.path());
            tokio::time::sleep(Duration::from_millis(1500)).await;
            (Some(child), url)
        } else {
            (None, nginx.rpc_url())
        };
        return System {
            name,
            _dir: dir,
            url,
            nginx,
            chain_co: None,
            api: None,
            haproxy,
        };
    }
    let cfg = config(sim, &nginx, dir.path(), extra);
    let log = dir.path().join("chain-co.log");
    let child = Command::new(chain_co_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(std::fs::File::create(&log).expect("log"))
        .stdout(Stdio::null())
        .spawn()
        .expect("chain-co");
    let api = healthy_api(&log).await;
    tokio::time::sleep(Duration::from_millis(INTERVAL_MS * 2)).await;
    System {
        name,
        _dir: dir,
        url: nginx.rpc_url(),
        nginx,
        chain_co: Some(child),
        api: Some(api),
        haproxy: None,
    }
}

/// The status API of a chain-co started with its log in `log`, once it is healthy.
async fn healthy_api(log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let api = loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("status API listening")) {
            break format!("http://{}", l.split("listen=").nth(1).expect("addr").trim());
        }
        assert!(Instant::now() < deadline, "chain-co did not start: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    while reqwest::get(format!("{api}/healthz"))
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "chain-co never healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api
}

async fn status(sys: &System) -> serde_json::Value {
    match &sys.api {
        Some(api) => serde_json::from_str(
            &reqwest::get(format!("{api}/status"))
                .await
                .expect("status")
                .text()
                .await
                .expect("body"),
        )
        .expect("JSON"),
        None => serde_json::Value::Null,
    }
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

async fn pool() -> SimPool {
    pool_with(BLOCK).await
}

async fn pool_with(block_delay: Duration) -> SimPool {
    SimPool::start(SimSpec {
        nodes: ["a", "b", "c"]
            .iter()
            .map(|n| (n.to_string(), Profile::Lotus))
            .collect(),
        block_delay,
        null_rounds: false,
        token: None,
        listen: [127, 0, 0, 1].into(),
        control: ([127, 0, 0, 1], 0).into(),
        start_height: 1000,
    })
    .await
    .expect("sim")
}

/// Runs one fault scenario on one system (`extra`: more `[probe]` keys for chain-co); returns (samples, fault time, primary at fault).
async fn fault_run(
    kind: Kind,
    op: Op,
    watch: Duration,
) -> (Vec<Sample>, Instant, String, System, SimPool) {
    fault_run_with(kind, kind.name(), "", op, watch).await
}

async fn fault_run_with(
    kind: Kind,
    name: &'static str,
    extra: &str,
    op: Op,
    watch: Duration,
) -> (Vec<Sample>, Instant, String, System, SimPool) {
    let sys_chain_co = kind == Kind::ChainCo;
    let sim = pool().await;
    let sys = start(kind, name, &sim, extra).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (samples, tasks) = load(sys.url.clone(), 4, stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The node that takes the traffic: chain-co's primary, or (round-robin) node a.
    let victim = match upstream_servers(&sys.nginx.upstream_file)
        .into_iter()
        .find(|(_, b)| !b)
    {
        Some((addr, _)) if sys_chain_co => sim
            .ready()
            .nodes
            .iter()
            .find(|n| n.addr.to_string() == addr)
            .map(|n| n.name.clone())
            .unwrap_or("a".into()),
        _ => "a".into(),
    };
    let victim_addr = sim
        .ready()
        .nodes
        .iter()
        .find(|n| n.name == victim)
        .map(|n| n.addr.to_string())
        .unwrap_or_default();
    let file = sys.nginx.upstream_file.clone();
    let t0 = Instant::now();
    sim.apply(&victim, op).await.expect("fault");
    // When nginx's primary stopped being the victim (chain-co only).
    let watcher = tokio::spawn(async move {
        while t0.elapsed() < watch {
            let primary = upstream_servers(&file)
                .into_iter()
                .find(|(_, b)| !b)
                .map(|(a, _)| a);
            if primary.is_some_and(|p| p != victim_addr) {
                return Some(t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    });
    tokio::time::sleep(watch).await;
    let moved = watcher.await.ok().flatten();
    MOVED.lock().expect("lock").replace(moved);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let s = samples.lock().expect("lock").clone();
    (s, t0, victim, sys, sim)
}

async fn scenario_dies() {
    println!("\n## 1. Primary dies (port closed); 4 clients, one request each every 20 ms");
    println!("| system | failed requests after the death | requests to other nodes resumed after | chain-co moved nginx's primary after |");
    println!("|---|---|---|---|");
    for kind in [Kind::ChainCo, Kind::PlainNginx, Kind::Haproxy] {
        let with = kind == Kind::ChainCo;
        let (s, t0, victim, sys, sim) = fault_run(kind, Op::Die, Duration::from_secs(6)).await;
        let after: Vec<&Sample> = s.iter().filter(|x| x.at >= t0).collect();
        let failed = after.iter().filter(|x| !x.ok).count();
        let resumed = after
            .iter()
            .find(|x| x.ok && x.node != victim)
            .map(|x| x.at.duration_since(t0) + x.latency);
        let moved = if with {
            moved()
        } else {
            "n/a (round-robin, no primary)".into()
        };
        println!(
            "| {} | {failed} of {} | {} | {moved} |",
            sys.name,
            after.len(),
            resumed.map_or("-".into(), ms)
        );
        drop(sys);
        sim.shutdown().await;
    }
}

async fn scenario_stalls() {
    println!("\n## 2. Primary stalls (answers, head stops); stale = height more than max_lag ({MAX_LAG}) below the best seen; block delay {}s", BLOCK.as_secs());
    println!("| system | stale answers (share, 20 s after the stall) | last stale answer after the stall | nginx's primary moved after |");
    println!("|---|---|---|---|");
    for (name, kind, extra) in [
        ("chain-co + nginx (push)", Kind::ChainCo, ""),
        (
            "chain-co + nginx (polling only)",
            Kind::ChainCo,
            "push = false",
        ),
        (Kind::PlainNginx.name(), Kind::PlainNginx, ""),
        (Kind::Haproxy.name(), Kind::Haproxy, ""),
    ] {
        let with = kind == Kind::ChainCo;
        let (s, t0, _victim, sys, sim) =
            fault_run_with(kind, name, extra, Op::Stall, Duration::from_secs(20)).await;
        let mut best = 0;
        let mut stale = 0;
        let mut last_stale = None;
        let mut n = 0;
        for x in s.iter().filter(|x| x.ok) {
            best = best.max(x.height);
            if x.at >= t0 {
                n += 1;
                if x.height + MAX_LAG < best {
                    stale += 1;
                    last_stale = Some(x.at.duration_since(t0));
                }
            }
        }
        let moved = if with { moved() } else { "n/a".into() };
        println!(
            "| {} | {stale} of {n} ({:.1} %) | {} | {moved} |",
            sys.name,
            100.0 * stale as f64 / n.max(1) as f64,
            last_stale.map_or("none".into(), ms)
        );
        drop(sys);
        sim.shutdown().await;
    }
}

async fn scenario_slow() {
    println!("\n## 3. Primary slows down (every reply takes 2 s)");
    println!(
        "| system | p50 / p99 before | p50 / p99 in the 10 s after | p50 / p99 from 10 s after | nginx's primary moved after |"
    );
    println!("|---|---|---|---|---|");
    for kind in [Kind::ChainCo, Kind::PlainNginx, Kind::Haproxy] {
        let with = kind == Kind::ChainCo;
        let (s, t0, _victim, sys, sim) = fault_run(
            kind,
            Op::Slow {
                delay: Duration::from_secs(2),
            },
            Duration::from_secs(20),
        )
        .await;
        let lat = |from: Instant, to: Instant| {
            s.iter()
                .filter(|x| x.ok && x.at >= from && x.at < to)
                .map(|x| x.latency)
                .collect::<Vec<_>>()
        };
        let before = lat(t0 - Duration::from_secs(3), t0);
        let during = lat(t0, t0 + Duration::from_secs(10));
        let after = lat(t0 + Duration::from_secs(10), t0 + Duration::from_secs(30));
        let moved = if with { moved() } else { "n/a".into() };
        println!(
            "| {} | {} / {} | {} / {} | {} / {} | {moved} |",
            sys.name,
            ms(pct(before.clone(), 0.5)),
            ms(pct(before, 0.99)),
            ms(pct(during.clone(), 0.5)),
            ms(pct(during, 0.99)),
            ms(pct(after.clone(), 0.5)),
            ms(pct(after, 0.99))
        );
        drop(sys);
        sim.shutdown().await;
    }
}

async fn scenario_flap() {
    println!("\n## 4. Flapping node (node b alternates good and bad every probe interval, 60 s)");
    println!("| system | nginx reloads per minute | primary switches per minute |");
    println!("|---|---|---|");
    let sim = pool().await;
    let sys = start(Kind::ChainCo, "chain-co + nginx", &sim, "").await;
    let before = status(&sys).await;
    let t0 = Instant::now();
    let mut bad = false;
    while t0.elapsed() < Duration::from_secs(60) {
        bad = !bad;
        sim.apply("b", if bad { Op::RpcError } else { Op::Heal })
            .await
            .expect("op");
        tokio::time::sleep(Duration::from_millis(INTERVAL_MS)).await;
    }
    let after = status(&sys).await;
    let d = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
    println!(
        "| chain-co + nginx | {} | {} |",
        d("reloads"),
        d("switches")
    );
    println!(
        "| plain nginx | 0 (never reloads; sends ~1/3 of requests to b, errors included) | n/a |"
    );
    drop(sys);
    sim.shutdown().await;
}

async fn scenario_quiet() {
    println!("\n## 5. Quiet period (healthy pool, 60 s)");
    let sim = pool().await;
    let sys = start(Kind::ChainCo, "chain-co + nginx", &sim, "").await;
    let log = sys._dir.path().join("chain-co.log");
    let lines0 = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();
    let before = status(&sys).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = status(&sys).await;
    let lines1 = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();
    println!("| reloads | log lines | upstream rewrites |");
    println!("|---|---|---|");
    println!(
        "| {} | {} | {} |",
        after["reloads"].as_u64().unwrap_or(0) - before["reloads"].as_u64().unwrap_or(0),
        lines1 - lines0,
        after["reloads"].as_u64().unwrap_or(0) - before["reloads"].as_u64().unwrap_or(0)
    );
    drop(sys);
    sim.shutdown().await;
}

fn proc_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
}

async fn scenario_scale() {
    println!(
        "\n## 6. Scale: one chain-co probing N simulated nodes (probe interval 5 s, push on, 30 s measured)"
    );
    println!("| nodes | block delay | probe round (median / max of 6) | chain-co CPU (share of one core) | chain-co RSS |");
    println!("|---|---|---|---|---|");
    // The 2 s row is the steady state: every node has sent many heads and replies of every
    // size, so per-connection buffers are as large as they get.
    for (n, block_delay) in [(10usize, 30u64), (100, 30), (1000, 30), (1000, 2)] {
        let sim = SimPool::start(SimSpec {
            nodes: (0..n)
                .map(|i| (format!("n{i:04}"), Profile::Lotus))
                .collect(),
            block_delay: Duration::from_secs(block_delay),
            null_rounds: false,
            token: None,
            listen: [127, 0, 0, 1].into(),
            control: ([127, 0, 0, 1], 0).into(),
            start_height: 1000,
        })
        .await
        .expect("sim");
        let sys_dir = tempfile::tempdir().expect("tempdir");
        let nginx = PrivateNginx::start(
            &find_nginx().expect("nginx"),
            sys_dir.path(),
            &[sim.ready().nodes[0].addr.to_string()],
        )
        .expect("nginx");
        let cfg = config(&sim, &nginx, sys_dir.path(), "")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&cfg).expect("cfg").replace(
            &format!("interval = \"{INTERVAL_MS}ms\"\ntimeout = \"400ms\""),
            "interval = \"5s\"\ntimeout = \"3s\"",
        );
        std::fs::write(&cfg, text).expect("cfg");
        let log = sys_dir.path().join("chain-co.log");
        let mut child = Command::new(chain_co_bin())
            .args(["run", "--config", &cfg])
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("chain-co");
        let pid = child.id();
        tokio::time::sleep(Duration::from_secs(12)).await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let api = text
            .lines()
            .find(|l| l.contains("status API listening"))
            .and_then(|l| l.split("listen=").nth(1))
            .map(|a| a.trim().to_string())
            .unwrap_or_default();
        let round_now = || {
            let api = api.clone();
            async move {
                let metrics = match reqwest::get(format!("http://{api}/metrics")).await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                metrics
                    .lines()
                    .find(|l| l.starts_with("chain_co_probe_round_seconds "))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(f64::NAN)
            }
        };
        let ticks0 = proc_cpu_ticks(pid);
        let t0 = Instant::now();
        let mut rounds = Vec::new();
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            rounds.push(round_now().await);
        }
        let cpu = (proc_cpu_ticks(pid) - ticks0) as f64 / 100.0 / t0.elapsed().as_secs_f64();
        let rss = rss_kib(pid);
        rounds.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {n} | {block_delay} s | {:.0} / {:.0} ms | {:.2} % | {:.1} MiB |",
            rounds[rounds.len() / 2] * 1000.0,
            rounds[rounds.len() - 1] * 1000.0,
            cpu * 100.0,
            rss as f64 / 1024.0
        );
        let _ = child.kill();
        let _ = child.wait();
        drop(nginx);
        sim.shutdown().await;
    }
}

async fn scenario_data_path() {
    println!("\n## 7. Data-path cost: 2000 sequential ChainHead requests");
    let sim = pool().await;
    let direct = sim.ready().nodes[0].url.clone();
    let measure = |url: String| async move {
        let http = reqwest::Client::new();
        let mut v = Vec::new();
        for _ in 0..2000 {
            let t = Instant::now();
            let _ = http
                .post(&url)
                .header("content-type", "application/json")
                .body(r#"{"jsonrpc":"2.0","method":"Filecoin.ChainHead","params":[],"id":1}"#)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map(|_| ());
            v.push(t.elapsed());
        }
        v
    };
    println!("| path | p50 | p99 |");
    println!("|---|---|---|");
    let d = measure(direct).await;
    println!(
        "| client → daemon | {:.0} µs | {:.0} µs |",
        pct(d.clone(), 0.5).as_micros(),
        pct(d, 0.99).as_micros()
    );
    let plain = start(Kind::PlainNginx, "plain nginx", &sim, "").await;
    let p = measure(plain.nginx.rpc_url()).await;
    println!(
        "| client → nginx → daemon (no chain-co) | {:.0} µs | {:.0} µs |",
        pct(p.clone(), 0.5).as_micros(),
        pct(p, 0.99).as_micros()
    );
    drop(plain);
    let with = start(Kind::ChainCo, "chain-co + nginx", &sim, "").await;
    let c = measure(with.nginx.rpc_url()).await;
    println!(
        "| client → nginx → daemon (chain-co running) | {:.0} µs | {:.0} µs |",
        pct(c.clone(), 0.5).as_micros(),
        pct(c, 0.99).as_micros()
    );
    drop(with);
    sim.shutdown().await;
}

/// The CPU cost of checking heads' block headers against their CIDs (issue #33): a tipset of
/// five real mainnet blocks (crates/chain-co/tests/data/headers.json), hashed (first sighting)
/// and checked against the remembered facts (every later node reporting it).
fn scenario_headers() {
    use chain_co::proof::HeaderCheck;
    println!("\n## 10. Header checks: a tipset of 5 real mainnet blocks");
    let data: serde_json::Value =
        serde_json::from_str(include_str!("../crates/chain-co/tests/data/headers.json"))
            .expect("fixture");
    let blocks: Vec<&serde_json::Value> = data["mainnet_blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .take(5)
        .collect();
    let tipset = serde_json::json!({
        "Cids": blocks.iter().map(|b| serde_json::json!({"/": b["cid"]})).collect::<Vec<_>>(),
        "Blocks": blocks.iter().map(|b| b["block"].clone()).collect::<Vec<_>>(),
        "Height": 0,
    })
    .to_string();
    let time = |n: u32, f: &dyn Fn()| {
        let t0 = Instant::now();
        for _ in 0..n {
            f();
        }
        t0.elapsed() / n
    };
    let cold = time(2_000, &|| {
        std::hint::black_box(HeaderCheck::default().check_tipset(&tipset));
    });
    let warm_check = HeaderCheck::default();
    warm_check.check_tipset(&tipset);
    let warm = time(20_000, &|| {
        std::hint::black_box(warm_check.check_tipset(&tipset));
    });
    println!("| check | per tipset (5 blocks) |");
    println!("|---|---|");
    println!(
        "| first sighting (re-encode, blake2b-256) | {:.1} µs |",
        cold.as_secs_f64() * 1e6
    );
    println!(
        "| seen before (facts compared) | {:.1} µs |",
        warm.as_secs_f64() * 1e6
    );
    // One BLS verification of a real block's BlockSig (Forest's Space Race header and its
    // worker's key), as part 2 of heads by proof will do once per new block.
    let signed = &data["signed_headers"][0];
    let header = chain_co::proof::header::read(&signed["block"].to_string()).expect("header");
    let key = chain_co::proof::signature::bls_key_of(signed["worker_key"].as_str().expect("key"))
        .expect("key");
    let sig = time(50, &|| {
        std::hint::black_box(chain_co::proof::signature::verify_block_sig(&header, &key))
            .expect("verifies");
    });
    println!(
        "| BlockSig verified (one block, BLS) | {:.0} µs |",
        sig.as_secs_f64() * 1e6
    );
    for n in [10u32, 1000] {
        let round = cold + warm * (n - 1);
        println!(
            "| a probe round of {n} nodes on one new head | {:.2} ms |",
            round.as_secs_f64() * 1e3
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if find_nginx().is_none() {
        eprintln!("the benchmarks need nginx (apt-get install -y nginx)");
        std::process::exit(1);
    }
    let all = [
        "dies",
        "stalls",
        "slow",
        "flap",
        "quiet",
        "scale",
        "data-path",
        "sessions",
        "trust",
        "headers",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let chosen: Vec<&str> = if args.is_empty() {
        all.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    println!(
        "# chain-co benchmarks — {} cores, block delay {} s, probe interval {} ms, fall {FALL}, max_lag {MAX_LAG}, lag_grace 1 s",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        BLOCK.as_secs(),
        INTERVAL_MS
    );
    for s in chosen {
        match s {
            "dies" => scenario_dies().await,
            "stalls" => scenario_stalls().await,
            "slow" => scenario_slow().await,
            "flap" => scenario_flap().await,
            "quiet" => scenario_quiet().await,
            "scale" => scenario_scale().await,
            "data-path" => scenario_data_path().await,
            "sessions" => scenario_sessions().await,
            "trust" => scenario_trust().await,
            "headers" => scenario_headers(),
            other => eprintln!("unknown scenario {other}; choose from {all:?}"),
        }
    }
}

/// The systems a miner's websocket session is measured on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SessionSystem {
    /// chain-co + nginx, sessions moved by SOCK_DESTROY; nginx-examples' worker_shutdown_timeout 1h.
    ChainCoNginx,
    /// chain-co + nginx without CAP_NET_ADMIN: sessions end at worker_shutdown_timeout (30 s).
    ChainCoNginxFallback,
    /// chain-co driving HAProxy's runtime API (`shutdown sessions server`).
    ChainCoHaproxy,
    PlainNginx,
    HaproxyActive,
}

impl SessionSystem {
    fn name(self) -> &'static str {
        match self {
            SessionSystem::ChainCoNginx => "chain-co + nginx (CAP_NET_ADMIN)",
            SessionSystem::ChainCoNginxFallback => {
                "chain-co + nginx, no CAP_NET_ADMIN (worker_shutdown_timeout 30s)"
            }
            SessionSystem::ChainCoHaproxy => "chain-co + HAProxy runtime API",
            SessionSystem::PlainNginx => "plain nginx (passive checks)",
            SessionSystem::HaproxyActive => "HAProxy (active httpchk)",
        }
    }
}

/// A system for the session scenarios: (system, the address sessions connect to).
async fn start_session_system(
    which: SessionSystem,
    sim: &SimPool,
) -> (System, std::net::SocketAddr) {
    let addr_of = |url: &str| -> std::net::SocketAddr {
        url.trim_start_matches("http://")
            .trim_end_matches("/rpc/v1")
            .parse()
            .expect("host:port")
    };
    match which {
        SessionSystem::PlainNginx | SessionSystem::HaproxyActive => {
            let kind = if which == SessionSystem::PlainNginx {
                Kind::PlainNginx
            } else {
                Kind::Haproxy
            };
            let sys = start(kind, which.name(), sim, "").await;
            let addr = addr_of(&sys.url);
            return (sys, addr);
        }
        _ => {}
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let addrs: Vec<String> = sim
        .ready()
        .nodes
        .iter()
        .map(|n| n.addr.to_string())
        .collect();
    let shutdown = if which == SessionSystem::ChainCoNginxFallback {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(3600)
    };
    let nginx = PrivateNginx::start_with(
        &find_nginx().expect("nginx"),
        dir.path(),
        &addrs[..1],
        shutdown,
    )
    .expect("nginx");
    let cfg = config(sim, &nginx, dir.path(), "");
    let (haproxy, url) = if which == SessionSystem::ChainCoHaproxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let d = dir.path().display();
        let servers: String = sim
            .ready()
            .nodes
            .iter()
            .map(|n| format!("    server {} {}\n", n.name, n.addr))
            .collect();
        // haproxy-examples' settings: timeouts of an hour for websockets, no httpchk.
        std::fs::write(
            dir.path().join("haproxy.cfg"),
            format!(
                "global\n    stats socket {d}/admin.sock mode 600 level admin\n\
                 defaults\n    mode http\n    timeout connect 2s\n    timeout client 1h\n    timeout server 1h\n    timeout tunnel 1h\n\
                 frontend f\n    bind 127.0.0.1:{port}\n    default_backend filecoin\n\
                 backend filecoin\n    balance roundrobin\n    retries 1\n    option redispatch\n    http-response set-header X-Upstream-Server %s\n{servers}"
            ),
        )
        .expect("haproxy.cfg");
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(dir.path().join("haproxy.cfg"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (apt-get install -y haproxy)");
        let sock = dir.path().join("admin.sock");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "haproxy did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // HAProxy instead of nginx: one target per config.
        let text = std::fs::read_to_string(&cfg).expect("config");
        let mut text = text[..text.find("[nginx]\n").expect("an [nginx] section")].to_string();
        text.push_str(&format!("[haproxy]\nsocket = \"{d}/admin.sock\"\n"));
        std::fs::write(&cfg, text).expect("config");
        (Some(child), format!("http://127.0.0.1:{port}/rpc/v1"))
    } else {
        (None, nginx.rpc_url())
    };
    let log = dir.path().join("chain-co.log");
    let mut cmd = if which == SessionSystem::ChainCoNginxFallback {
        let mut c = Command::new("setpriv");
        c.args(["--bounding-set", "-net_admin", "--"])
            .arg(chain_co_bin());
        c
    } else {
        Command::new(chain_co_bin())
    };
    let child = cmd
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(std::fs::File::create(&log).expect("log"))
        .stdout(Stdio::null())
        .spawn()
        .expect("chain-co");
    let api = healthy_api(&log).await;
    // Every node up and the first reload's old workers gone.
    tokio::time::sleep(Duration::from_millis(INTERVAL_MS * 4)).await;
    let addr = addr_of(&url);
    (
        System {
            name: which.name(),
            _dir: dir,
            url,
            nginx,
            chain_co: Some(child),
            api: Some(api),
            haproxy,
        },
        addr,
    )
}

/// A pool, the system under test and one miner-like session through it, going.
async fn session_running(which: SessionSystem) -> (SimPool, System, Session) {
    let sim = pool().await;
    let (sys, addr) = start_session_system(which, &sim).await;
    let s = Session::start(addr);
    session_going(&s).await;
    (sim, sys, s)
}

/// The node a session is on, from the header its balancer set (an address or a server name).
fn session_node(sim: &SimPool, s: &Session) -> String {
    let up = s.log().upstream().unwrap_or("").to_string();
    sim.ready()
        .nodes
        .iter()
        .find(|n| n.addr.to_string() == up || n.name == up)
        .map(|n| n.name.clone())
        .unwrap_or(up)
}

async fn session_going(s: &Session) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.log().heads.len() < 2 || s.log().upstream().is_none() {
        assert!(Instant::now() < deadline, "the session never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// When chain-co's primary left `victim`, watched until `limit`.
async fn switch_after(
    sys: &System,
    victim: &str,
    t0: Instant,
    limit: Duration,
) -> Option<Duration> {
    sys.api.as_ref()?;
    while t0.elapsed() < limit {
        if status(sys).await["primary"]
            .as_str()
            .is_some_and(|p| p != victim)
        {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn scenario_sessions() {
    let systems = [
        SessionSystem::ChainCoNginx,
        SessionSystem::ChainCoNginxFallback,
        SessionSystem::ChainCoHaproxy,
        SessionSystem::PlainNginx,
        SessionSystem::HaproxyActive,
    ];
    let window = Duration::from_secs(40);
    println!("\n## 8. A miner's websocket session (one websocket, a ChainNotify subscription, a ChainHead call every 250 ms, reconnect 200 ms after a cut)");
    println!(
        "\n### 8a. The session's daemon stalls ({} s watched)",
        window.as_secs()
    );
    println!("| system | chain-co switched after | session fresh again after the switch | after the stall | stale answers | session cuts |");
    println!("|---|---|---|---|---|---|");
    for which in systems {
        let (sim, sys, s) = session_running(which).await;
        let victim = session_node(&sim, &s);
        let t0 = Instant::now();
        sim.apply(&victim, Op::Stall).await.expect("stall");
        let switched = switch_after(&sys, &victim, t0, window).await;
        let rest = window.saturating_sub(t0.elapsed());
        tokio::time::sleep(rest).await;
        let log = s.stop().await;
        // The stalled daemon's head: the highest answer the session had until the switch (or
        // a second after the stall, where nothing switches).
        let stalled_at = log.max_height_before(t0 + switched.unwrap_or(Duration::from_secs(1)));
        let fresh = log.first_head_above(t0, stalled_at).map(|t| t - t0);
        // Stale: answered after the pool has moved max_lag+1 epochs on, still at the old head.
        let stale_from = t0 + BLOCK * (MAX_LAG as u32 + 1);
        let stale = log
            .heads
            .iter()
            .filter(|(t, h)| *t >= stale_from && *h <= stalled_at)
            .count();
        let cuts = log.cuts.iter().filter(|t| **t >= t0).count();
        println!(
            "| {} | {} | {} | {} | {stale} | {cuts} |",
            which.name(),
            switched.map_or("n/a".into(), ms),
            match (fresh, switched) {
                (Some(f), Some(sw)) => ms(f.saturating_sub(sw)),
                (None, _) => format!("never (> {} s)", window.as_secs()),
                (Some(_), None) => "n/a".into(),
            },
            fresh.map_or(format!("never (> {} s)", window.as_secs()), ms),
        );
        drop(sys);
        sim.shutdown().await;
    }

    println!("\n### 8b. The session's daemon dies (15 s watched)");
    println!("| system | session cuts | session answered again after the death |");
    println!("|---|---|---|");
    for which in systems {
        let (sim, sys, s) = session_running(which).await;
        let victim = session_node(&sim, &s);
        let t0 = Instant::now();
        sim.apply(&victim, Op::Die).await.expect("die");
        tokio::time::sleep(Duration::from_secs(15)).await;
        let log = s.stop().await;
        // A dead daemon answers nothing: the first answer after the death is from another.
        let fresh = log.first_head_above(t0, 0).map(|t| t - t0);
        let cuts = log.cuts.iter().filter(|t| **t >= t0).count();
        println!(
            "| {} | {cuts} | {} |",
            which.name(),
            fresh.map_or("never".into(), ms)
        );
        drop(sys);
        sim.shutdown().await;
    }

    println!("\n### 8c. A backup falls 6 epochs behind and recovers, twice; the primary stays");
    println!("| system | session cuts | nginx reloads |");
    println!("|---|---|---|");
    for which in [SessionSystem::ChainCoNginx, SessionSystem::ChainCoHaproxy] {
        let (sim, sys, s) = session_running(which).await;
        let on = session_node(&sim, &s);
        let backup = ["a", "b", "c"]
            .into_iter()
            .find(|n| *n != on)
            .expect("a backup")
            .to_string();
        let reloads0 = status(&sys).await["reloads"].as_u64().unwrap_or(0);
        let t0 = Instant::now();
        for _ in 0..2 {
            sim.apply(&backup, Op::Lag { epochs: 6 })
                .await
                .expect("lag");
            wait_node(&sys, &backup, false).await;
            sim.apply(&backup, Op::Heal).await.expect("heal");
            wait_node(&sys, &backup, true).await;
        }
        let reloads = status(&sys).await["reloads"].as_u64().unwrap_or(0) - reloads0;
        let log = s.stop().await;
        let cuts = log.cuts.iter().filter(|t| **t >= t0).count();
        let reloads = if which == SessionSystem::ChainCoNginx {
            reloads.to_string()
        } else {
            "n/a (runtime API)".into()
        };
        println!("| {} | {cuts} | {reloads} |", which.name());
        drop(sys);
        sim.shutdown().await;
    }

    println!("\n### 8d. Sessions already on the new primary at a switch (chain-co + nginx)");
    println!("| sessions elsewhere | cut by the switch (10 s watched) |");
    println!("|---|---|");
    {
        let sim = pool().await;
        let (sys, addr) = start_session_system(SessionSystem::ChainCoNginx, &sim).await;
        let first = Session::start(addr);
        session_going(&first).await;
        let victim = session_node(&sim, &first);
        // chain-co paused: nginx alone sends new sessions past the dead primary to backups.
        let pid = nix::unistd::Pid::from_raw(sys.chain_co.as_ref().expect("chain-co").id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("stop");
        sim.apply(&victim, Op::Die).await.expect("die");
        let others: Vec<Session> = (0..4).map(|_| Session::start(addr)).collect();
        for o in &others {
            session_going(o).await;
        }
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("cont");
        let t0 = Instant::now();
        let _ = switch_after(&sys, &victim, t0, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let mut cut = 0;
        for o in others {
            cut += o.stop().await.cuts.len();
        }
        first.stop().await;
        println!("| 4 | {cut} |");
        drop(sys);
        sim.shutdown().await;
    }
}

/// Waits (up to 20 s) until chain-co reports `node` healthy or not.
async fn wait_node(sys: &System, node: &str, healthy: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let st = status(sys).await;
        let is = st["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|v| v["name"] == node))
            .and_then(|v| v["healthy"].as_bool());
        if is == Some(healthy) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The primary as nginx has it: the sim node whose address is the upstream's non-backup server.
fn nginx_primary(sim: &SimPool, sys: &System) -> Option<String> {
    let addr = upstream_servers(&sys.nginx.upstream_file)
        .into_iter()
        .find(|(_, b)| !b)
        .map(|(a, _)| a)?;
    sim.ready()
        .nodes
        .iter()
        .find(|n| n.addr.to_string() == addr)
        .map(|n| n.name.clone())
}

/// Watches a liar for `watch`: how long it held nginx's primary, and how long (summed over
/// the honest nodes) an honest node was out of the upstream.
async fn watch_liar(
    sim: &SimPool,
    sys: &System,
    liar: &str,
    watch: Duration,
) -> (Duration, Duration) {
    let step = Duration::from_millis(50);
    let (mut held, mut evicted) = (Duration::ZERO, Duration::ZERO);
    let t0 = Instant::now();
    while t0.elapsed() < watch {
        if nginx_primary(sim, sys).as_deref() == Some(liar) {
            held += step;
        }
        let s = status(sys).await;
        for n in s["nodes"].as_array().into_iter().flatten() {
            if n["name"] != liar && n["healthy"] != true {
                evicted += step;
            }
        }
        tokio::time::sleep(step).await;
    }
    (held, evicted)
}

/// Issue #22: one daemon reporting the pool's own head with ParentWeight + 1 (by poll and by
/// push), and the stall of a primary under the trust rules, at 2 s blocks and mainnet timing.
async fn scenario_trust() {
    println!("\n## 9. A lying node: the pool's head with ParentWeight + 1, by poll and push; 20 s watched");
    println!(
        "| liar | held nginx's primary | honest nodes out of the upstream (summed) | its reason |"
    );
    println!("|---|---|---|---|");
    for role in ["a backup", "the primary"] {
        let sim = pool().await;
        let sys = start(Kind::ChainCo, "chain-co + nginx", &sim, "").await;
        let primary = nginx_primary(&sim, &sys).unwrap_or_else(|| "a".into());
        let liar = if role == "the primary" {
            primary.clone()
        } else {
            ["a", "b", "c"]
                .into_iter()
                .find(|n| *n != primary)
                .expect("a backup")
                .to_string()
        };
        sim.apply(&liar, Op::Inflate { weight: 1 })
            .await
            .expect("inflate");
        let (held, evicted) = watch_liar(&sim, &sys, &liar, Duration::from_secs(20)).await;
        let s = status(&sys).await;
        let reason = s["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == liar.as_str()))
            .and_then(|n| n["reason"].as_str())
            .unwrap_or("-")
            .to_string();
        println!(
            "| {role} | {} | {} | {} |",
            ms(held),
            ms(evicted),
            reason.chars().take(80).collect::<String>()
        );
        drop(sys);
        sim.shutdown().await;
    }
    println!("\n## 10. Primary stalls: time until nginx's primary moved, under the trust rules");
    println!("| timing | block delay | lag_grace | moved after |");
    println!("|---|---|---|---|");
    for (label, block, extra, watch) in [
        ("bench", BLOCK, "", Duration::from_secs(10)),
        (
            "mainnet",
            Duration::from_secs(30),
            "# mainnet timing",
            Duration::from_secs(75),
        ),
    ] {
        let sim = pool_with(block).await;
        let sys = start(Kind::ChainCo, "chain-co + nginx", &sim, extra).await;
        // Stall just after an epoch began, as a stalled daemon is first seen behind.
        let victim = nginx_primary(&sim, &sys).unwrap_or_else(|| "a".into());
        let t0 = Instant::now();
        sim.apply(&victim, Op::Stall).await.expect("stall");
        let mut moved = None;
        while t0.elapsed() < watch {
            if nginx_primary(&sim, &sys).is_some_and(|p| p != victim) {
                moved = Some(t0.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let grace = if extra.is_empty() {
            "1 s".to_string()
        } else {
            format!("{} s (0.4 blocks)", block.as_secs() * 2 / 5)
        };
        println!(
            "| {label} | {} s | {grace} | {} |",
            block.as_secs(),
            moved.map_or("not within the watch".into(), ms)
        );
        drop(sys);
        sim.shutdown().await;
    }
}

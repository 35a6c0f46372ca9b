//! `chain-co demo`: the main job, shown on one machine in about a minute.
//!
//! A simulated pool of three Lotus-shaped daemons, a private nginx in front of them (when nginx
//! is installed; otherwise a dry run that writes the upstream file to a temp directory), and
//! chain-co's real loop between them. A client sends requests through nginx all along, and the
//! demo stalls the primary, kills the next one, then heals both, printing each decision and
//! where the requests went.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use chain_co::config::NginxConfig;
use chain_co::config::{ApiConfig, ChainConfig, Config, NodeConfig, ProbeConfig, TargetConfig};
use chain_co::decide::select::SelectRules;
use chain_co::serve::daemon::Daemon;
use chain_co::serve::report::{ApplyRecord, Report};
use chain_co_sim::testbed::{find_nginx, PrivateNginx};
use chain_co_sim::{Op, Profile, SimPool, SimSpec};

mod session;

const NAMES: [&str; 3] = ["lotus-a", "lotus-b", "lotus-c"];

/// Where the demo's requests went.
#[derive(Default)]
struct Traffic {
    by_node: BTreeMap<String, u64>,
    failed: u64,
}

pub async fn demo() -> anyhow::Result<()> {
    let started = Instant::now();
    let block_delay = Duration::from_secs(2);
    let sim = start_pool(block_delay).await?;
    let dir = tempfile::Builder::new()
        .prefix("chain-co-demo-")
        .tempdir()?;
    let addrs: Vec<String> = sim
        .ready()
        .nodes
        .iter()
        .map(|n| n.addr.to_string())
        .collect();
    let nginx = match find_nginx() {
        Some(bin) => Some(
            PrivateNginx::start(&bin, dir.path(), &addrs[..1])
                .context("starting a private nginx (set NGINX=/path/to/nginx to choose one)")?,
        ),
        None => None,
    };
    let nginx_cfg = match &nginx {
        Some(n) => n.chain_co_config(),
        None => PrivateNginx::template_config(dir.path().join("filecoin-upstream.conf")),
    };
    intro(&sim, nginx.as_ref(), &nginx_cfg, block_delay);
    let config = demo_config(&sim, nginx_cfg, dir.path());
    let (daemon, shared) = Daemon::new(config, None)?;
    daemon.preflight()?;
    let shutdown = CancellationToken::new();
    let reports = shared.reports.clone();
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let loop_task = tokio::spawn(daemon.run(shutdown.clone(), reload_rx));
    // A client that sends one ChainHead through nginx every 100 ms.
    let traffic = Arc::new(Mutex::new(Traffic::default()));
    let client_task = nginx
        .as_ref()
        .map(|n| spawn_client(n.rpc_url(), traffic.clone(), shutdown.clone()));
    // A miner's websocket through nginx, as lotus-miner holds one.
    let miner = nginx.as_ref().map(|n| {
        session::spawn(
            n.rpc_url().replacen("http://", "ws://", 1),
            sim.clock(),
            started,
            shutdown.clone(),
        )
    });
    let mut watcher = Watcher {
        reports,
        last_line: String::new(),
        started,
    };
    let seen = run_script(&mut watcher, &sim, &traffic).await?;
    shutdown.cancel();
    let _ = loop_task.await;
    if let Some(t) = client_task {
        let _ = t.await;
    }
    let miner_log = match miner {
        Some((log, task)) => {
            let _ = task.await;
            Some(log)
        }
        None => None,
    };
    summary(&seen, nginx.is_some().then_some(&traffic));
    if let Some(log) = miner_log {
        miner_summary(&log.lock().expect("session lock"));
    }
    sim.shutdown().await;
    Ok(())
}

/// The simulated pool: three Lotus daemons on loopback.
async fn start_pool(block_delay: Duration) -> anyhow::Result<SimPool> {
    SimPool::start(SimSpec {
        nodes: NAMES
            .iter()
            .map(|s| (s.to_string(), Profile::Lotus))
            .collect(),
        block_delay,
        null_rounds: false,
        token: None,
        listen: [127, 0, 0, 1].into(),
        control: ([127, 0, 0, 1], 0).into(),
        start_height: 1000,
    })
    .await
    .context("starting the simulated pool")
}

/// What the demo runs, and where.
fn intro(
    sim: &SimPool,
    nginx: Option<&PrivateNginx>,
    nginx_cfg: &NginxConfig,
    block_delay: Duration,
) {
    println!(
        "chain-co demo: 3 simulated Lotus daemons, block delay {}s",
        block_delay.as_secs()
    );
    for n in &sim.ready().nodes {
        println!("  {} at {}", n.name, n.url);
    }
    match nginx {
        Some(n) => println!(
            "  nginx (private, pid {}) at {}; chain-co writes {}",
            n.pid(),
            n.rpc_url(),
            n.upstream_file.display()
        ),
        None => println!(
            "  nginx not found: dry run, chain-co writes {} and reloads nothing",
            nginx_cfg.output.display()
        ),
    }
    println!("  probe every 1s, max_lag 2 epochs, rise 2, fall 2\n");
}

/// chain-co's configuration for the demo: the simulated nodes, fast probes, the private nginx.
fn demo_config(sim: &SimPool, nginx_cfg: NginxConfig, dir: &std::path::Path) -> Config {
    Config {
        nodes: sim
            .ready()
            .nodes
            .iter()
            .map(|n| NodeConfig {
                name: n.name.clone(),
                url: n.url.parse().expect("the simulator prints valid URLs"),
                token: None,
                upstream: n.addr.to_string(),
                transport: None,
                health_url: n.health_url.as_deref().and_then(|u| u.parse().ok()),
                write_token: None,
            })
            .collect(),
        probe: ProbeConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(800),
            max_reply_bytes: 1 << 20,
            sync_checks: true,
            push: true,
        },
        select: SelectRules::basic(2, 2, 2),
        chain: ChainConfig::default(),
        api: ApiConfig {
            state_file: dir.join("state.json"),
            ..ApiConfig::default()
        },
        ha: None,
        track_file: None,
        message_addresses: Vec::new(),
        message_miner: None,
        target: TargetConfig::Nginx(nginx_cfg),
        client_token: None,
    }
}

/// A client that sends one ChainHead through nginx every 100 ms and counts who answered.
fn spawn_client(
    url: String,
    traffic: Arc<Mutex<Traffic>>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let body = r#"{"jsonrpc":"2.0","method":"Filecoin.ChainHead","params":[],"id":1}"#;
        while !stop.is_cancelled() {
            let r = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            let answered_by = match r {
                Ok(resp) if resp.status().is_success() => Some(
                    resp.headers()
                        .get("x-sim-node")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("?")
                        .to_string(),
                ),
                _ => None,
            };
            {
                let mut t = traffic.lock().expect("traffic lock");
                match answered_by {
                    Some(node) => *t.by_node.entry(node).or_default() += 1,
                    None => t.failed += 1,
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// What the script saw, for the summary.
struct Seen {
    reloads_before_quiet: u64,
    reloads_after: u64,
    failed_before_stall: u64,
}

/// The script: a primary, a stall, a death, the heals, a quiet period.
async fn run_script(
    watcher: &mut Watcher,
    sim: &SimPool,
    traffic: &Arc<Mutex<Traffic>>,
) -> anyhow::Result<Seen> {
    let started = watcher.started;
    let say = move |msg: &str| println!("[{:>5.1}s] {msg}", started.elapsed().as_secs_f64());
    say("waiting for the pool to prove itself (rise = 2 good probes)...");
    let first = watcher
        .until(|r| r.decision.primary.is_some(), Duration::from_secs(20))
        .await
        .context("no primary was chosen within 20s")?;
    let a = first.decision.primary.clone().expect("checked");
    say(&format!(
        "{a} is primary; requests flow through nginx to it for 3s"
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;

    say(&format!(
        ">>> stalling {a}: it keeps answering, but its head stops"
    ));
    let t0 = Instant::now();
    sim.apply(&a, Op::Stall).await.map_err(anyhow::Error::msg)?;
    let failed_before = traffic.lock().expect("traffic lock").failed;
    let moved = watcher
        .until(
            |r| r.decision.primary.as_deref().is_some_and(|p| p != a),
            Duration::from_secs(30),
        )
        .await
        .context("the primary did not move off the stalled node within 30s")?;
    let b = moved.decision.primary.clone().expect("checked");
    say(&format!(
        "<<< {a} stalled → primary {b} after {:.1}s (its peers moved on; it stayed behind longer than lag_grace)",
        t0.elapsed().as_secs_f64()
    ));

    tokio::time::sleep(Duration::from_secs(2)).await;
    say(&format!(">>> killing {b}: its port closes"));
    let t1 = Instant::now();
    sim.apply(&b, Op::Die).await.map_err(anyhow::Error::msg)?;
    let moved = watcher
        .until(
            |r| r.decision.primary.as_deref().is_some_and(|p| p != b),
            Duration::from_secs(30),
        )
        .await
        .context("the primary did not move off the dead node within 30s")?;
    let c = moved.decision.primary.clone().expect("checked");
    say(&format!(
        "<<< {b} dead → primary {c} after {:.1}s; nginx's backup carried requests meanwhile",
        t1.elapsed().as_secs_f64()
    ));

    tokio::time::sleep(Duration::from_secs(2)).await;
    say(&format!(">>> healing {a} and reviving {b}"));
    sim.apply(&a, Op::Heal).await.map_err(anyhow::Error::msg)?;
    sim.apply(&b, Op::Heal).await.map_err(anyhow::Error::msg)?;
    let back = watcher
        .until(|r| r.decision.backups.len() == 2, Duration::from_secs(30))
        .await
        .context("the healed nodes did not come back within 30s")?;
    say(&format!(
        "<<< both back as backups; primary stays {} (sticky: no flip back)",
        back.decision.primary.as_deref().unwrap_or("none")
    ));
    say("quiet for 5s: nothing should change, nothing should reload...");
    let reloads_before = back.reloads;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let reloads_after = watcher.reports.borrow().as_ref().map_or(0, |r| r.reloads);

    Ok(Seen {
        reloads_before_quiet: reloads_before,
        reloads_after,
        failed_before_stall: failed_before,
    })
}

/// The demo's figures: reloads, and the requests through nginx.
fn summary(seen: &Seen, traffic: Option<&Arc<Mutex<Traffic>>>) {
    let (reloads_after, reloads_before, failed_before) = (
        seen.reloads_after,
        seen.reloads_before_quiet,
        seen.failed_before_stall,
    );
    println!("\nsummary:");
    println!(
        "  nginx reloads: {reloads_after} in all, {} during the quiet 5s",
        reloads_after - reloads_before
    );
    if let Some(traffic) = traffic {
        let t = traffic.lock().expect("traffic lock");
        let per_node: Vec<String> = t.by_node.iter().map(|(n, c)| format!("{n} {c}")).collect();
        println!("  requests through nginx by node: {}", per_node.join(", "));
        println!(
            "  failed requests: {} ({} after the stall began)",
            t.failed,
            t.failed - failed_before
        );
    }
}

/// The miner's session in the summary: each cut, the stale heads before it, the way back.
fn miner_summary(log: &session::SessionLog) {
    println!(
        "  miner session: {} heads, {} cut{}",
        log.heads,
        log.cuts.len(),
        if log.cuts.len() == 1 { "" } else { "s" }
    );
    for c in &log.cuts {
        let back = match &c.back {
            Some((node, after)) => format!("back on {node} after {:.2}s", after.as_secs_f64()),
            None => "not back".to_string(),
        };
        println!(
            "    at {:.1}s: cut on {} after {} stale heads, {back}",
            c.at, c.from, c.stale
        );
    }
    if log.stale_now > 0 {
        println!(
            "    still on {} with {} stale heads: sessions were not moved (chain-co needs CAP_NET_ADMIN and nginx in a cgroup of its own)",
            log.on.as_deref().unwrap_or("?"),
            log.stale_now
        );
    }
}

/// Follows the loop's reports, printing each new decision once.
struct Watcher {
    reports: watch::Receiver<Option<Report>>,
    last_line: String,
    started: Instant,
}

impl Watcher {
    /// Waits until a report satisfies `pred`, or `limit` passes.
    async fn until(&mut self, pred: impl Fn(&Report) -> bool, limit: Duration) -> Option<Report> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let found = {
                let r = self.reports.borrow_and_update();
                match r.as_ref() {
                    Some(r) => {
                        let line = describe(r);
                        if line != self.last_line {
                            println!("[{:>5.1}s] {line}", self.started.elapsed().as_secs_f64());
                            self.last_line = line;
                        }
                        pred(r).then(|| r.clone())
                    }
                    None => None,
                }
            };
            if found.is_some() {
                return found;
            }
            if tokio::time::timeout_at(deadline, self.reports.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }
}

/// One line for a round: the decision, and why nodes are out.
fn describe(r: &Report) -> String {
    let mut s = format!(
        "primary {}, backups [{}]",
        r.decision.primary.as_deref().unwrap_or("none"),
        r.decision.backups.join(", ")
    );
    for v in r.decision.nodes.iter().filter(|v| !v.healthy) {
        s.push_str(&format!("; {} out: {}", v.name, v.reason));
    }
    match &r.apply {
        ApplyRecord::Failed { error } => s.push_str(&format!(" — apply failed: {error}")),
        ApplyRecord::Held { reason } => s.push_str(&format!(" — {reason}")),
        _ => {}
    }
    s
}

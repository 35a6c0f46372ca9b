//! A private nginx on loopback, for the demo and the integration tests.
//!
//! It never touches the system's nginx: its own prefix directory, config, pid file, logs and
//! temp paths, a port chosen by the OS, and `-e` so that even `nginx -t` does not open
//! `/var/log/nginx`. It runs in the foreground (`daemon off`) in a process group of its own, and
//! dropping the handle kills the whole group: killing only the master would leave workers
//! serving.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use chain_co::apply::nginx::{NginxConfig, Reload, DEFAULT_TEMPLATE};

/// Finds the nginx binary: `$NGINX`, then `PATH`, then Debian's `/usr/sbin/nginx` (not on a
/// normal user's `PATH`).
pub fn find_nginx() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NGINX") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

/// A running private nginx.
pub struct PrivateNginx {
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub pid_file: PathBuf,
    /// The generated upstream file, included by `conf`.
    pub upstream_file: PathBuf,
    pub addr: SocketAddr,
    child: Child,
    /// The cgroup nginx was put in (a unit of its own, as systemd gives it), removed on drop.
    cgroup: Option<OwnCgroup>,
}

impl PrivateNginx {
    /// Starts nginx in `dir` with an upstream of `seed` addresses (the first one primary), as
    /// an operator's nginx would already have before chain-co starts.
    pub fn start(binary: &Path, dir: &Path, seed: &[String]) -> io::Result<PrivateNginx> {
        Self::start_with(binary, dir, seed, Duration::from_secs(10))
    }

    /// As [`PrivateNginx::start`], with this `worker_shutdown_timeout`: how long old workers
    /// keep the connections they hold after a reload (websocket tests want it long, so that
    /// only chain-co's session moves can explain a cut).
    pub fn start_with(
        binary: &Path,
        dir: &Path,
        seed: &[String],
        worker_shutdown_timeout: Duration,
    ) -> io::Result<PrivateNginx> {
        // The port is found free, released, then bound by nginx: another process may take it in
        // between. Try again with another port a few times.
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(binary, dir, seed, worker_shutdown_timeout) {
                Ok(n) => return Ok(n),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried at least once"))
    }

    fn start_once(
        binary: &Path,
        dir: &Path,
        seed: &[String],
        worker_shutdown_timeout: Duration,
    ) -> io::Result<PrivateNginx> {
        for sub in ["conf.d", "tmp", "logs"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let conf = dir.join("nginx.conf");
        let pid_file = dir.join("nginx.pid");
        let upstream_file = dir.join("conf.d").join("filecoin-upstream.conf");
        let mut servers = String::new();
        for (i, s) in seed.iter().enumerate() {
            servers.push_str(&format!(
                "    server {s}{};\n",
                if i == 0 { "" } else { " backup" }
            ));
        }
        std::fs::write(
            &upstream_file,
            format!("upstream filecoin {{\n{servers}}}\n"),
        )?;
        std::fs::write(
            &conf,
            private_conf(dir, addr).replace(
                "worker_shutdown_timeout 10s;",
                &format!(
                    "worker_shutdown_timeout {}s;",
                    worker_shutdown_timeout.as_secs().max(1)
                ),
            ),
        )?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("logs/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()?;
        let mut nginx = PrivateNginx {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            conf,
            pid_file,
            upstream_file,
            addr,
            child,
            cgroup: None,
        };
        nginx.wait_listening()?;
        nginx.cgroup = own_cgroup(nginx.child.id());
        Ok(nginx)
    }

    fn wait_listening(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                let log =
                    std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default();
                return Err(io::Error::other(format!("nginx exited ({status}): {log}")));
            }
            if std::net::TcpStream::connect(self.addr).is_ok() && self.pid_file.exists() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::other("nginx did not start listening within 10s"))
    }

    /// The `[nginx]` section that points chain-co at this nginx.
    pub fn chain_co_config(&self) -> NginxConfig {
        NginxConfig {
            test_cmd: self.test_cmd(),
            reload: Reload::PidFile(self.pid_file.clone()),
            pid_file: self.pid_file.clone(),
            ..Self::template_config(self.upstream_file.clone())
        }
    }

    /// An `[nginx]` section with the built-in template writing `output`, testing and reloading
    /// nothing (the dry-run demo and template tests).
    pub fn template_config(output: PathBuf) -> NginxConfig {
        NginxConfig {
            template_name: "built-in upstream.conf.tera".into(),
            template: DEFAULT_TEMPLATE.into(),
            pid_file: output.with_file_name("nginx.pid"),
            output,
            test_cmd: vec!["true".into()],
            reload: Reload::Command(vec!["true".into()]),
            upstream_name: "filecoin".into(),
            move_sessions: true,
            validate: chain_co::apply::nginx::Validate::Full,
        }
    }

    pub fn test_cmd(&self) -> Vec<String> {
        vec![
            self.binary.display().to_string(),
            "-t".into(),
            "-q".into(),
            "-p".into(),
            self.dir.display().to_string(),
            "-c".into(),
            self.conf.display().to_string(),
            "-e".into(),
            self.dir.join("logs/error.log").display().to_string(),
        ]
    }

    /// The URL clients use: nginx's `/rpc/v1`.
    pub fn rpc_url(&self) -> String {
        format!("http://{}/rpc/v1", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The master's current worker processes. After a reload, the old workers leave this list
    /// once they have finished, which is how a test knows a reload has taken effect.
    pub fn workers(&self) -> Vec<u32> {
        let pid = self.child.id();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for PrivateNginx {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
        drop(self.cgroup.take());
    }
}

/// A cgroup made for one process tree, removed on drop (once its processes are gone).
#[derive(Debug)]
pub struct OwnCgroup(PathBuf);

impl Drop for OwnCgroup {
    fn drop(&mut self) {
        // The workers leave a moment after the master.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Puts nginx (its master and the workers it has forked) in a cgroup of its own under the
/// cgroup2 mount, as systemd does for `nginx.service`: chain-co moves only the sessions of
/// nginx's cgroup. `None` where that cannot be done (no cgroup v2, not root): chain-co then
/// moves no session, and says so.
pub fn own_cgroup(master: u32) -> Option<OwnCgroup> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mount = chain_co::apply::sessions::cgroup2_mount()?;
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = mount
        .join("chain-co-test")
        .join(format!("nginx-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let procs = dir.join("cgroup.procs");
    let mut pids = vec![master];
    pids.extend(chain_co::apply::sessions::children(master));
    for p in pids {
        if std::fs::write(&procs, p.to_string()).is_err() {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
    }
    Some(OwnCgroup(dir))
}

/// The servers of an nginx upstream file: (address, is backup). For tests and benchmarks that
/// look at what chain-co published.
pub fn upstream_servers(upstream_file: &Path) -> Vec<(String, bool)> {
    std::fs::read_to_string(upstream_file)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("server "))
        .map(|l| {
            let addr = l.split([' ', ';']).next().unwrap_or("").to_string();
            (addr, l.contains(" backup"))
        })
        .collect()
}

/// The private nginx.conf: the shape of `nginx-examples/nginx.conf` with private paths,
/// listening on `addr` (e.g. `127.0.0.1:8080`, or `0.0.0.0:1234` inside a network namespace).
pub fn private_conf(dir: &Path, addr: impl std::fmt::Display) -> String {
    let d = dir.display();
    // As root, workers would run as `nobody` and could not read a private 0700 directory.
    let user = if nix::unistd::geteuid().is_root() {
        "user root;\n"
    } else {
        ""
    };
    format!(
        r#"# Private nginx started by chain-co's demo or tests. Not for production: see nginx-examples/.
daemon off;
master_process on;
worker_processes 1;
{user}pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
worker_shutdown_timeout 10s;

events {{
    worker_connections 512;
}}

http {{
    access_log {d}/logs/access.log;
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}

    include {d}/conf.d/*.conf;

    server {{
        listen {addr};

        location /rpc/ {{
            proxy_pass http://filecoin;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_connect_timeout 2s;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_next_upstream error timeout http_502 http_503 http_504;
            proxy_next_upstream_tries 3;
            proxy_next_upstream_timeout 10s;
            add_header X-Upstream-Addr $upstream_addr always;
        }}
    }}
}}
"#
    )
}

/// What a websocket session saw, as a miner would: connects (with the daemon nginx chose),
/// cuts, and heads from `ChainHead` calls and from its ChainNotify subscription.
#[derive(Debug, Default, Clone)]
pub struct SessionLog {
    /// When a connection was made, and the daemon address nginx reports (X-Upstream-Addr).
    pub connects: Vec<(Instant, String)>,
    pub cuts: Vec<Instant>,
    /// Heights answered to `ChainHead` calls.
    pub heads: Vec<(Instant, u64)>,
    /// Heights pushed by ChainNotify.
    pub notified: Vec<(Instant, u64)>,
}

impl SessionLog {
    pub fn upstream(&self) -> Option<&str> {
        self.connects.last().map(|(_, a)| a.as_str())
    }

    /// The highest `ChainHead` answer received before `t`.
    pub fn max_height_before(&self, t: Instant) -> u64 {
        self.heads
            .iter()
            .filter(|(at, _)| *at < t)
            .map(|(_, h)| *h)
            .max()
            .unwrap_or(0)
    }

    /// The first `ChainHead` answer after `since` higher than `above`.
    pub fn first_head_above(&self, since: Instant, above: u64) -> Option<Instant> {
        self.heads
            .iter()
            .find(|(t, h)| *t >= since && *h > above)
            .map(|(t, _)| *t)
    }
}

/// A miner-like client: one websocket through nginx to `/rpc/v1`, a ChainNotify subscription,
/// a `ChainHead` call every 250 ms, and a reconnect 200 ms after a cut.
pub struct Session {
    pub log: Arc<Mutex<SessionLog>>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Session {
    pub fn start(addr: SocketAddr) -> Session {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let log = Arc::new(Mutex::new(SessionLog::default()));
        let stop = tokio_util::sync::CancellationToken::new();
        let (l, s) = (log.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let url = format!("ws://{addr}/rpc/v1");
            while !s.is_cancelled() {
                let connected = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio_tungstenite::connect_async(url.as_str()),
                )
                .await;
                let Ok(Ok((mut ws, resp))) = connected else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                // nginx-examples name the daemon by address, haproxy-examples by server name.
                let upstream = resp
                    .headers()
                    .get("x-upstream-addr")
                    .or_else(|| resp.headers().get("x-upstream-server"))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                l.lock()
                    .expect("lock")
                    .connects
                    .push((Instant::now(), upstream));
                let notify =
                    r#"{"jsonrpc":"2.0","method":"Filecoin.ChainNotify","params":[],"id":1}"#;
                let _ = ws.send(Message::Text(notify.into())).await;
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                let mut id = 1u64;
                let cut = loop {
                    tokio::select! {
                        _ = s.cancelled() => break false,
                        _ = tick.tick() => {
                            id += 1;
                            let call = format!(r#"{{"jsonrpc":"2.0","method":"Filecoin.ChainHead","params":[],"id":{id}}}"#);
                            if ws.send(Message::Text(call.into())).await.is_err() {
                                break true;
                            }
                        }
                        m = ws.next() => {
                            let text = match m {
                                Some(Ok(Message::Text(t))) => t.to_string(),
                                Some(Ok(_)) => continue,
                                _ => break true,
                            };
                            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                            let now = Instant::now();
                            if v["method"] == "xrpc.ch.val" {
                                if let Some(h) = v["params"][1].as_array().and_then(|c| c.last()).and_then(|c| c["Val"]["Height"].as_u64()) {
                                    l.lock().expect("lock").notified.push((now, h));
                                }
                            } else if let Some(h) = v["result"]["Height"].as_u64() {
                                l.lock().expect("lock").heads.push((now, h));
                            }
                        }
                    }
                };
                if !cut {
                    let _ = ws.close(None).await;
                    break;
                }
                l.lock().expect("lock").cuts.push(Instant::now());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Session { log, stop, task }
    }

    pub fn log(&self) -> SessionLog {
        self.log.lock().expect("lock").clone()
    }

    pub fn cuts(&self) -> usize {
        self.log().cuts.len()
    }

    pub async fn stop(self) -> SessionLog {
        self.stop.cancel();
        let _ = self.task.await;
        let log = self.log.lock().expect("lock").clone();
        log
    }
}

/// Resident memory of a process, in KiB (from /proc), for tests and benchmarks.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What a [`MessageSender`] did: each message's nonce as the daemon gave it, and the pushes
/// that failed (nginx had no daemon, or the daemon refused).
#[derive(Debug, Clone, Default)]
pub struct SentLog {
    /// (when, nonce, the node that answered: `X-Sim-Node`).
    pub sent: Vec<(Instant, u64, String)>,
    pub failed: Vec<(Instant, String)>,
}

impl SentLog {
    /// Nonces handed out more than once: each is a message that can never land.
    pub fn reused(&self) -> usize {
        let mut seen = std::collections::BTreeSet::new();
        self.sent
            .iter()
            .filter(|(_, n, _)| !seen.insert(*n))
            .count()
    }
}

/// A miner-like sender: every `every`, `MpoolPushMessage` from `from` over HTTP through nginx
/// at `addr` (the daemon picks the nonce, as for lotus-miner), with a token that has `write`.
pub struct MessageSender {
    pub log: Arc<Mutex<SentLog>>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl MessageSender {
    pub fn start(addr: SocketAddr, from: &str, token: &str, every: Duration) -> MessageSender {
        let log = Arc::new(Mutex::new(SentLog::default()));
        let stop = tokio_util::sync::CancellationToken::new();
        let (l, s) = (log.clone(), stop.clone());
        let (from, token) = (from.to_string(), token.to_string());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            for i in 0u64.. {
                tokio::select! {
                    _ = s.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let msg = serde_json::json!({"From": from, "To": crate::actors::MINER, "Method": 5, "Params": format!("cG9zdA{i}"), "Value": "0"});
                let body = serde_json::json!({"jsonrpc": "2.0", "id": i, "method": "Filecoin.MpoolPushMessage", "params": [msg, null]});
                let outcome = post(addr, &token, &body.to_string()).await;
                let now = Instant::now();
                let mut log = l.lock().expect("lock");
                match outcome {
                    Ok((node, reply)) => match reply["result"]["Message"]["Nonce"].as_u64() {
                        Some(n) => log.sent.push((now, n, node)),
                        None => log.failed.push((now, reply.to_string())),
                    },
                    Err(e) => log.failed.push((now, e.to_string())),
                }
            }
        });
        MessageSender { log, stop, task }
    }

    pub fn log(&self) -> SentLog {
        self.log.lock().expect("lock").clone()
    }

    pub async fn stop(self) -> SentLog {
        self.stop.cancel();
        let _ = self.task.await;
        let log = self.log.lock().expect("lock").clone();
        log
    }
}

/// One JSON-RPC POST to `/rpc/v1` over a fresh connection: (the answering node, the reply).
async fn post(
    addr: SocketAddr,
    token: &str,
    body: &str,
) -> io::Result<(String, serde_json::Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!(
            "POST /rpc/v1 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no reply in 3 s"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let node = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-sim-node")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let reply = serde_json::from_str(body)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e}: {head}")))?;
    Ok((node, reply))
}

//! Publishing an upstream to nginx: render → write temp → fsync → backup → rename → `nginx -t`
//! → reload, or roll back.
//!
//! Why each step:
//! - The temp file sits in the output's own directory because `rename` is atomic only within one
//!   filesystem: nginx, or anyone reading the file, sees the old text or the new, never half.
//! - fsync before the rename, and of the directory after it, so that a power cut leaves one of
//!   the two complete files, not an empty one.
//! - The backup is a hard link to the old file, taken before the rename: it needs no disk space
//!   (a full disk must not stop a rollback) and restoring it is one more atomic rename.
//! - `nginx -t` runs with the new file in place, because that is the file nginx will read; if it
//!   refuses, the backup goes back and nginx is not reloaded. A SIGHUP with a broken config
//!   fails silently in nginx (the old config keeps running), so validating first is the only way
//!   to know.
//! - Nothing is written when the rendered text equals the file: no rewrite and no reload at
//!   steady state. A file changed by hand differs, so it is put back at the next round.
//! - nginx is reloaded only when the reload changes where sessions go: when the file differs
//!   from what nginx runs in more than its `backup` servers. Every reload hands the open
//!   connections — every miner's websocket — to old workers that close them at
//!   `worker_shutdown_timeout`, so a reload for a backup that came or went would cut every
//!   session for nothing. A backup-only change is written, validated and left for the next
//!   reload (`Applied::Changed { reloaded: false }`). What nginx runs is remembered in a hidden file beside the
//!   output, so a restart of chain-co does not reload either.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tera::{Context, Tera};

use super::{Applied, SessionMode, UpstreamPlan};
use crate::apply::master::{self, Master};
use crate::apply::sessions::{self, DestroyError, Owners};
use crate::errors::error_chain;
use crate::problems::{resolve, Checker};
use serde::Deserialize;
use toml::Spanned;

/// The nginx upstream template shipped with chain-co, used when `[nginx] template` is not set.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../../../templates/upstream.conf.tera");

/// Defaults of `[nginx]`: Debian's layout.
pub mod defaults {
    pub const OUTPUT: &str = "/etc/nginx/conf.d/filecoin-upstream.conf";
    pub const PID_FILE: &str = "/run/nginx.pid";
    pub const UPSTREAM_NAME: &str = "filecoin";
    pub fn test_cmd() -> Vec<String> {
        vec!["nginx".into(), "-t".into()]
    }
}

#[derive(Debug, Clone)]
pub struct NginxConfig {
    /// Where the template came from, for error messages.
    pub template_name: String,
    pub template: String,
    pub output: PathBuf,
    pub test_cmd: Vec<String>,
    pub reload: Reload,
    /// nginx's pid file: the master the reload signals, whose cgroup the session moves read
    /// and whose exit the nginx watch waits for. `[nginx] pid_file`, else the reload's.
    pub pid_file: PathBuf,
    pub upstream_name: String,
    /// At a switch, end nginx's connections to the old primary so that its long-lived
    /// sessions (miners' websockets) reconnect to the new one at once.
    pub move_sessions: bool,
    /// How a new file is validated before nginx is told to read it.
    pub validate: Validate,
}

/// How a new upstream file is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validate {
    /// Run `test_cmd` (`nginx -t`) on nginx's whole configuration. On Debian that needs root:
    /// nginx opens /run/nginx.pid and binds the configured ports even in test mode.
    Full,
    /// Run nginx's own test on a private configuration that includes only the generated file
    /// (in the output's directory, with its own pid file, log and a unix-socket listener), as
    /// an unprivileged user; after the reload, nginx's new worker generation confirms that it
    /// took the whole configuration (a refused reload leaves the old workers and is rolled
    /// back).
    Private,
}

/// How nginx is told to read its configuration again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// Send SIGHUP to the pid in this file (what `nginx -s reload` does).
    PidFile(PathBuf),
    /// Run this command (e.g. `systemctl reload nginx`).
    Command(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
// Unknown keys are found by config::unknown, all at once with their lines.
pub struct RawNginx {
    template: Option<Spanned<PathBuf>>,
    output: Option<Spanned<PathBuf>>,
    test_cmd: Option<Spanned<Vec<String>>>,
    reload: Option<Spanned<RawReload>>,
    pid_file: Option<Spanned<PathBuf>>,
    upstream_name: Option<Spanned<String>>,
    move_sessions: Option<bool>,
    validate: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
// Unknown keys are found by config::unknown, all at once with their lines.
struct RawReload {
    pid_file: Option<PathBuf>,
    cmd: Option<Vec<String>>,
}

/// `[nginx]`, checked: every mistake goes to `ck` with its line and key.
/// `[nginx] template`: the built-in one, or a file that must read and parse.
fn check_template(ck: &mut Checker, raw: &RawNginx, base: &Path) -> (String, String) {
    let (template_name, template) = match &raw.template {
        None => (
            "built-in upstream.conf.tera".to_string(),
            DEFAULT_TEMPLATE.to_string(),
        ),
        Some(t) => {
            let path = resolve(base, t.get_ref());
            match std::fs::read_to_string(&path) {
                Ok(text) => (path.display().to_string(), text),
                Err(e) => {
                    ck.at(
                        t.span(),
                        "nginx.template",
                        format!("cannot read {}: {e}", path.display()),
                    );
                    (String::new(), String::new())
                }
            }
        }
    };
    if !template.is_empty() {
        if let Err(e) = tera::Tera::default().add_raw_template("upstream", &template) {
            let msg = format!("the template does not parse: {}", error_chain(&e));
            match &raw.template {
                Some(t) => ck.at(t.span(), "nginx.template", msg),
                None => ck.nowhere("nginx.template", msg),
            }
        }
    }
    (template_name, template)
}

/// `[nginx] reload` and `pid_file`: how nginx is told, and where its master is found. One pid
/// file serves the reload, the session moves and the watch; two different ones are a mistake.
fn check_reload(
    ck: &mut Checker,
    reload: Option<Spanned<RawReload>>,
    pid_file: Option<Spanned<PathBuf>>,
    base: &Path,
) -> (Reload, PathBuf) {
    let stock = || PathBuf::from(defaults::PID_FILE);
    let reload = match reload {
        None => Reload::PidFile(
            pid_file
                .as_ref()
                .map_or_else(stock, |p| resolve(base, p.get_ref())),
        ),
        Some(r) => {
            let span = r.span();
            match r.into_inner() {
                RawReload {
                    pid_file: Some(p),
                    cmd: None,
                } => Reload::PidFile(resolve(base, &p)),
                RawReload {
                    pid_file: None,
                    cmd: Some(c),
                } if !c.is_empty() && !c[0].is_empty() => Reload::Command(c),
                _ => {
                    ck.at(
                        span,
                        "nginx.reload",
                        "write either { pid_file = \"/run/nginx.pid\" } or { cmd = [\"systemctl\", \"reload\", \"nginx\"] }",
                    );
                    Reload::PidFile(stock())
                }
            }
        }
    };
    let file = match (&reload, pid_file) {
        (Reload::PidFile(signalled), Some(p)) if *signalled != resolve(base, p.get_ref()) => {
            ck.at(
                p.span(),
                "nginx.pid_file",
                format!(
                    "differs from the reload's pid file {}: nginx has one master; keep one",
                    signalled.display()
                ),
            );
            signalled.clone()
        }
        (Reload::PidFile(signalled), _) => signalled.clone(),
        (Reload::Command(_), Some(p)) => resolve(base, p.get_ref()),
        (Reload::Command(_), None) => stock(),
    };
    (reload, file)
}

pub(crate) fn check_nginx(ck: &mut Checker, raw: RawNginx, base: &Path) -> Option<NginxConfig> {
    let (template_name, template) = check_template(ck, &raw, base);
    let output = raw.output.map_or_else(
        || PathBuf::from(defaults::OUTPUT),
        |o| resolve(base, o.get_ref()),
    );
    let test_cmd = match raw.test_cmd {
        Some(c) if c.get_ref().is_empty() || c.get_ref()[0].is_empty() => {
            ck.at(
                c.span(),
                "nginx.test_cmd",
                "must name a program, e.g. [\"nginx\", \"-t\"]",
            );
            defaults::test_cmd()
        }
        Some(c) => c.into_inner(),
        None => defaults::test_cmd(),
    };
    let (reload, pid_file) = check_reload(ck, raw.reload, raw.pid_file, base);
    let upstream_name = match raw.upstream_name {
        Some(n)
            if !n
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
                || n.get_ref().is_empty() =>
        {
            ck.at(
                n.span(),
                "nginx.upstream_name",
                "use letters, digits and `_` only (it is an nginx upstream name)",
            );
            defaults::UPSTREAM_NAME.to_string()
        }
        Some(n) => n.into_inner(),
        None => defaults::UPSTREAM_NAME.to_string(),
    };
    let validate = match raw.validate.as_ref().map(|v| v.get_ref().as_str()) {
        None | Some("full") => Validate::Full,
        Some("private") => Validate::Private,
        Some(other) => {
            let span = raw.validate.as_ref().map(|v| v.span()).unwrap_or_default();
            ck.at(
                span,
                "nginx.validate",
                format!(
                    "{other:?}: use \"full\" (nginx -t, as root) or \"private\" (unprivileged)"
                ),
            );
            Validate::Full
        }
    };
    Some(NginxConfig {
        template_name,
        template,
        output,
        test_cmd,
        reload,
        pid_file,
        upstream_name,
        move_sessions: raw.move_sessions.unwrap_or(true),
        validate,
    })
}

/// How long `test_cmd` and a reload command may run. `nginx -t` takes milliseconds; a hung one
/// (e.g. resolving an unreachable host in the config) must not hold the loop.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NginxError {
    #[error("cannot render template {template}: {message}")]
    Render { template: String, message: String },
    #[error("cannot write {path}: {message}; kept the previous file")]
    Write { path: PathBuf, message: String },
    #[error("nginx test rejected {path}: {output}; kept the previous file and did not reload")]
    Rejected { path: PathBuf, output: String },
    #[error("cannot run the nginx test command {cmd:?}: {message}; kept the previous file")]
    TestCommand { cmd: String, message: String },
    #[error("nginx test rejected {path} and restoring the previous file failed: {message}")]
    Rollback { path: PathBuf, message: String },
    #[error("reload failed: {0}; the new file is in place and the reload will be retried")]
    Reload(String),
    #[error("cannot move sessions: cannot resolve {address}: {why}")]
    Resolve { address: String, why: String },
    #[error("cannot move sessions")]
    Sessions(#[source] DestroyError),
    #[error("cannot move sessions; they now end at nginx's worker_shutdown_timeout instead")]
    SessionsFallback(#[source] DestroyError),
    #[error("cannot move sessions: the session task panicked")]
    SessionTask,
}

/// What nginx runs, as far as chain-co knows: kept in a hidden file beside the output so that
/// a restarted chain-co knows whether the file on disk is already in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
struct Loaded {
    /// SHA-256 of the file chain-co last put in place; a file that no longer hashes to this
    /// was changed by someone else, and what nginx runs is then unknown.
    written_sha256: String,
    /// SHA-256 of the routing part of the file nginx last reloaded: the file rendered without
    /// backups.
    routing_sha256: String,
}

/// The nginx target. Holds the compiled template and whether a reload is owed.
pub struct Nginx {
    cfg: NginxConfig,
    tera: Tera,
    /// Set when a valid file was put in place but the reload failed: the next apply reloads
    /// even though the file is unchanged.
    reload_owed: bool,
    /// What nginx runs; `None` when unknown (first start, or the file was changed by hand).
    loaded: Option<Loaded>,
    /// The workers nginx had before the last reload: sessions are moved once they no longer
    /// accept new connections, so that a client reconnecting at once reaches a new worker.
    workers_before_reload: Vec<u32>,
    /// How sessions leave a node: destroyed, or left to `worker_shutdown_timeout`.
    session_mode: SessionMode,
    /// Why nginx's connections cannot be told apart (no cgroup of its own), when they cannot.
    cgroup_problem: Option<String>,
}

#[derive(Serialize)]
struct TemplateServer<'a> {
    name: &'a str,
    address: &'a str,
    backup: bool,
}

impl Nginx {
    pub fn new(cfg: NginxConfig) -> Result<Self, NginxError> {
        let mut tera = Tera::default();
        tera.add_raw_template("upstream", &cfg.template)
            .map_err(|e| NginxError::Render {
                template: cfg.template_name.clone(),
                message: error_chain(&e),
            })?;
        let loaded = std::fs::read(sibling(&cfg.output, ".chain-co.loaded", true))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let session_mode = if !cfg.move_sessions {
            SessionMode::Off
        } else if sessions::has_net_admin() {
            SessionMode::Destroy
        } else {
            SessionMode::WorkerShutdownTimeout
        };
        Ok(Nginx {
            cfg,
            tera,
            reload_owed: false,
            loaded,
            workers_before_reload: Vec::new(),
            session_mode,
            cgroup_problem: None,
        })
    }

    pub fn session_mode(&self) -> SessionMode {
        match (self.session_mode, &self.cgroup_problem) {
            (SessionMode::Destroy, Some(_)) => SessionMode::NoNginxCgroup,
            (mode, _) => mode,
        }
    }

    /// nginx's master and cgroup, found through the pid file (see [`sessions::nginx_process`]).
    pub(crate) fn nginx_process(&self) -> Result<sessions::NginxProcess, String> {
        let master = self.master_pid().ok_or_else(|| {
            "nginx's pid file cannot be read (set [nginx] reload = { pid_file = ... }, or pid_file beside a reload command)".to_string()
        })?;
        sessions::nginx_process(master)
    }

    /// Looks for nginx's cgroup again; `Some(why)` while sessions cannot be moved.
    pub(crate) fn refresh_session_mode(&mut self) -> Option<String> {
        if self.session_mode != SessionMode::Destroy {
            return None;
        }
        self.cgroup_problem = self.nginx_process().err();
        self.cgroup_problem.clone()
    }

    /// nginx's master, from `[nginx] pid_file` (the one the reload signals, by default), when
    /// it runs and is nginx.
    fn master_pid(&self) -> Option<u32> {
        master::find(&self.cfg.pid_file).ok().and_then(Master::pid)
    }

    /// Ends nginx's connections to `address` (a node's upstream address), so that the clients
    /// holding them reconnect to the primary. Waits first for the last reload to take effect:
    /// an old worker still accepting would take the reconnect back to the old node. Returns
    /// how many connections were ended; in fallback mode, none (they end at
    /// `worker_shutdown_timeout`).
    pub async fn move_sessions(&mut self, address: &str) -> Result<usize, NginxError> {
        if self.session_mode != SessionMode::Destroy {
            return Ok(0);
        }
        // A unix-socket upstream has no TCP connection to end.
        if address.starts_with("unix:") {
            return Ok(0);
        }
        let peers: Vec<std::net::SocketAddr> =
            match tokio::time::timeout(Duration::from_secs(2), tokio::net::lookup_host(address))
                .await
            {
                Ok(Ok(addrs)) => addrs.collect(),
                Ok(Err(e)) => {
                    return Err(NginxError::Resolve {
                        address: address.to_string(),
                        why: e.to_string(),
                    })
                }
                Err(_) => {
                    return Err(NginxError::Resolve {
                        address: address.to_string(),
                        why: "no answer within 2s".into(),
                    })
                }
            };
        // Only nginx's own connections: the sockets of its cgroup. Without one, none.
        let owners = match self.nginx_process() {
            Ok(p) => {
                self.cgroup_problem = None;
                Owners { cgroup: p.cgroup }
            }
            Err(why) => {
                self.cgroup_problem = Some(why);
                return Ok(0);
            }
        };
        let old = std::mem::take(&mut self.workers_before_reload);
        let deadline = tokio::time::Instant::now() + sessions::RELOAD_SETTLE;
        while old.iter().any(|&w| {
            sessions::title(w)
                .is_some_and(|t| t.contains("worker process") && !t.contains("shutting down"))
        }) && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let result = tokio::task::spawn_blocking(move || {
            peers
                .into_iter()
                .map(|p| sessions::destroy_connections_to(p, &owners))
                .sum::<Result<usize, DestroyError>>()
        })
        .await
        .map_err(|_| NginxError::SessionTask)?;
        match result {
            Ok(n) => Ok(n),
            Err(DestroyError::NoCgroups) => {
                self.cgroup_problem = Some(DestroyError::NoCgroups.to_string());
                Ok(0)
            }
            Err(e @ (DestroyError::NotPermitted | DestroyError::Unsupported)) => {
                self.session_mode = SessionMode::WorkerShutdownTimeout;
                Err(NginxError::SessionsFallback(e))
            }
            Err(e) => Err(NginxError::Sessions(e)),
        }
    }

    pub fn output(&self) -> &Path {
        &self.cfg.output
    }

    /// The part of the file that decides where new sessions go: the file rendered without
    /// backups. Two plans with the same routing differ only in their backups.
    fn routing(&self, plan: &UpstreamPlan) -> Result<String, NginxError> {
        let primary_only = UpstreamPlan {
            primary: plan.primary.clone(),
            backups: Vec::new(),
        };
        Ok(sha256(self.render(&primary_only)?.as_bytes()))
    }

    /// The upstream file for a plan.
    pub fn render(&self, plan: &UpstreamPlan) -> Result<String, NginxError> {
        let servers: Vec<TemplateServer> = plan
            .servers()
            .map(|s| TemplateServer {
                name: &s.name,
                address: &s.address,
                backup: s.backup,
            })
            .collect();
        let mut ctx = Context::new();
        ctx.insert("version", env!("CARGO_PKG_VERSION"));
        ctx.insert("upstream_name", &self.cfg.upstream_name);
        ctx.insert("primary", &servers[0]);
        ctx.insert("servers", &servers);
        self.tera
            .render("upstream", &ctx)
            .map_err(|e| NginxError::Render {
                template: self.cfg.template_name.clone(),
                message: error_chain(&e),
            })
    }

    /// Checks, before anything is probed, that the output directory is writable, so that a
    /// misconfigured path stops chain-co at start rather than at the first change.
    pub fn preflight(&self) -> Result<(), NginxError> {
        let dir = parent_dir(&self.cfg.output);
        let probe = dir.join(format!(".chain-co-preflight-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| NginxError::Write {
                path: self.cfg.output.clone(),
                message: format!("directory {} is not writable: {e}", dir.display()),
            })
    }

    /// Publishes `plan`, or explains why not. The previous file stays on any error.
    pub async fn apply(&mut self, plan: &UpstreamPlan) -> Result<Applied, NginxError> {
        let text = self.render(plan)?;
        let routing = self.routing(plan)?;
        let output = self.cfg.output.clone();
        let current = match std::fs::read_to_string(&output) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            // Unreadable (permissions, not UTF-8): treat as different and let the swap decide.
            Err(_) => None,
        };
        // What nginx runs is known only while the file is the one chain-co left: a file edited
        // by hand may have been loaded by hand too.
        let ours = current
            .as_deref()
            .map(|c| sha256(c.as_bytes()))
            .zip(self.loaded.as_ref())
            .is_some_and(|(sha, l)| sha == l.written_sha256);
        let same_routing = ours
            && self
                .loaded
                .as_ref()
                .is_some_and(|l| l.routing_sha256 == routing);
        if current.as_deref() == Some(text.as_str()) {
            if self.reload_owed || (ours && !same_routing) {
                self.reload().await?;
                self.reload_owed = false;
                self.remember(&text, Some(routing));
                return Ok(Applied::Changed { reloaded: true });
            }
            if !ours {
                // First start with this file already in place (an earlier chain-co, or the
                // operator's seed that happens to match): take it as what nginx runs, as the
                // file is all nginx could have read.
                self.remember(&text, Some(routing));
            }
            return Ok(Applied::Unchanged);
        }

        let had_previous = self.swap_in(&output, &text).await?;
        crate::files::sync_dir(&output);

        if self.cfg.validate == Validate::Full {
            if let Err(refusal) = self.test(&output).await {
                return Err(match roll_back(&output, had_previous) {
                    Ok(()) => refusal,
                    Err(e) => NginxError::Rollback {
                        path: output,
                        message: e.to_string(),
                    },
                });
            }
        }
        if same_routing && !self.reload_owed {
            self.remember(&text, None);
            return Ok(Applied::Changed { reloaded: false });
        }
        match self.reload().await {
            Ok(()) => {
                if self.cfg.validate == Validate::Private {
                    if let Err(e) = self.confirm_reload().await {
                        // nginx refused the whole configuration at the reload (what the private
                        // test cannot see): put the previous file back, as for a refused test.
                        let _ = roll_back(&output, had_previous);
                        self.reload_owed = false;
                        return Err(NginxError::Rejected {
                            path: output,
                            output: e.to_string(),
                        });
                    }
                }
                self.reload_owed = false;
                self.remember(&text, Some(routing));
                Ok(Applied::Changed { reloaded: true })
            }
            Err(e) => {
                self.reload_owed = true;
                // The file is ours; nginx still runs the old routing, which the owed reload
                // will replace.
                self.remember(&text, None);
                Err(e)
            }
        }
    }

    /// Puts `text` in place of `output`: written beside it and fsynced (the private test reads
    /// it there), the previous file kept as a backup (hard link, else a copy), renamed over.
    /// Returns whether there was a previous file. On any failure nothing has changed.
    async fn swap_in(&self, output: &Path, text: &str) -> Result<bool, NginxError> {
        let output = output.to_path_buf();
        let tmp = sibling(&output, ".chain-co.tmp", true);
        let backup = sibling(&output, ".chain-co.bak", false);
        // The new file gets the permissions of the one it replaces (0644 for a first one), so
        // that nginx's workers and the operator's tools read it as before.
        let mode = std::fs::metadata(&output).map_or(0o644, |m| {
            std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777
        });
        crate::files::write_synced(&tmp, text.as_bytes(), mode).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            NginxError::Write {
                path: output.clone(),
                message: e.to_string(),
            }
        })?;
        // The private test reads the candidate where it is, so that the file nginx includes
        // never holds a refused configuration, not even for the test's few milliseconds.
        if self.cfg.validate == Validate::Private {
            if let Err(refusal) = self.test(&tmp).await {
                let _ = std::fs::remove_file(&tmp);
                return Err(refusal);
            }
        }
        let had_previous = output.exists();
        if had_previous {
            let _ = std::fs::remove_file(&backup);
            if let Err(e) = std::fs::hard_link(&output, &backup)
                .or_else(|_| std::fs::copy(&output, &backup).map(|_| ()))
            {
                let _ = std::fs::remove_file(&tmp);
                return Err(NginxError::Write {
                    path: output.clone(),
                    message: format!("cannot keep a backup at {}: {e}", backup.display()),
                });
            }
        }
        if let Err(e) = std::fs::rename(&tmp, &output) {
            let _ = std::fs::remove_file(&tmp);
            return Err(NginxError::Write {
                path: output.clone(),
                message: e.to_string(),
            });
        }
        crate::files::sync_dir(&output);
        Ok(had_previous)
    }

    /// Records the file now in place and, when nginx was reloaded, its routing; saved beside
    /// the output. Best effort: a lost record costs one reload after a restart, nothing more.
    fn remember(&mut self, text: &str, reloaded_routing: Option<String>) {
        let routing_sha256 = match (reloaded_routing, &self.loaded) {
            (Some(r), _) => r,
            (None, Some(l)) => l.routing_sha256.clone(),
            (None, None) => String::new(),
        };
        let loaded = Loaded {
            written_sha256: sha256(text.as_bytes()),
            routing_sha256,
        };
        let path = sibling(&self.cfg.output, ".chain-co.loaded", true);
        let tmp = sibling(&self.cfg.output, ".chain-co.loaded.tmp", true);
        let bytes = serde_json::to_vec(&loaded).expect("plain strings serialize");
        if crate::files::write_synced(&tmp, &bytes, 0o644)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .is_err()
        {
            let _ = std::fs::remove_file(&tmp);
        }
        self.loaded = Some(loaded);
    }

    /// `nginx -t` as configured; the private test includes `file` (the candidate).
    async fn test(&self, file: &Path) -> Result<(), NginxError> {
        let private;
        let cmd = match self.cfg.validate {
            Validate::Full => &self.cfg.test_cmd,
            Validate::Private => {
                private = self
                    .private_test(file)
                    .map_err(|e| NginxError::TestCommand {
                        cmd: "nginx -t (private)".into(),
                        message: e.to_string(),
                    })?;
                &private
            }
        };
        match run_command(cmd).await {
            Ok((true, _)) => Ok(()),
            Ok((false, out)) => Err(NginxError::Rejected {
                path: self.cfg.output.clone(),
                output: out,
            }),
            Err(message) => Err(NginxError::TestCommand {
                cmd: cmd.join(" "),
                message,
            }),
        }
    }

    /// The private test configuration (see [`Validate::Private`]), written in a hidden
    /// directory beside the output, and the command that tests it.
    fn private_test(&self, file: &Path) -> std::io::Result<Vec<String>> {
        let dir = sibling(&self.cfg.output, ".chain-co-test", true);
        std::fs::create_dir_all(&dir)?;
        let d = dir.display();
        let conf = format!(
            "# Written by chain-co to validate {output} without privileges; not for use.\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log;\n\
             events {{}}\n\
             http {{\n\
             \x20   client_body_temp_path {d}/client_body;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   access_log off;\n\
             \x20   include {output};\n\
             \x20   server {{\n\
             \x20       listen unix:{d}/test.sock;\n\
             \x20       location / {{ proxy_pass http://{upstream}; }}\n\
             \x20   }}\n\
             }}\n",
            output = file.display(),
            upstream = self.cfg.upstream_name,
        );
        std::fs::write(dir.join("nginx.conf"), conf)?;
        let binary = self
            .cfg
            .test_cmd
            .first()
            .cloned()
            .unwrap_or_else(|| "nginx".into());
        Ok(vec![
            binary,
            "-t".into(),
            "-q".into(),
            "-p".into(),
            d.to_string(),
            "-c".into(),
            format!("{d}/nginx.conf"),
            "-e".into(),
            format!("{d}/error.log"),
        ])
    }

    /// After a SIGHUP: nginx starts a new generation of workers when it took the new
    /// configuration, and keeps the old ones, silently, when it refused it. Waits up to 5 s for
    /// a worker that was not there before. `Ok` when nothing can be checked (no master pid or
    /// no workers before).
    async fn confirm_reload(&self) -> Result<(), NginxError> {
        let before = &self.workers_before_reload;
        let Some(master) = self.master_pid() else {
            return Ok(());
        };
        if before.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if sessions::children(master)
                .iter()
                .any(|w| !before.contains(w))
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NginxError::Reload(format!(
                    "nginx (pid {master}) did not take the new configuration: no new workers within 5s; its error log says why"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn reload(&mut self) -> Result<(), NginxError> {
        self.workers_before_reload = self
            .master_pid()
            .map(sessions::children)
            .unwrap_or_default();
        match &self.cfg.reload {
            Reload::PidFile(path) => {
                let pid = match master::find(path) {
                    Ok(Master::Running(pid)) => pid,
                    // nginx reads the file when it starts; a first run before nginx is up
                    // is calm, not an error.
                    Ok(Master::NotRunning) => {
                        tracing::info!(
                            pid_file = %path.display(),
                            "nginx is not running (no pid in its pid file); it reads the new upstream file when it starts"
                        );
                        return Ok(());
                    }
                    Ok(Master::Stale(pid)) => {
                        return Err(NginxError::Reload(format!(
                            "pid file {} names pid {pid}, which does not run (stale pid file?)",
                            path.display()
                        )))
                    }
                    Err(e) => return Err(NginxError::Reload(e.to_string())),
                };
                kill(Pid::from_raw(pid as i32), Signal::SIGHUP).map_err(|e| {
                    NginxError::Reload(format!(
                        "SIGHUP to pid {pid} from {}: {e} (stale pid file?)",
                        path.display()
                    ))
                })
            }
            Reload::Command(cmd) => match run_command(cmd).await {
                Ok((true, _)) => Ok(()),
                Ok((false, out)) => Err(NginxError::Reload(format!("{}: {out}", cmd.join(" ")))),
                Err(e) => Err(NginxError::Reload(format!("{}: {e}", cmd.join(" ")))),
            },
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Runs a command with a deadline; returns whether it succeeded and its output on one line.
pub(crate) async fn run_command(cmd: &[String]) -> Result<(bool, String), String> {
    let (program, args) = cmd.split_first().ok_or("empty command")?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child)
        .await
        .map_err(|_| format!("did not finish within {}s", COMMAND_TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())?;
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    let one_line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    let status = if out.status.success() {
        String::new()
    } else {
        format!("exit status {}: ", out.status.code().unwrap_or(-1))
    };
    Ok((out.status.success(), format!("{status}{one_line}")))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Puts the previous file back (the backup beside `output`), or removes the new one when there
/// was none: the last good configuration is what stays.
fn roll_back(output: &Path, had_previous: bool) -> std::io::Result<()> {
    let restored = if had_previous {
        std::fs::rename(sibling(output, ".chain-co.bak", false), output)
    } else {
        std::fs::remove_file(output)
    };
    crate::files::sync_dir(output);
    restored
}

/// A file next to `path`. Hidden (dot-prefixed) files are not matched by `include conf.d/*.conf`.
fn sibling(path: &Path, suffix: &str, hidden: bool) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "upstream".into());
    let name = if hidden {
        format!(".{name}{suffix}")
    } else {
        format!("{name}{suffix}")
    };
    parent_dir(path).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::UpstreamServer;

    fn plan() -> UpstreamPlan {
        UpstreamPlan {
            primary: UpstreamServer {
                name: "lotus-a".into(),
                address: "10.0.0.11:1234".into(),
                backup: false,
            },
            backups: vec![UpstreamServer {
                name: "lotus-b".into(),
                address: "10.0.0.12:1234".into(),
                backup: true,
            }],
        }
    }

    fn nginx(dir: &Path, test_cmd: &[&str]) -> Nginx {
        Nginx::new(NginxConfig {
            template_name: "built-in".into(),
            template: DEFAULT_TEMPLATE.into(),
            output: dir.join("upstream.conf"),
            test_cmd: test_cmd.iter().map(|s| s.to_string()).collect(),
            reload: Reload::Command(vec!["true".into()]),
            pid_file: dir.join("nginx.pid"),
            upstream_name: "filecoin".into(),
            move_sessions: true,
            validate: Validate::Full,
        })
        .expect("template compiles")
    }

    #[test]
    fn renders_primary_then_backups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = nginx(dir.path(), &["true"])
            .render(&plan())
            .expect("render");
        assert!(text.contains("upstream filecoin {"), "{text}");
        assert!(
            text.contains(
                "server 10.0.0.11:1234 max_fails=1 fail_timeout=10s;  # lotus-a (primary)"
            ),
            "{text}"
        );
        assert!(
            text.contains("server 10.0.0.12:1234 backup max_fails=1 fail_timeout=10s;  # lotus-b"),
            "{text}"
        );
        let a = text.find("10.0.0.11").expect("a");
        let b = text.find("10.0.0.12").expect("b");
        assert!(a < b);
    }

    #[tokio::test]
    async fn writes_once_then_leaves_the_file_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut n = nginx(dir.path(), &["true"]);
        assert_eq!(
            n.apply(&plan()).await,
            Ok(Applied::Changed { reloaded: true })
        );
        assert_eq!(n.apply(&plan()).await, Ok(Applied::Unchanged));
        // A hand edit is put back.
        std::fs::write(dir.path().join("upstream.conf"), "# edited\n").expect("edit");
        assert_eq!(
            n.apply(&plan()).await,
            Ok(Applied::Changed { reloaded: true })
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(names.is_empty(), "temp files left: {names:?}");
    }

    #[tokio::test]
    async fn the_new_file_keeps_the_permissions_of_the_old_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("upstream.conf");
        std::fs::write(&out, "# old\n").expect("seed");
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let mut n = nginx(dir.path(), &["true"]);
        assert_eq!(
            n.apply(&plan()).await,
            Ok(Applied::Changed { reloaded: true })
        );
        let mode = std::fs::metadata(&out).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[tokio::test]
    async fn a_full_or_read_only_directory_keeps_the_previous_file_and_recovers() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("conf.d");
        std::fs::create_dir(&sub).expect("dir");
        let out = sub.join("upstream.conf");
        std::fs::write(&out, "# last good\n").expect("seed");
        let mut n = nginx(&sub, &["true"]);
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        // Root ignores directory permissions; the check only means something for other users.
        if !nix::unistd::geteuid().is_root() {
            let err = n.apply(&plan()).await.expect_err("read-only");
            assert!(err.to_string().contains("kept the previous file"), "{err}");
            assert_eq!(
                std::fs::read_to_string(&out).expect("read"),
                "# last good\n"
            );
        }
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(
            n.apply(&plan()).await,
            Ok(Applied::Changed { reloaded: true }),
            "recovers once writable"
        );
    }

    #[tokio::test]
    async fn a_refused_file_is_rolled_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("upstream.conf");
        std::fs::write(&out, "# last good\n").expect("seed");
        let mut n = nginx(
            dir.path(),
            &["sh", "-c", "echo 'emerg: bad directive' >&2; exit 1"],
        );
        let err = n.apply(&plan()).await.expect_err("refused");
        assert!(matches!(err, NginxError::Rejected { .. }), "{err}");
        assert!(err.to_string().contains("emerg: bad directive"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&out).expect("read"),
            "# last good\n"
        );
    }

    #[tokio::test]
    async fn a_refused_first_file_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut n = nginx(dir.path(), &["false"]);
        n.apply(&plan()).await.expect_err("refused");
        assert!(!dir.path().join("upstream.conf").exists());
    }

    #[tokio::test]
    async fn a_missing_test_program_keeps_the_previous_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("upstream.conf");
        std::fs::write(&out, "# last good\n").expect("seed");
        let mut n = nginx(dir.path(), &["/nonexistent/nginx", "-t"]);
        let err = n.apply(&plan()).await.expect_err("no program");
        assert!(
            err.to_string()
                .contains("cannot run the nginx test command"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&out).expect("read"),
            "# last good\n"
        );
    }

    /// A reload command that counts its runs in a file.
    fn counting(n: &mut Nginx, dir: &Path) -> PathBuf {
        let count = dir.join("reloads");
        n.cfg.reload = Reload::Command(vec![
            "sh".into(),
            "-c".into(),
            format!("echo x >> {}", count.display()),
        ]);
        count
    }

    fn reloads(count: &Path) -> usize {
        std::fs::read_to_string(count).map_or(0, |t| t.lines().count())
    }

    fn with_backups(names: &[(&str, &str)]) -> UpstreamPlan {
        let mut p = plan();
        p.backups = names
            .iter()
            .map(|(name, address)| UpstreamServer {
                name: name.to_string(),
                address: address.to_string(),
                backup: true,
            })
            .collect();
        p
    }

    #[tokio::test]
    async fn a_change_of_backups_alone_is_written_without_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut n = nginx(dir.path(), &["true"]);
        let count = counting(&mut n, dir.path());
        assert_eq!(
            n.apply(&plan()).await,
            Ok(Applied::Changed { reloaded: true })
        );
        assert_eq!(reloads(&count), 1);
        // A backup leaves, another comes: the file follows, nginx is not signalled.
        let fewer = with_backups(&[]);
        assert_eq!(
            n.apply(&fewer).await,
            Ok(Applied::Changed { reloaded: false })
        );
        let text = std::fs::read_to_string(dir.path().join("upstream.conf")).expect("read");
        assert!(!text.contains("10.0.0.12"), "{text}");
        let more = with_backups(&[("lotus-b", "10.0.0.12:1234"), ("lotus-c", "10.0.0.13:1234")]);
        assert_eq!(
            n.apply(&more).await,
            Ok(Applied::Changed { reloaded: false })
        );
        assert_eq!(n.apply(&more).await, Ok(Applied::Unchanged));
        assert_eq!(reloads(&count), 1, "no reload for backups");
        // A new primary is a reload.
        let mut moved = more.clone();
        std::mem::swap(&mut moved.primary, &mut moved.backups[0]);
        moved.primary.backup = false;
        moved.backups[0].backup = true;
        assert_eq!(
            n.apply(&moved).await,
            Ok(Applied::Changed { reloaded: true })
        );
        assert_eq!(reloads(&count), 2);
    }

    #[tokio::test]
    async fn a_restarted_chain_co_knows_what_nginx_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut n = nginx(dir.path(), &["true"]);
        let count = counting(&mut n, dir.path());
        assert_eq!(
            n.apply(&plan()).await,
            Ok(Applied::Changed { reloaded: true })
        );
        assert_eq!(
            n.apply(&with_backups(&[])).await,
            Ok(Applied::Changed { reloaded: false })
        );
        // A new process reads the record beside the file.
        let mut again = nginx(dir.path(), &["true"]);
        again.cfg.reload = n.cfg.reload.clone();
        assert_eq!(
            again.apply(&plan()).await,
            Ok(Applied::Changed { reloaded: false })
        );
        assert_eq!(reloads(&count), 1);
        // A damaged record only costs a reload.
        std::fs::write(dir.path().join(".upstream.conf.chain-co.loaded"), "{oops").expect("damage");
        let mut third = nginx(dir.path(), &["true"]);
        third.cfg.reload = n.cfg.reload.clone();
        assert_eq!(
            third.apply(&with_backups(&[])).await,
            Ok(Applied::Changed { reloaded: true })
        );
        assert_eq!(reloads(&count), 2);
    }

    #[tokio::test]
    async fn a_hand_edited_file_is_put_back_with_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut n = nginx(dir.path(), &["true"]);
        let count = counting(&mut n, dir.path());
        assert_eq!(
            n.apply(&plan()).await,
            Ok(Applied::Changed { reloaded: true })
        );
        // Same primary, other backups, but by hand: nginx may run anything, so reload.
        std::fs::write(dir.path().join("upstream.conf"), "# edited\n").expect("edit");
        assert_eq!(
            n.apply(&plan()).await,
            Ok(Applied::Changed { reloaded: true })
        );
        assert_eq!(reloads(&count), 2);
    }

    #[tokio::test]
    async fn a_refused_backup_change_keeps_the_previous_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut n = nginx(dir.path(), &["true"]);
        assert_eq!(
            n.apply(&plan()).await,
            Ok(Applied::Changed { reloaded: true })
        );
        let before = std::fs::read_to_string(dir.path().join("upstream.conf")).expect("read");
        n.cfg.test_cmd = vec!["false".into()];
        n.apply(&with_backups(&[])).await.expect_err("refused");
        let after = std::fs::read_to_string(dir.path().join("upstream.conf")).expect("read");
        assert_eq!(before, after);
        n.cfg.test_cmd = vec!["true".into()];
        assert_eq!(n.apply(&plan()).await, Ok(Applied::Unchanged));
    }

    /// Before nginx runs (no pid file, or the empty one `nginx -t` leaves) the first apply is
    /// calm: the file is in place for nginx's start, and nothing is owed.
    #[tokio::test]
    async fn nginx_not_running_is_not_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut n = nginx(dir.path(), &["true"]);
        n.cfg.reload = Reload::PidFile(dir.path().join("nginx.pid"));
        assert!(n.apply(&plan()).await.is_ok());
        std::fs::write(dir.path().join("nginx.pid"), "").expect("empty pid file");
        let mut p = plan();
        p.backups.clear();
        assert!(n.apply(&p).await.is_ok());
        assert!(!n.reload_owed);
    }

    #[tokio::test]
    async fn a_failed_reload_is_retried_on_the_next_apply() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut n = nginx(dir.path(), &["true"]);
        // A pid file naming no live process: the reload fails and is owed.
        std::fs::write(dir.path().join("nginx.pid"), "999999999\n").expect("pid");
        n.cfg.reload = Reload::PidFile(dir.path().join("nginx.pid"));
        let err = n.apply(&plan()).await.expect_err("stale pid file");
        assert!(err.to_string().contains("stale pid file?"), "{err}");
        n.cfg.reload = Reload::Command(vec!["true".into()]);
        assert_eq!(
            n.apply(&plan()).await,
            Ok(Applied::Changed { reloaded: true })
        );
        assert_eq!(n.apply(&plan()).await, Ok(Applied::Unchanged));
    }
}

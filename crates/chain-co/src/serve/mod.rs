//! Serve: the loop and what it shows. [`daemon`] is `run`'s loop (probe, evaluate, publish,
//! report; hot reload); [`report`] is what one round found and did, which [`api`] (status API,
//! page, `/healthz`), [`metrics`] and [`history`] (the journal and the heads of the last hour)
//! read. None of the readers imports the loop.

pub mod api;
pub(crate) mod carry;
pub mod daemon;
pub mod history;
mod journal_file;
pub mod metrics;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::apply::nginx_watch::{NginxEvent, NginxWatch};

use crate::config::Config;
use daemon::{Daemon, DaemonError};

/// Why `run` could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("preflight: {0}")]
    Preflight(DaemonError),
    #[error("binding the status API to {addr} ([api] listen): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("listening for SIGHUP: {0}")]
    Signal(std::io::Error),
    #[error("watching the configuration file {path}: {message}")]
    Watch { path: PathBuf, message: String },
}

/// `chain-co run`: the loop, the status API, and reloads on SIGHUP or a change of the file at
/// `path`, until `shutdown`. A library function, so that tests can run the daemon in-process.
pub async fn run(
    config: Config,
    path: PathBuf,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let listen = config.api.listen;
    let nodes = config.nodes.len();
    let nginx_watch = nginx_watch(&config);
    let carriers = config.carries_messages().then(|| carry::daemons(&config));
    let (daemon, shared) = Daemon::new(config, Some(path.clone()))?;
    let carrier = daemon.carrier();
    daemon.preflight().map_err(ServeError::Preflight)?;
    let listener = api::bind(listen).await.map_err(|source| ServeError::Bind {
        addr: listen,
        source,
    })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: listen,
        source,
    })?;
    info!(listen = %bound, "status API listening");
    let tasks = TaskTracker::new();
    let (reload_tx, reload_rx) = mpsc::channel(1);
    // SIGHUP and a change of the file both ask for a reload; bursts collapse into one.
    {
        let tx = reload_tx.clone();
        let stop = shutdown.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(ServeError::Signal)?;
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    Some(()) = hup.recv() => {
                        info!("SIGHUP: reloading the configuration");
                        let _ = tx.try_send(());
                    }
                }
            }
        });
    }
    let _watcher = watch_file(&path, reload_tx)?;
    if let Some(nodes) = carriers {
        tasks.spawn(carry::check_write(nodes, carrier, shared.clone()));
    }
    if let Some(watch) = nginx_watch {
        let shared = shared.clone();
        let track_file = watch.track_file.clone();
        info!(pid_file = %watch.pid_file.display(), track_file = %track_file.display(), "watching nginx's master");
        let pid_file = watch.pid_file.clone();
        tasks.spawn(watch.run(shutdown.clone(), move |event| {
            let text = event.text(&track_file);
            match &event {
                NginxEvent::Running { .. } => shared.metrics.nginx_up(&pid_file, true),
                NginxEvent::Died { .. } | NginxEvent::Refused { .. } => {
                    shared.metrics.nginx_up(&pid_file, false)
                }
                NginxEvent::Off { .. } | NginxEvent::TrackFileFailed { .. } => {}
            }
            match &event {
                NginxEvent::Running { .. } => info!("{text}"),
                NginxEvent::Off { .. } => {
                    warn!("{text}");
                    shared
                        .notices
                        .lock()
                        .expect("notices lock")
                        .push(text.clone());
                }
                _ => warn!("{text}"),
            }
            shared.history.lock().expect("history lock").record(
                std::time::SystemTime::now(),
                history::EventKind::Nginx,
                None,
                text,
            );
        }));
    }
    let api_stop = shutdown.clone();
    let cap = api::connection_cap(nodes);
    tasks.spawn(async move {
        if let Err(e) = api::serve(listener, shared, api_stop, cap).await {
            error!("status API failed: {e}");
        }
    });
    daemon.run(shutdown, reload_rx).await;
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        error!("some tasks did not stop within 5s");
    }
    Ok(())
}

/// The nginx watch `[ha] track_file` asks for: nginx's pid file, the track file, and the
/// test command that says a restarted nginx's configuration is valid. Settings read at start:
/// a reload that changes them takes effect at the next restart.
fn nginx_watch(config: &Config) -> Option<NginxWatch> {
    let track_file = config.track_file.clone()?;
    let nginx = config.nginx()?;
    Some(NginxWatch {
        pid_file: nginx.pid_file.clone(),
        track_file,
        // The private test needs a candidate file; a running master loaded a configuration
        // nginx accepted, which is what the unprivileged mode can know.
        test_cmd: match nginx.validate {
            crate::apply::nginx::Validate::Full => nginx.test_cmd.clone(),
            crate::apply::nginx::Validate::Private => Vec::new(),
        },
    })
}

/// Watches the config file's directory (editors replace files rather than write them in place)
/// and asks for a reload when the file changes.
fn watch_file(
    path: &std::path::Path,
    tx: mpsc::Sender<()>,
) -> Result<notify::RecommendedWatcher, ServeError> {
    use notify::Watcher;
    let failed = |message: String| ServeError::Watch {
        path: path.to_path_buf(),
        message,
    };
    let path = std::fs::canonicalize(path).map_err(|e| failed(e.to_string()))?;
    let dir = path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| ".".into());
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event {
            let ours = e
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
            if ours && (e.kind.is_modify() || e.kind.is_create()) {
                let _ = tx.try_send(());
            }
        }
    })
    .map_err(|e| failed(e.to_string()))?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| failed(e.to_string()))?;
    Ok(watcher)
}

//! Watching nginx's master, so that a dead nginx moves the VIP at once.
//!
//! nginx is the data path: when it dies on the master host, every request fails until
//! keepalived notices. Its `vrrp_script` check runs at most once a second and needs `fall`
//! failures (2.5 s and 330 failed requests, measured); `track_process` does not work in a
//! network namespace. What keepalived does react to at once is a `vrrp_track_file`, through
//! inotify. So chain-co holds a pidfd of nginx's master (the kernel wakes it the moment the
//! process exits, no polling) and writes the track file: `1` (keepalived: FAULT, the VIP
//! leaves) when nginx is dead, `0` once nginx runs again with a configuration `nginx -t`
//! accepts. Each write is atomic (a temp file renamed over it), so keepalived never reads half
//! a number.
//!
//! While nginx is down, its return is looked for every [`RETURN_POLL`]: coming back is not
//! urgent, the other host serves meanwhile. A pid file that names a process that is not nginx
//! turns the watch off, said once; keepalived's script check still guards the host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::apply::master::{self, Master, PidFileError};

/// How often a dead nginx is looked for again.
pub const RETURN_POLL: Duration = Duration::from_millis(200);

/// What the watch found, for the journal and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NginxEvent {
    /// nginx runs with a configuration nginx accepts: the track file says 0.
    Running { pid: u32 },
    /// nginx's master exited (or was never found at start): the track file says 1.
    Died { pid: Option<u32> },
    /// nginx runs but its configuration is refused: the track file stays 1.
    Refused { pid: u32, why: String },
    /// The pid file names no nginx: the watch is off.
    Off { why: String },
    /// The track file could not be written.
    TrackFileFailed { why: String },
}

impl NginxEvent {
    /// In words, for the journal.
    pub fn text(&self, track_file: &Path) -> String {
        let file = track_file.display();
        match self {
            NginxEvent::Running { pid } => {
                format!("nginx runs (pid {pid}) and its configuration is valid: {file} = 0")
            }
            NginxEvent::Died { pid: Some(pid) } => format!(
                "nginx (pid {pid}) died: {file} = 1, keepalived moves the VIP to the other host"
            ),
            NginxEvent::Died { pid: None } => {
                format!("nginx does not run: {file} = 1, this host does not hold the VIP")
            }
            NginxEvent::Refused { pid, why } => format!(
                "nginx runs (pid {pid}) but its configuration is refused, {file} stays 1: {why}"
            ),
            NginxEvent::Off { why } => format!(
                "the nginx watch is off ({why}); {file} is left as it is, keepalived's script check still guards this host"
            ),
            NginxEvent::TrackFileFailed { why } => {
                format!("cannot write the track file {file}: {why}")
            }
        }
    }
}

/// The watch's settings: `[nginx] pid_file`, `[ha] track_file` and the command that validates
/// nginx's configuration (`[nginx] test_cmd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxWatch {
    pub pid_file: PathBuf,
    pub track_file: PathBuf,
    pub test_cmd: Vec<String>,
}

/// The number in the track file: what keepalived reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Track {
    Ok,
    Fault,
}

impl NginxWatch {
    /// Runs until `shutdown`, calling `report` at every change.
    pub async fn run(self, shutdown: CancellationToken, mut report: impl FnMut(NginxEvent)) {
        let mut written = None;
        let mut last: Option<NginxEvent> = None;
        let mut say = |e: NginxEvent, last: &mut Option<NginxEvent>| {
            if last.as_ref() != Some(&e) {
                report(e.clone());
                *last = Some(e);
            }
        };
        loop {
            let found = master::find(&self.pid_file);
            let (wanted, event) = match found {
                Ok(Master::Running(pid)) => match self.config_valid().await {
                    Ok(()) => (Track::Ok, NginxEvent::Running { pid }),
                    Err(why) => (Track::Fault, NginxEvent::Refused { pid, why }),
                },
                Ok(Master::NotRunning) => (Track::Fault, NginxEvent::Died { pid: None }),
                Ok(Master::Stale(pid)) => (Track::Fault, NginxEvent::Died { pid: Some(pid) }),
                Err(e @ PidFileError::NotNginx { .. }) => {
                    say(NginxEvent::Off { why: e.to_string() }, &mut last);
                    return;
                }
                // Unreadable or half-written: look again shortly, change nothing.
                Err(_) => {
                    if sleep_or_stop(&shutdown, RETURN_POLL).await {
                        return;
                    }
                    continue;
                }
            };
            if written != Some(wanted) {
                match self.write(wanted) {
                    Ok(()) => written = Some(wanted),
                    Err(e) => say(
                        NginxEvent::TrackFileFailed { why: e.to_string() },
                        &mut last,
                    ),
                }
            }
            let running = matches!(event, NginxEvent::Running { .. });
            say(event, &mut last);
            if let (true, Ok(Master::Running(pid))) = (running, found) {
                if wait_for_exit(pid, &shutdown).await {
                    return;
                }
                // Dead: the track file says so before anything else is done.
                if self.write(Track::Fault).is_ok() {
                    written = Some(Track::Fault);
                }
                say(NginxEvent::Died { pid: Some(pid) }, &mut last);
            } else if sleep_or_stop(&shutdown, RETURN_POLL).await {
                return;
            }
        }
    }

    /// `nginx -t`: a restarted nginx that runs an old or broken configuration must not take
    /// the VIP back.
    async fn config_valid(&self) -> Result<(), String> {
        if self.test_cmd.is_empty() {
            return Ok(());
        }
        match crate::apply::nginx::run_command(&self.test_cmd).await {
            Ok((true, _)) => Ok(()),
            Ok((false, out)) => Err(out),
            Err(e) => Err(e),
        }
    }

    fn write(&self, track: Track) -> std::io::Result<()> {
        let text = match track {
            Track::Ok => "0\n",
            Track::Fault => "1\n",
        };
        let mut tmp = self.track_file.clone().into_os_string();
        tmp.push(".tmp");
        crate::files::write_atomic(&self.track_file, Path::new(&tmp), text.as_bytes(), 0o644)
    }
}

/// Waits for `pid` to exit (`false`) or for `shutdown` (`true`). A pid that cannot be
/// watched (already gone) counts as exited.
async fn wait_for_exit(pid: u32, shutdown: &CancellationToken) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return false;
    };
    let fd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK) {
        Ok(fd) => fd,
        Err(e) => {
            if e != rustix::io::Errno::SRCH {
                warn!(error = %e, "cannot watch nginx's master (pidfd_open); looking every 200 ms");
                return poll_for_exit(pid.as_raw_nonzero().get() as u32, shutdown).await;
            }
            return false;
        }
    };
    // Sound: the AsyncFd owns the OwnedFd, so the fd stays open for as long as it is
    // registered (tokio deprecated `new` for types that may close a borrowed fd early).
    #[allow(deprecated)]
    let fd = match AsyncFd::new(fd) {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e, "cannot watch nginx's pidfd; looking every 200 ms");
            return poll_for_exit(pid.as_raw_nonzero().get() as u32, shutdown).await;
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => true,
        // A pidfd becomes readable when the process exits.
        _ = fd.readable() => {
            info!(pid = pid.as_raw_nonzero().get(), "nginx's master exited");
            false
        }
    }
}

/// The fallback where pidfds are missing (kernels before 5.3).
async fn poll_for_exit(pid: u32, shutdown: &CancellationToken) -> bool {
    loop {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return false;
        }
        if sleep_or_stop(shutdown, RETURN_POLL).await {
            return true;
        }
    }
}

/// Sleeps `d`; `true` when `shutdown` came first.
async fn sleep_or_stop(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    async fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let end = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < end {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cond()
    }

    /// A stand-in master: `exec -a "nginx: master process …" sleep 30` carries nginx's title,
    /// so the pid file check takes it for nginx. Returned once the exec is done: bash's own
    /// command line holds the words too, and mid-exec the title is briefly empty.
    async fn fake_master() -> std::process::Child {
        let child = std::process::Command::new("bash")
            .args(["-c", "exec -a 'nginx: master process fake' sleep 30"])
            .spawn()
            .expect("spawn");
        assert!(
            until(Duration::from_secs(5), || {
                crate::apply::sessions::title(child.id())
                    .is_some_and(|t| t.starts_with("nginx: master process"))
            })
            .await
        );
        child
    }

    #[tokio::test]
    async fn the_track_file_follows_nginx_dying_and_returning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("nginx.pid");
        let track = dir.path().join("nginx-down");
        let mut child = fake_master().await;
        std::fs::write(&pid_file, format!("{}\n", child.id())).expect("pid");
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let watch = NginxWatch {
            pid_file: pid_file.clone(),
            track_file: track.clone(),
            test_cmd: vec!["true".into()],
        };
        let seen = events.clone();
        let task =
            tokio::spawn(watch.run(stop.clone(), move |e| seen.lock().expect("lock").push(e)));
        assert!(until(Duration::from_secs(5), || read(&track) == "0\n").await);
        child.kill().expect("kill");
        child.wait().expect("reaped");
        assert!(
            until(Duration::from_secs(2), || read(&track) == "1\n").await,
            "a dead nginx is written at once"
        );
        // Back with a valid configuration: 0 again.
        let mut again = fake_master().await;
        std::fs::write(&pid_file, format!("{}\n", again.id())).expect("pid");
        assert!(until(Duration::from_secs(5), || read(&track) == "0\n").await);
        stop.cancel();
        task.await.expect("task");
        let _ = again.kill();
        let _ = again.wait();
        let events = events.lock().expect("lock").clone();
        assert!(
            matches!(events.first(), Some(NginxEvent::Running { .. })),
            "{events:?}"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, NginxEvent::Died { pid: Some(_) })),
            "{events:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_configuration_keeps_the_host_at_fault_and_a_stranger_turns_the_watch_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("nginx.pid");
        let track = dir.path().join("nginx-down");
        let mut child = fake_master().await;
        std::fs::write(&pid_file, format!("{}\n", child.id())).expect("pid");
        let watch = NginxWatch {
            pid_file: pid_file.clone(),
            track_file: track.clone(),
            test_cmd: vec!["false".into()],
        };
        let stop = CancellationToken::new();
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let task = tokio::spawn(
            watch
                .clone()
                .run(stop.clone(), move |e| seen.lock().expect("lock").push(e)),
        );
        assert!(until(Duration::from_secs(5), || read(&track) == "1\n").await);
        stop.cancel();
        task.await.expect("task");
        assert!(
            matches!(
                events.lock().expect("lock").first(),
                Some(NginxEvent::Refused { .. })
            ),
            "{:?}",
            events.lock().expect("lock")
        );
        let _ = child.kill();
        let _ = child.wait();

        // This test process is no nginx: the watch says so and stops, the file untouched.
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).expect("pid");
        std::fs::write(&track, "7\n").expect("track");
        let mut off = Vec::new();
        watch.run(CancellationToken::new(), |e| off.push(e)).await;
        assert!(
            matches!(off.as_slice(), [NginxEvent::Off { .. }]),
            "{off:?}"
        );
        assert_eq!(read(&track), "7\n");
    }
}

//! nginx's master process, found through its pid file: the one discovery that the reload
//! (SIGHUP), the session moves (its cgroup) and the nginx watch (its exit) share.
//!
//! A pid file is a claim, not a fact: nginx may have died and its pid been reused. So a pid is
//! taken as nginx's master only when that process is alive and its title says so (nginx sets
//! `nginx: master process …`). Where the title cannot be read (a `/proc` mounted with
//! `hidepid`), the pid is trusted as before: the reload and the watch still work.

use std::path::{Path, PathBuf};

/// Why a pid file names no nginx master we may act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PidFileError {
    #[error("cannot read pid file {}: {why}", path.display())]
    Unreadable { path: PathBuf, why: String },
    #[error("pid file {} holds {text:?}, not a pid", path.display())]
    NotAPid { path: PathBuf, text: String },
    #[error("pid file {} holds pid {pid}; refusing to act on it", path.display())]
    Refused { path: PathBuf, pid: u32 },
    #[error("pid file {} names pid {pid}, which is {title:?}, not nginx's master process", path.display())]
    NotNginx {
        path: PathBuf,
        pid: u32,
        title: String,
    },
}

/// What the pid file says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Master {
    /// No pid file, or an empty one (`nginx -t` leaves one when nginx is not running): nginx
    /// does not run, and says so.
    NotRunning,
    /// The pid file names a process that is gone: nginx died without cleaning up.
    Stale(u32),
    /// nginx's master runs with this pid.
    Running(u32),
}

impl Master {
    /// The master's pid while it runs.
    pub fn pid(self) -> Option<u32> {
        match self {
            Master::Running(pid) => Some(pid),
            Master::NotRunning | Master::Stale(_) => None,
        }
    }
}

/// Reads `path` and checks the process it names.
pub fn find(path: &Path) -> Result<Master, PidFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Master::NotRunning),
        Err(e) => {
            return Err(PidFileError::Unreadable {
                path: path.to_path_buf(),
                why: e.to_string(),
            })
        }
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(Master::NotRunning);
    }
    let pid: u32 = text.parse().map_err(|_| PidFileError::NotAPid {
        path: path.to_path_buf(),
        text: crate::text::inert(text, 40),
    })?;
    if pid <= 1 {
        return Err(PidFileError::Refused {
            path: path.to_path_buf(),
            pid,
        });
    }
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Ok(Master::Stale(pid));
    }
    match crate::apply::sessions::title(pid) {
        // A zombie, or a process that just exited, has an empty command line.
        Some(t) if t.trim().is_empty() => Ok(Master::Stale(pid)),
        Some(t) if !is_master_title(&t) => Err(PidFileError::NotNginx {
            path: path.to_path_buf(),
            pid,
            title: crate::text::inert(&t, 80),
        }),
        _ => Ok(Master::Running(pid)),
    }
}

/// nginx renames its master `nginx: master process <command line>`; openresty and builds with
/// another name keep the `: master process` part.
fn is_master_title(title: &str) -> bool {
    title.contains(": master process")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_is_read_and_its_process_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("nginx.pid");
        assert_eq!(find(&file), Ok(Master::NotRunning), "no file");
        std::fs::write(&file, "\n").expect("write");
        assert_eq!(find(&file), Ok(Master::NotRunning), "empty");
        std::fs::write(&file, "abc\n").expect("write");
        assert!(matches!(find(&file), Err(PidFileError::NotAPid { .. })));
        std::fs::write(&file, "1\n").expect("write");
        assert!(matches!(
            find(&file),
            Err(PidFileError::Refused { pid: 1, .. })
        ));
        // This test's own process is alive and is not nginx.
        std::fs::write(&file, format!("{}\n", std::process::id())).expect("write");
        let e = find(&file).expect_err("not nginx");
        assert!(matches!(e, PidFileError::NotNginx { .. }), "{e}");
        assert!(e.to_string().contains("not nginx's master"), "{e}");
        // A pid nothing runs as (pid_max is at most 2^22).
        std::fs::write(&file, "4194304\n").expect("write");
        assert_eq!(find(&file), Ok(Master::Stale(4194304)));
    }

    #[test]
    fn nginx_titles_are_recognised() {
        assert!(is_master_title(
            "nginx: master process /usr/sbin/nginx -c /etc/nginx/nginx.conf"
        ));
        assert!(is_master_title("openresty: master process"));
        assert!(!is_master_title("nginx: worker process"));
        assert!(!is_master_title("/usr/bin/python3 server.py"));
    }
}

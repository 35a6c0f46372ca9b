//! What an operator has told chain-co by hand: drained nodes and a preferred primary.
//!
//! Operators upgrade daemons one at a time: `chain-co drain NODE` takes a node out of the
//! upstream (while another healthy node exists), `undrain` brings it back, `prefer NODE` makes it
//! primary while it is healthy. These marks are inputs to `select` like any observation, and
//! they are kept in a small JSON file so that a restart does not silently undo them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Who set a mark, and when (RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub by: String,
    pub at: String,
    /// For a drain: how long the node's sessions may stay before they are moved (a daemon
    /// upgrade can let running calls finish first).
    #[serde(
        with = "humantime_serde",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub grace: Option<std::time::Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferred {
    pub node: String,
    #[serde(flatten)]
    pub mark: Mark,
}

/// The operator's marks, as saved in the state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    #[serde(default)]
    pub drained: BTreeMap<String, Mark>,
    #[serde(default)]
    pub preferred: Option<Preferred>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read state file {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot save state file {path}: {message}")]
    Write { path: String, message: String },
}

impl Mark {
    pub fn now(by: &str) -> Mark {
        Mark {
            by: if by.trim().is_empty() {
                "api".into()
            } else {
                by.trim().chars().take(64).collect()
            },
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            grace: None,
        }
    }
}

impl Overrides {
    /// Reads the state file; a missing file means no marks.
    pub fn load(path: &Path) -> Result<Overrides, StateFileError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| StateFileError::Read {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Overrides::default()),
            Err(e) => Err(StateFileError::Read {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }

    /// Reads the state file at start. A damaged one (empty after a power cut, edited by hand,
    /// truncated) must not keep chain-co from watching the pool: it is renamed aside, and the
    /// caller starts with no marks and says so (the returned text).
    pub(crate) fn load_or_set_aside(path: &Path) -> (Overrides, Option<String>) {
        match Overrides::load(path) {
            Ok(o) => (o, None),
            Err(e) => {
                let what = crate::files::set_aside(path);
                (
                    Overrides::default(),
                    Some(format!("{e}; started without drains or preference, {what}")),
                )
            }
        }
    }

    /// Saves atomically and durably: temp file, fsync, rename, fsync of the directory, so that
    /// neither a crash nor a power cut leaves half a file or an empty one.
    pub(crate) fn save(&self, path: &Path) -> Result<(), StateFileError> {
        let text = serde_json::to_string_pretty(self).expect("overrides serialize");
        crate::files::write_atomic(
            path,
            &path.with_extension("json.tmp"),
            text.as_bytes(),
            0o644,
        )
        .map_err(|e| StateFileError::Write {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Nodes the marks name that the configuration does not have (kept: the node may come
    /// back with the next configuration).
    pub(crate) fn unknown_nodes<'a>(&'a self, known: &[&str]) -> Vec<&'a str> {
        let mut out: Vec<&str> = self
            .drained
            .keys()
            .map(String::as_str)
            .chain(self.preferred.as_ref().map(|p| p.node.as_str()))
            .filter(|n| !known.contains(n))
            .collect();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_file_is_set_aside_and_marks_start_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        for damaged in ["", "{\"drained\":", "not json", "{\"unknown\":1}"] {
            std::fs::write(&path, damaged).expect("write");
            let (o, why) = Overrides::load_or_set_aside(&path);
            assert_eq!(o, Overrides::default());
            let why = why.expect("said why");
            assert!(why.contains("kept the damaged copy"), "{why}");
            assert!(!path.exists(), "set aside");
        }
        let aside = std::fs::read_dir(dir.path()).expect("ls").count();
        assert!(aside >= 1);
        // A missing file is no damage.
        let (_, why) = Overrides::load_or_set_aside(&dir.path().join("none.json"));
        assert_eq!(why, None);
    }

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        assert_eq!(
            Overrides::load(&path).expect("missing is empty"),
            Overrides::default()
        );
        let mut o = Overrides::default();
        o.drained.insert("lotus-a".into(), Mark::now("alice"));
        o.preferred = Some(Preferred {
            node: "lotus-b".into(),
            mark: Mark::now(""),
        });
        o.save(&path).expect("save");
        let back = Overrides::load(&path).expect("load");
        assert_eq!(back, o);
        assert_eq!(back.preferred.expect("preferred").mark.by, "api");
    }
}

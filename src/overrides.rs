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

    /// Saves atomically (temp file and rename), so a crash never leaves half a file.
    pub fn save(&self, path: &Path) -> Result<(), StateFileError> {
        let err = |e: std::io::Error| StateFileError::Write {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let text = serde_json::to_string_pretty(self).expect("overrides serialize");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

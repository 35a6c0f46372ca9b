//! Configuration problems and the collector that gathers them while a file is checked. Shared
//! by `config` and each target's own checks in `apply/`, so that every mistake in a file is
//! reported at once with its line and key.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem, located in the file when it comes from a key that was written there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line and column.
    pub position: Option<(usize, usize)>,
    pub key: String,
    pub message: String,
}

/// Collects problems while the raw config is turned into a typed one.
pub(crate) struct Checker<'a> {
    pub(crate) source: &'a str,
    pub(crate) problems: Vec<Problem>,
}

impl Checker<'_> {
    pub(crate) fn position(&self, span: Range<usize>) -> (usize, usize) {
        let start = span.start.min(self.source.len());
        let before = &self.source[..start];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, col)
    }

    pub(crate) fn at(
        &mut self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let position = Some(self.position(span));
        self.problems.push(Problem {
            position,
            key: key.into(),
            message: message.into(),
        });
    }

    pub(crate) fn nowhere(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            position: None,
            key: key.into(),
            message: message.into(),
        });
    }
}

/// A path from the configuration: relative ones are taken from the file's directory.
pub(crate) fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A token file others can read is a token others can use.
pub(crate) fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "token file is readable by group or others; chmod 600 it"
            );
        }
    }
}

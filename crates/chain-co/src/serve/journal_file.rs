//! The journal on disk, beside `[api] state_file`, so that an operator paged after a restart
//! still sees what happened before it.
//!
//! One JSON event per line after a header line that says the file is ours. Each event is
//! appended and fsynced (events are rare: switches, nodes up and down, warnings). The file is
//! rotated by size: when it passes half of [`JOURNAL_BYTES`] it becomes `<name>.1` (the older
//! generation goes) and a new one starts, so the two together never hold much more than
//! [`JOURNAL_BYTES`]: the same bound as the journal in memory. A flapping node cannot fill the
//! disk.
//!
//! At start both generations are read back, oldest first. A line torn by a crash at the very
//! end of a file is dropped; any other damage, or a file without our header (not ours), sets
//! the file aside (renamed `…damaged-<unix time>`) and is said once; the start goes on.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::serve::history::{Event, JOURNAL_BYTES};

/// The first line of every journal file.
const HEADER: &str = r#"{"chain_co_journal":1}"#;

/// The journal file and its older generation.
#[derive(Debug)]
pub(crate) struct JournalFile {
    path: PathBuf,
    file: File,
    /// Bytes in the current generation.
    bytes: u64,
}

/// What was read back at start.
#[derive(Debug, Default)]
pub(crate) struct ReadBack {
    pub(crate) events: Vec<Event>,
    /// What the operator must be told: a file set aside, a file that cannot be opened.
    pub(crate) notices: Vec<String>,
}

/// The journal's path for a state file: `state.json` → `state.journal.jsonl`, in its directory.
pub(crate) fn path_for(state_file: &Path) -> PathBuf {
    let stem = state_file
        .file_stem()
        .map_or_else(|| "state".into(), |s| s.to_string_lossy().into_owned());
    state_file.with_file_name(format!("{stem}.journal.jsonl"))
}

fn older(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

impl JournalFile {
    /// Reads both generations back and opens the current one for appending. `Err` (with the
    /// reason) when the file cannot be opened at all: the journal then lives in memory only.
    pub(crate) fn open(path: &Path) -> Result<(JournalFile, ReadBack), String> {
        let mut back = ReadBack::default();
        for p in [older(path), path.to_path_buf()] {
            match read(&p) {
                Ok(events) => back.events.extend(events),
                Err(why) => back.notices.push(format!(
                    "journal {}: {why}; {}",
                    p.display(),
                    crate::files::set_aside(&p)
                )),
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let bytes = file.metadata().map_or(0, |m| m.len());
        let mut journal = JournalFile {
            path: path.to_path_buf(),
            file,
            bytes,
        };
        if journal.bytes == 0 {
            journal
                .write_line(HEADER)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok((journal, back))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event, durably; rotates first when the current generation is full.
    pub(crate) fn append(&mut self, event: &Event) -> std::io::Result<()> {
        let line = serde_json::to_string(event).expect("events serialize");
        if self.bytes + line.len() as u64 + 1 > (JOURNAL_BYTES / 2) as u64 {
            self.rotate()?;
        }
        self.write_line(&line)
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.bytes += buf.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        std::fs::rename(&self.path, older(&self.path))?;
        self.file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&self.path)?;
        self.bytes = 0;
        crate::files::sync_dir(&self.path);
        self.write_line(HEADER)
    }
}

/// The events of one generation; a missing file holds none. `Err` says why the file is not a
/// journal we can trust.
fn read(path: &Path) -> Result<Vec<Event>, String> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    // Never more than a generation and a line: a file grown by someone else is cut off here.
    let cap = JOURNAL_BYTES as u64 + 64 * 1024;
    let mut lines = BufReader::new(std::io::Read::take(file, cap)).split(b'\n');
    match lines.next() {
        None => return Ok(Vec::new()),
        Some(Ok(first)) if first == HEADER.as_bytes() => {}
        Some(_) => return Err("not a chain-co journal (no header line)".into()),
    }
    let mut events = Vec::new();
    let mut torn = None;
    for (n, line) in lines.enumerate() {
        let line = line.map_err(|e| format!("cannot read it: {e}"))?;
        if line.is_empty() {
            continue;
        }
        if let Some(at) = torn.take() {
            return Err(format!("line {at} is damaged"));
        }
        match serde_json::from_slice::<Event>(&line) {
            Ok(e) => events.push(e),
            // Only the last line may be torn (a crash mid-append); it is checked below.
            Err(_) => torn = Some(n + 2),
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::history::EventKind;

    fn event(i: usize, text: &str) -> Event {
        Event {
            at: 1_700_000_000 + i as u64,
            kind: EventKind::Switch,
            node: Some("a".into()),
            text: text.into(),
            count: 1,
            last: None,
        }
    }

    #[test]
    fn events_survive_a_reopen_and_a_torn_last_line_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(&dir.path().join("state.json"));
        assert!(path.ends_with("state.journal.jsonl"));
        let (mut j, back) = JournalFile::open(&path).expect("open");
        assert!(back.events.is_empty() && back.notices.is_empty());
        j.append(&event(1, "one")).expect("append");
        j.append(&event(2, "two")).expect("append");
        drop(j);
        // A crash mid-append.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(br#"{"at":17000"#).expect("torn");
        drop(f);
        let (_, back) = JournalFile::open(&path).expect("reopen");
        let texts: Vec<&str> = back.events.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["one", "two"]);
        assert!(back.notices.is_empty(), "{:?}", back.notices);
    }

    #[test]
    fn a_file_that_is_not_ours_or_damaged_is_set_aside_and_said() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(&dir.path().join("state.json"));
        for content in [
            "hello, I am someone's notes\n".to_string(),
            format!(
                "{HEADER}\nnot json\n{}\n",
                serde_json::to_string(&event(1, "x")).expect("json")
            ),
        ] {
            std::fs::write(&path, &content).expect("write");
            let (mut j, back) = JournalFile::open(&path).expect("open");
            assert!(back.events.is_empty());
            assert_eq!(back.notices.len(), 1, "{:?}", back.notices);
            assert!(
                back.notices[0].contains("kept the damaged copy"),
                "{:?}",
                back.notices
            );
            j.append(&event(3, "after")).expect("append");
            let text = std::fs::read_to_string(&path).expect("read");
            assert!(text.starts_with(HEADER), "a fresh journal: {text}");
            let aside = std::fs::read_dir(dir.path())
                .expect("dir")
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().contains("damaged"))
                })
                .count();
            assert!(aside >= 1);
            std::fs::remove_file(&path).expect("clean");
        }
    }

    #[test]
    fn rotation_keeps_both_generations_within_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(&dir.path().join("state.json"));
        let (mut j, _) = JournalFile::open(&path).expect("open");
        let text = "x".repeat(300);
        for i in 0..5000 {
            j.append(&event(i, &text)).expect("append");
        }
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let total = size(&path) + size(&older(&path));
        assert!(total <= JOURNAL_BYTES as u64 + 1024, "{total}");
        let (_, back) = JournalFile::open(&path).expect("reopen");
        assert_eq!(back.events.last().map(|e| e.at), Some(1_700_000_000 + 4999));
        assert!(back.events.len() > 500, "both generations are read");
    }
}

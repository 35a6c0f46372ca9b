//! Daemon-supplied words made inert before they are kept: every byte a daemon sends is hostile
//! until proven otherwise. What reaches a reason, a log line, a terminal, the journal or a
//! config comment goes through [`inert`] once, where it is read.

/// `s` on one line, without control characters (newlines, escape sequences: each becomes a
/// space) and at most `max` characters (then `…`).
pub fn inert(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max + 3));
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// A TOML basic string holding `s`, every character that needs it escaped: what `init`
/// writes of a daemon's words cannot end the string, the line or the table.
pub(crate) fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_and_escapes_are_gone_and_length_is_capped() {
        assert_eq!(inert("a\nb\x1b[2Jc", 100), "a b [2Jc");
        assert_eq!(inert("héllo wörld", 5), "héllo…");
        assert_eq!(inert("ok", 2), "ok");
    }

    #[test]
    fn toml_strings_cannot_break_out() {
        let hostile = "1.0\"\n[nginx.reload]\ncmd = [\"/bin/sh\"]\n\u{1b}";
        let line = format!("version = {}\n", toml_string(hostile));
        let parsed: toml::Table = toml::from_str(&line).expect("one key");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed["version"].as_str(), Some(hostile));
    }
}

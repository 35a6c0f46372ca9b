//! Daemon-supplied words made inert before they are kept: every byte a daemon sends is hostile
//! until proven otherwise. What reaches a reason, a log line, a terminal, the journal or a
//! config comment goes through [`inert`] once, where it is read.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// `s` on one line, without control characters (newlines, escape sequences: each becomes a
/// space), without format characters (Unicode category Cf: bidi overrides and isolates such as
/// U+202E and U+2066–2069, zero-width characters, the BOM: each is dropped, so a name cannot
/// show one thing and be another), and at most `max` characters (then `…`).
pub fn inert(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max + 3));
    let mut kept = 0;
    for c in s.chars() {
        if c.general_category() == GeneralCategory::Format {
            continue;
        }
        if kept == max {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
        kept += 1;
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
    fn bidi_overrides_and_invisible_characters_are_dropped() {
        let hostile = "lotus\u{202E}tenniam\u{2066}\u{2067}\u{2068}\u{2069}\u{200B}\u{2060}\u{FEFF}\u{00AD}-a";
        assert_eq!(inert(hostile, 100), "lotustenniam-a");
        // Dropped characters do not count toward the cap.
        assert_eq!(inert("\u{200B}\u{200B}abc", 3), "abc");
        // Letters of other scripts and emoji stay.
        assert_eq!(inert("φορέστ 🌲", 100), "φορέστ 🌲");
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

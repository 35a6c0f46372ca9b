//! Every key the config does not know, found in one pass and located in the text.
//!
//! serde stops at the first unknown field when a type denies them, so an operator with three
//! typos would fix them one run at a time. Instead the raw types accept anything and
//! `serde_ignored` hands us each key they did not use; `toml_edit`'s spans then say where that
//! key was written, so every one is reported at once with its line and column.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml_edit::{ImDocument, Item, Value};

/// A key the raw config types did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownKey {
    path: Vec<Segment>,
    /// Where the key itself is written, when the text has it (always, for a parsed file).
    pub(crate) span: Option<Range<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl UnknownKey {
    /// The dotted name, as the other problems name keys: `node[0].colour`.
    pub(crate) fn name(&self) -> String {
        let mut out = String::new();
        for s in &self.path {
            match s {
                Segment::Key(k) if out.is_empty() => out.push_str(k),
                Segment::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    /// What the operator reads: the key and the table it was found in.
    pub(crate) fn message(&self) -> String {
        let key = match self.path.last() {
            Some(Segment::Key(k)) => k.as_str(),
            _ => "",
        };
        let table: Vec<&str> = self.path[..self.path.len().saturating_sub(1)]
            .iter()
            .filter_map(|s| match s {
                Segment::Key(k) => Some(k.as_str()),
                Segment::Index(_) => None,
            })
            .collect();
        if table.is_empty() {
            format!("unknown field `{key}`: not a section chain-co knows")
        } else {
            format!("unknown field `{key}`: not a key of [{}]", table.join("."))
        }
    }
}

/// Deserializes `source`, returning the value and every key it left unused. On a syntax or
/// type error, the unknown keys met before it are returned with the error, so nothing the
/// operator needs to fix is held back for a second run.
pub(crate) fn from_str<T: DeserializeOwned>(
    source: &str,
) -> Result<(T, Vec<UnknownKey>), (toml::de::Error, Vec<UnknownKey>)> {
    let mut paths: Vec<Vec<Segment>> = Vec::new();
    let result = serde_ignored::deserialize(toml::Deserializer::new(source), |path| {
        paths.push(segments(&path));
    });
    let doc = ImDocument::parse(source).ok();
    let unknown = paths
        .into_iter()
        .map(|path| UnknownKey {
            span: doc.as_ref().and_then(|d| span_of(d.as_item(), &path)),
            path,
        })
        .collect();
    match result {
        Ok(value) => Ok((value, unknown)),
        Err(e) => Err((e, unknown)),
    }
}

fn segments(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    use serde_ignored::Path;
    let mut out = match path {
        Path::Root => return Vec::new(),
        Path::Seq { parent, .. }
        | Path::Map { parent, .. }
        | Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent),
    };
    match path {
        Path::Seq { index, .. } => out.push(Segment::Index(*index)),
        Path::Map { key, .. } if !spanned_wrapper(key) => out.push(Segment::Key(key.clone())),
        _ => {}
    }
    out
}

/// toml's `Spanned` wraps a value in a private struct: its fields are keys nobody wrote.
fn spanned_wrapper(key: &str) -> bool {
    key.starts_with("$__toml_private") || key.starts_with("$__serde_spanned_private")
}

/// The span of the last key of `path` in the parsed document.
fn span_of(root: &Item, path: &[Segment]) -> Option<Range<usize>> {
    let mut at = Node::Item(root);
    let mut span = None;
    for segment in path {
        at = match (segment, at) {
            (Segment::Key(k), Node::Item(item)) => {
                let (key, next) = item.as_table_like()?.get_key_value(k)?;
                span = key.span();
                Node::Item(next)
            }
            (Segment::Key(k), Node::Value(Value::InlineTable(t))) => {
                let (key, next) = t.get_key_value(k)?;
                span = key.span();
                Node::Item(next)
            }
            (Segment::Index(i), Node::Item(Item::ArrayOfTables(a))) => Node::Table(a.get(*i)?),
            (Segment::Index(i), Node::Item(Item::Value(Value::Array(a))))
            | (Segment::Index(i), Node::Value(Value::Array(a))) => Node::Value(a.get(*i)?),
            (Segment::Key(k), Node::Table(t)) => {
                let (key, next) = t.get_key_value(k)?;
                span = key.span();
                Node::Item(next)
            }
            _ => return span,
        };
    }
    span
}

/// Where the walk through the document stands: arrays of tables hold tables, arrays of
/// values hold values, and both can hold keys.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
    Table(&'a toml_edit::Table),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Raw {
        #[serde(default)]
        node: Vec<RawNode>,
        probe: Option<toml::Spanned<RawProbe>>,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct RawNode {
        name: String,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct RawProbe {
        interval: Option<String>,
    }

    fn line_of(source: &str, span: &Range<usize>) -> usize {
        source[..span.start].matches('\n').count() + 1
    }

    #[test]
    fn every_unknown_key_is_found_in_one_pass_with_its_line() {
        let src = "[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\ncolour = 1\n[probe]\nintervall = \"1s\"\nnested = { x = 1 }\n[bogus]\nx = 1\n";
        let (_raw, unknown): (Raw, _) = from_str(src).expect("parses");
        let found: Vec<(String, usize)> = unknown
            .iter()
            .map(|u| (u.name(), u.span.as_ref().map_or(0, |s| line_of(src, s))))
            .collect();
        assert_eq!(
            found,
            [
                ("node[1].colour".to_string(), 5),
                ("probe.intervall".to_string(), 7),
                ("probe.nested".to_string(), 8),
                ("bogus".to_string(), 9),
            ]
        );
        assert_eq!(
            unknown[1].message(),
            "unknown field `intervall`: not a key of [probe]"
        );
        assert!(unknown[3].message().contains("not a section"));
    }

    #[test]
    fn a_type_error_still_returns_the_unknown_keys_met_before_it() {
        let src = "[[node]]\nname = \"a\"\ncolour = 1\n[probe]\ninterval = 5\n";
        let (e, unknown) = from_str::<Raw>(src).expect_err("interval is not a string");
        assert!(e.span().is_some());
        assert_eq!(unknown.len(), 1, "{unknown:?}");
        assert_eq!(unknown[0].name(), "node[0].colour");
    }
}

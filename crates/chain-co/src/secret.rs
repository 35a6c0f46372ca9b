//! A bearer token that cannot end up in a log line or a status reply by accident.
//!
//! Tokens are read once, at config load, from a file or an environment variable. The only place
//! the clear text leaves the process is the `Authorization` header sent to the node it belongs to
//! ([`Secret::expose`] has exactly that one caller in `rpc`).

use std::fmt;

/// A secret string whose `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The clear text. Call it only to build the request header.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A URL as it may be shown (check, validate, logs): a password or user in it, and every
/// query value (`?token=…` is how go-jsonrpc and Fuhon take a token), become `***`. Text that
/// does not parse as a URL gets the same treatment by hand, so an error echoing a mistyped URL
/// leaks nothing either.
pub(crate) fn redact_url(text: &str) -> String {
    if let Ok(mut url) = reqwest::Url::parse(text) {
        if url.cannot_be_a_base() {
            return redact_by_hand(text);
        }
        if !url.username().is_empty() {
            let _ = url.set_username("***");
        }
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        if url.query().is_some() {
            let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
            let redacted = keys
                .iter()
                .map(|k| format!("{k}=***"))
                .collect::<Vec<_>>()
                .join("&");
            url.set_query(Some(&redacted));
        }
        return url.to_string();
    }
    redact_by_hand(text)
}

fn redact_by_hand(text: &str) -> String {
    let mut out = text.to_string();
    if let Some(q) = out.find('?') {
        out.truncate(q);
        out.push_str("?***");
    }
    // The userinfo is what stands before an '@', back to "://" or a space.
    if let Some(at) = out.find('@') {
        let start = out[..at]
            .rfind("://")
            .map(|i| i + 3)
            .into_iter()
            .chain(out[..at].rfind(char::is_whitespace).map(|i| i + 1))
            .max()
            .unwrap_or(0);
        if !out[start..at].contains('/') {
            out.replace_range(start..at, "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_secrets() {
        for (given, shown) in [
            ("http://10.0.0.1:1234/rpc/v1", "http://10.0.0.1:1234/rpc/v1"),
            ("http://user:pw@h:1/rpc/v1", "http://***:***@h:1/rpc/v1"),
            ("http://user@h:1/rpc/v1", "http://***@h:1/rpc/v1"),
            ("ws://h:1/rpc/v1?token=eyJabc", "ws://h:1/rpc/v1?token=***"),
            ("not a url user:pw@h?token=x", "not a url ***@h?***"),
            (
                "http://us er:pw@h:1/x?token=y",
                "http://***:***@h:1/x?token=***",
            ),
        ] {
            let r = redact_url(given);
            assert_eq!(r, shown, "{given}");
            assert!(!r.contains("pw") && !r.contains("eyJ"), "{r}");
        }
    }

    #[test]
    fn never_formats_the_clear_text() {
        let s = Secret::new("eyJhbGciOiJIUzI1NiJ9.secret");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(***)");
        assert_eq!(s.expose(), "eyJhbGciOiJIUzI1NiJ9.secret");
    }
}

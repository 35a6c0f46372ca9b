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
    pub fn expose(&self) -> &str {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_the_clear_text() {
        let s = Secret::new("eyJhbGciOiJIUzI1NiJ9.secret");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(***)");
        assert_eq!(s.expose(), "eyJhbGciOiJIUzI1NiJ9.secret");
    }
}

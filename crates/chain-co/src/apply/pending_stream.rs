//! Reading one array of a JSON-RPC reply element by element, in constant memory.
//!
//! `MpoolPending` on mainnet is tens of megabytes, and a hostile node can send any amount. The
//! carrier needs a few of its elements (the provider's own messages), so the reply is never
//! held whole: bytes go through this scanner as they arrive, each element of the `result`
//! array is handed over on its own (at most `max` bytes; a bigger one is skipped) and then
//! dropped. Memory is one element, whatever the reply's size. An `error` object is kept (at
//! most 4 KiB) to report in the node's words.

use crate::probe::rpc::RpcError;

const ERROR_CAP: usize = 4096;

/// Where the scanner is in the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the wanted array: reading the top-level object's keys.
    Seek,
    /// Inside the wanted array.
    Array,
    /// After it.
    Done,
}

/// See the module documentation.
#[derive(Debug)]
pub struct ArrayScanner {
    key: &'static str,
    max: usize,
    phase: Phase,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The string being read at depth 1 (a key), capped.
    text: Vec<u8>,
    /// The key whose value comes next, at depth 1.
    key_now: Option<Vec<u8>>,
    last_string: Option<Vec<u8>>,
    /// The element being read, while `capturing`.
    element: Vec<u8>,
    capturing: bool,
    oversize: bool,
    /// The top-level `error` object, when there is one.
    error: Option<Vec<u8>>,
    skipped: u64,
}

impl ArrayScanner {
    /// Hands over the elements of the array under top-level key `key`, each at most `max`.
    pub fn new(key: &'static str, max: usize) -> ArrayScanner {
        ArrayScanner {
            key,
            max,
            phase: Phase::Seek,
            depth: 0,
            in_string: false,
            escaped: false,
            text: Vec::new(),
            key_now: None,
            last_string: None,
            element: Vec::new(),
            capturing: false,
            oversize: false,
            error: None,
            skipped: 0,
        }
    }

    /// Reads the next bytes, calling `each` with every complete element.
    pub fn feed(&mut self, chunk: &[u8], each: &mut impl FnMut(&[u8])) {
        for &b in chunk {
            self.byte(b, each);
        }
    }

    fn byte(&mut self, b: u8, each: &mut impl FnMut(&[u8])) {
        let capturing_error = self.error.as_ref().is_some_and(|_| self.depth >= 2);
        if self.capturing {
            if self.element.len() < self.max {
                self.element.push(b);
            } else {
                self.oversize = true;
            }
        }
        if capturing_error {
            if let Some(e) = &mut self.error {
                if e.len() < ERROR_CAP {
                    e.push(b);
                }
            }
        }
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.depth == 1 {
                    self.last_string = Some(std::mem::take(&mut self.text));
                }
            } else if self.depth == 1 && self.text.len() < 32 {
                self.text.push(b);
            }
            return;
        }
        match b {
            b'"' => {
                self.in_string = true;
                self.text.clear();
            }
            b':' if self.depth == 1 => self.key_now = self.last_string.take(),
            b',' if self.depth == 1 => self.key_now = None,
            b'{' | b'[' => self.open(b, each),
            b'}' | b']' => self.close(each),
            _ => {}
        }
    }

    fn open(&mut self, b: u8, _each: &mut impl FnMut(&[u8])) {
        let wanted = self.key_now.as_deref() == Some(self.key.as_bytes());
        match (self.phase, self.depth, b) {
            (Phase::Seek, 1, b'[') if wanted => self.phase = Phase::Array,
            (Phase::Seek, 1, b'{') if self.key_now.as_deref() == Some(b"error") => {
                self.error = Some(vec![b'{']);
            }
            (Phase::Array, 2, _) => {
                self.capturing = true;
                self.oversize = false;
                self.element.clear();
                self.element.push(b);
            }
            _ => {}
        }
        self.depth += 1;
    }

    fn close(&mut self, each: &mut impl FnMut(&[u8])) {
        self.depth = self.depth.saturating_sub(1);
        match (self.phase, self.depth) {
            (Phase::Array, 2) if self.capturing => {
                self.capturing = false;
                if self.oversize {
                    self.skipped += 1;
                } else {
                    each(&self.element);
                }
                self.element.clear();
            }
            (Phase::Array, 1) => self.phase = Phase::Done,
            _ => {}
        }
    }

    /// At the end of the reply: `Err` with the node's own error, or when the reply had no
    /// such array (a `null` result counts as empty).
    pub fn finish(&self) -> Result<u64, RpcError> {
        if let Some(e) = &self.error {
            #[derive(serde::Deserialize)]
            struct ErrorObject {
                #[serde(default)]
                code: i64,
                #[serde(default)]
                message: String,
            }
            let (code, message) = serde_json::from_slice::<ErrorObject>(e)
                .map(|o| (o.code, o.message))
                .unwrap_or((0, "an error the node did not finish".into()));
            return Err(RpcError::Rpc {
                code,
                message: crate::text::inert(&message, 200),
            });
        }
        match self.phase {
            Phase::Done => Ok(self.skipped),
            Phase::Seek if self.depth == 0 => Ok(self.skipped),
            _ => Err(RpcError::Shape(format!(
                "the reply ended inside its `{}` array",
                self.key
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(reply: &str, chunk: usize, max: usize) -> (Vec<String>, Result<u64, RpcError>) {
        let mut s = ArrayScanner::new("result", max);
        let mut out = Vec::new();
        for c in reply.as_bytes().chunks(chunk) {
            s.feed(c, &mut |e| {
                out.push(String::from_utf8_lossy(e).into_owned())
            });
        }
        (out, s.finish())
    }

    #[test]
    fn elements_come_out_one_by_one_whatever_the_chunks() {
        let reply = r#"{"jsonrpc":"2.0","id":1,"result":[{"Message":{"From":"f3a","Nonce":1,"Params":"[]{}\"]"}},{"Message":{"From":"f3b","Nonce":2}}]}"#;
        for chunk in [1, 3, 7, 1000] {
            let (e, r) = elements(reply, chunk, 1 << 20);
            assert_eq!(e.len(), 2, "chunk {chunk}: {e:?}");
            assert!(e[0].starts_with(r#"{"Message":{"From":"f3a""#), "{}", e[0]);
            assert!(e[0].ends_with("}}"), "{}", e[0]);
            assert_eq!(r, Ok(0));
        }
    }

    #[test]
    fn a_key_named_result_inside_a_value_is_not_the_result() {
        let reply = r#"{"id":1,"meta":{"result":[{"x":1}]},"result":[{"y":2}]}"#;
        let (e, _) = elements(reply, 5, 1 << 20);
        assert_eq!(e, [r#"{"y":2}"#]);
    }

    #[test]
    fn big_elements_are_skipped_errors_are_the_nodes_and_a_cut_reply_is_said() {
        let big = format!(r#"{{"result":[{{"p":"{}"}},{{"q":1}}]}}"#, "x".repeat(5000));
        let (e, r) = elements(&big, 64, 1024);
        assert_eq!(e, [r#"{"q":1}"#]);
        assert_eq!(r, Ok(1), "one skipped");
        let (e, r) = elements(
            r#"{"id":1,"error":{"code":1,"message":"missing permission to invoke 'MpoolPending' (need 'read')"}}"#,
            4,
            1024,
        );
        assert!(e.is_empty());
        assert!(
            matches!(r, Err(RpcError::Rpc { code: 1, ref message }) if message.contains("missing permission")),
            "{r:?}"
        );
        let (_, r) = elements(r#"{"result":[{"a":1},{"b""#, 4, 1024);
        assert!(matches!(r, Err(RpcError::Shape(_))), "{r:?}");
        let (e, r) = elements(r#"{"result":null,"id":1}"#, 4, 1024);
        assert!(e.is_empty() && r == Ok(0));
    }
}

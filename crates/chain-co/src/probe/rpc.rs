//! The JSON-RPC 2.0 client for Filecoin daemons, and the shapes of their replies.
//!
//! Everything that differs between Lotus, Venus, Forest and Fuhon on the wire lives here and
//! nowhere else. Reply shapes follow Lotus's `documentation/en/api-methods-v1-stable.md` and the
//! notes in `shared/filecoin-rpc.md`: a tipset is `{"Cids":[{"/":cid}],"Blocks":[..],"Height":n}`,
//! `ParentWeight` is a decimal big integer in a string, `Timestamp` unix seconds.
//!
//! Every call is bounded twice: by a deadline over the whole exchange (connect, headers and
//! body — a daemon that trickles one byte a second still ends at the timeout) and by a cap on the
//! reply size, checked while reading so an oversized reply is never held whole.

use std::fmt;
use std::time::Duration;

use reqwest::{header, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::secret::Secret;

/// Why a call did not produce a usable reply. The `Display` text is what an operator reads in
/// the decision ("timeout after 3s", "HTTP 401 from daemon").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error("timeout after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("HTTP {status} from daemon{}", hint_for_status(*.status))]
    Http { status: u16 },
    #[error("reply larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("reply is not JSON: {0}")]
    NotJson(String),
    #[error("JSON-RPC error {code}: {message}")]
    Rpc { code: i64, message: String },
    #[error("reply has the wrong shape: {0}")]
    Shape(String),
    #[error("transport error: {0}")]
    Transport(String),
}

impl RpcError {
    /// The server does not have the method: JSON-RPC -32601, or (gateways and proxies that
    /// send errors without a code) words that say so.
    pub(crate) fn is_method_missing(&self) -> bool {
        match self {
            RpcError::Rpc { code: -32601, .. } => true,
            RpcError::Rpc { message, .. } => {
                let m = message.to_ascii_lowercase();
                (m.contains("method") || m.contains("api"))
                    && [
                        "not found",
                        "not supported",
                        "not implemented",
                        "unknown",
                        "no such",
                    ]
                    .iter()
                    .any(|w| m.contains(w))
            }
            _ => false,
        }
    }
}

fn hint_for_status(status: u16) -> &'static str {
    match status {
        401 => " (token missing or rejected)",
        403 => " (token lacks the read permission)",
        404 => " (wrong path; daemons serve /rpc/v0 and /rpc/v1)",
        400 => " (the daemon may speak JSON-RPC over WebSocket only)",
        _ => "",
    }
}

/// How JSON-RPC reaches a daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One HTTP POST per call (Lotus, Venus, Forest).
    Http,
    /// One WebSocket per probe round, one text frame per call (the only way to reach Fuhon).
    Ws,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Http => "http",
            Transport::Ws => "ws",
        })
    }
}

/// Where and how to reach one daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: Url,
    pub token: Option<Secret>,
    pub transport: Transport,
}

impl Endpoint {
    /// The same daemon over the other transport: `http(s)://` ↔ `ws(s)://`, same host and path.
    pub(crate) fn with_transport(&self, transport: Transport) -> Endpoint {
        let mut url = self.url.clone();
        let scheme = match (transport, url.scheme()) {
            (Transport::Ws, "https" | "wss") => "wss",
            (Transport::Ws, _) => "ws",
            (Transport::Http, "wss" | "https") => "https",
            (Transport::Http, _) => "http",
        };
        // Switching between these "special" schemes always succeeds.
        let _ = url.set_scheme(scheme);
        Endpoint {
            url,
            token: self.token.clone(),
            transport,
        }
    }
}

impl Endpoint {
    /// The WebSocket upgrade request (bearer token in the header, never in the URL) and the
    /// settings for a connection whose messages are capped at `max_bytes`.
    pub(crate) fn ws_request(
        &self,
        max_bytes: usize,
    ) -> Result<
        (
            tokio_tungstenite::tungstenite::handshake::client::Request,
            tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
        ),
        RpcError,
    > {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        if let Some(token) = &self.token {
            let value = format!("Bearer {}", token.expose())
                .parse()
                .map_err(|_| RpcError::Transport("the token is not a valid header value".into()))?;
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(max_bytes))
            .max_frame_size(Some(max_bytes))
            // Not the default 128 KiB: a larger message grows it.
            .read_buffer_size(8 * 1024)
            .write_buffer_size(0);
        Ok((request, config))
    }
}

/// One call of a batch: method and params.
pub(crate) type Call = (String, serde_json::Value);

/// A JSON-RPC client over HTTP POST. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct RpcClient {
    http: reqwest::Client,
    timeout: Duration,
    max_reply_bytes: usize,
}

#[derive(Serialize)]
struct Request<'a, P: Serialize> {
    jsonrpc: &'static str,
    method: &'a str,
    params: P,
    id: u64,
}

#[derive(Deserialize)]
struct Response<'a> {
    /// `"result": null` is a result (Forest's `NetPeers` without peers), not a missing one.
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    error: Option<ErrorObject>,
}

#[derive(Deserialize)]
struct ErrorObject {
    /// Some servers (gateways, proxies) send an error without a code: 0 then.
    #[serde(default, deserialize_with = "loose::i64")]
    code: i64,
    #[serde(default)]
    message: String,
}

/// A field that is present, even as JSON `null`, is `Some` (serde reads `null` as `None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn present_owned<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Numbers as gateways and other Lotus-API servers send them: integers, floats (floored) and
/// numeric strings are all accepted wherever the Lotus API has a number, so that one loosely
/// typed field does not exclude an otherwise healthy node.
pub mod loose {
    use serde::de::{Deserializer, Error};
    use serde::Deserialize;
    use serde_json::Value;

    fn number(v: &Value) -> Option<f64> {
        match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
    }

    /// Exact for integers of any size (weights exceed f64's 53 bits), floored for fractions.
    fn integer_text(v: &Value) -> Option<String> {
        let text = match v {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.trim().to_string(),
            _ => return None,
        };
        let digits = text.strip_prefix('-').unwrap_or(&text);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return Some(text);
        }
        let f = number(v)?;
        (f.is_finite() && f.abs() < 1e30).then(|| format!("{}", f.floor() as i128))
    }

    /// An integer of type `T` from any of the accepted forms; `None` for JSON null.
    fn integer<'de, D: Deserializer<'de>, T: std::str::FromStr>(
        d: D,
        what: &str,
    ) -> Result<Option<T>, D::Error> {
        let v = Value::deserialize(d)?;
        if v.is_null() {
            return Ok(None);
        }
        integer_text(&v)
            .and_then(|t| t.parse().ok())
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("expected {what}, got {v}")))
    }

    fn required<E: Error, T>(v: Option<T>) -> Result<T, E> {
        v.ok_or_else(|| E::custom("expected a number, got null"))
    }

    pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        required(integer(d, "a number")?)
    }

    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        required(integer(d, "a non-negative number")?)
    }

    pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let n = u64(d)?;
        u32::try_from(n).map_err(|_| D::Error::custom(format!("{n} is too large")))
    }

    pub(crate) fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        integer(d, "a non-negative number")
    }

    pub(crate) fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        integer(d, "a number")
    }

    /// A big integer as text (ParentWeight is a string in Lotus; some servers send a number).
    /// Anything else is passed on as is, for the caller's precise complaint.
    pub(crate) fn big_integer<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(match &v {
            Value::String(s) => integer_text(&v).unwrap_or_else(|| s.clone()),
            Value::Number(_) => integer_text(&v).unwrap_or_else(|| v.to_string()),
            other => other.to_string(),
        })
    }
}

impl RpcClient {
    pub fn new(timeout: Duration, max_reply_bytes: usize) -> Result<Self, RpcError> {
        let http = reqwest::Client::builder()
            // A redirect from a daemon is a misconfiguration to report, not to follow: following
            // it could send the bearer token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            // HTTP_PROXY and friends would send every daemon's bearer token to the proxy.
            .no_proxy()
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1)
            .user_agent(concat!("chain-co/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        Ok(RpcClient {
            http,
            timeout,
            max_reply_bytes,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Calls `method` and decodes its `result` as `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        endpoint: &Endpoint,
        method: &str,
        params: serde_json::Value,
    ) -> Result<T, RpcError> {
        match endpoint.transport {
            Transport::Http => self.http_call(endpoint, method, params).await,
            Transport::Ws => {
                let mut results = self
                    .batch(endpoint, vec![(method.to_string(), params)])
                    .await?;
                let raw = results.pop().expect("one call, one result")?;
                read(&raw)
            }
        }
    }

    async fn http_call<T: DeserializeOwned>(
        &self,
        endpoint: &Endpoint,
        method: &str,
        params: serde_json::Value,
    ) -> Result<T, RpcError> {
        let body = match tokio::time::timeout(self.timeout, self.exchange(endpoint, method, params))
            .await
        {
            Ok(r) => r?,
            Err(_) => return Err(RpcError::Timeout(self.timeout)),
        };
        decode_reply(&body.0, body.1)
    }

    /// Makes several calls to one daemon: concurrent POSTs over HTTP, or one WebSocket for all
    /// of them. The outer error is for a WebSocket that could not be used at all; each call has
    /// its own result. The whole batch is bounded by the timeout.
    pub(crate) async fn batch(
        &self,
        endpoint: &Endpoint,
        calls: Vec<Call>,
    ) -> Result<Vec<Result<Raw, RpcError>>, RpcError> {
        match endpoint.transport {
            // One after the other on one kept-alive connection: a probe is a handful of small
            // calls, and one connection per node (not one per call) keeps a pool of a thousand
            // nodes at a thousand connections. The batch stays bounded by the timeout.
            Transport::Http => {
                let deadline = tokio::time::Instant::now() + self.timeout;
                let mut out = Vec::with_capacity(calls.len());
                for (method, params) in calls {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let call = self.http_call::<Raw>(endpoint, &method, params);
                    out.push(match tokio::time::timeout(left, call).await {
                        Ok(r) => r,
                        Err(_) => Err(RpcError::Timeout(self.timeout)),
                    });
                }
                Ok(out)
            }
            Transport::Ws => {
                match tokio::time::timeout(self.timeout, self.ws_batch(endpoint, calls)).await {
                    Ok(r) => r,
                    Err(_) => Err(RpcError::Timeout(self.timeout)),
                }
            }
        }
    }

    async fn ws_batch(
        &self,
        endpoint: &Endpoint,
        calls: Vec<Call>,
    ) -> Result<Vec<Result<Raw, RpcError>>, RpcError> {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::{Error as WsError, Message};

        let (request, config) = endpoint.ws_request(self.max_reply_bytes)?;
        let limit = self.max_reply_bytes;
        let ws_error = |e: WsError| match e {
            WsError::Http(resp) => RpcError::Http {
                status: resp.status().as_u16(),
            },
            WsError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                RpcError::Connect(io.to_string())
            }
            WsError::Io(io) => RpcError::Transport(io.to_string()),
            WsError::Capacity(_) => RpcError::TooLarge { limit },
            other => RpcError::Transport(other.to_string()),
        };
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
            .await
            .map_err(ws_error)?;
        let n = calls.len();
        for (i, (method, params)) in calls.into_iter().enumerate() {
            let body = serde_json::to_string(&Request {
                jsonrpc: "2.0",
                method: &method,
                params,
                id: i as u64 + 1,
            })
            .map_err(|e| RpcError::Transport(e.to_string()))?;
            ws.send(Message::Text(body.into()))
                .await
                .map_err(ws_error)?;
        }
        let mut slots = Slots::new(1, n);
        while !slots.is_full() {
            let frame = match ws.next().await {
                Some(f) => f.map_err(ws_error)?,
                None => {
                    return Err(RpcError::Transport(
                        "the daemon closed the WebSocket".into(),
                    ))
                }
            };
            let bytes;
            let text = match &frame {
                Message::Text(t) => t.as_str(),
                Message::Binary(b) => {
                    bytes = String::from_utf8_lossy(b);
                    &*bytes
                }
                Message::Close(_) => {
                    return Err(RpcError::Transport(
                        "the daemon closed the WebSocket".into(),
                    ))
                }
                _ => continue,
            };
            let (id, result) = match Frame::parse(text) {
                Ok(f) => (f.id, f.into_result()),
                Err(e) => (None, Err(e)),
            };
            match id {
                // Replies to ids we did not send are skipped.
                Some(id) => {
                    slots.fill(id, result);
                }
                // An error for no call in particular (`"id": null`, or not JSON-RPC at all)
                // ends the exchange.
                None => result.map(drop)?,
            }
        }
        let _ = ws.close(None).await;
        Ok(slots.into_replies())
    }

    /// `GET url` without a token (a daemon's health endpoint), reading at most `max` bytes of
    /// the body: the status and what was read. Redirects are not followed.
    pub(crate) async fn get_capped(
        &self,
        url: &Url,
        max: usize,
    ) -> Result<(u16, Vec<u8>), RpcError> {
        let classify = |e| classify(e, self.timeout);
        let get = async {
            let mut resp = self
                .http
                .get(url.clone())
                .timeout(self.timeout)
                .send()
                .await
                .map_err(classify)?;
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(classify)? {
                let room = max.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= max {
                    break;
                }
            }
            Ok((status, body))
        };
        match tokio::time::timeout(self.timeout, get).await {
            Ok(r) => r,
            Err(_) => Err(RpcError::Timeout(self.timeout)),
        }
    }

    /// Sends the request and reads the body up to the cap. Returns the status and the bytes.
    async fn exchange(
        &self,
        endpoint: &Endpoint,
        method: &str,
        params: serde_json::Value,
    ) -> Result<(Vec<u8>, StatusCode), RpcError> {
        let req = self.post(endpoint, method, params, self.timeout)?;
        let classify = |e| classify(e, self.timeout);
        let mut resp = req.send().await.map_err(classify)?;
        let status = resp.status();
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_reply_bytes as u64)
        {
            return Err(RpcError::TooLarge {
                limit: self.max_reply_bytes,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > self.max_reply_bytes {
                return Err(RpcError::TooLarge {
                    limit: self.max_reply_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, status))
    }
}

impl RpcClient {
    /// One JSON-RPC POST, token in the header, bounded by `timeout` as a whole.
    fn post(
        &self,
        endpoint: &Endpoint,
        method: &str,
        params: serde_json::Value,
        timeout: Duration,
    ) -> Result<reqwest::RequestBuilder, RpcError> {
        let mut req = self
            .http
            .post(endpoint.url.clone())
            .timeout(timeout)
            .header(header::CONTENT_TYPE, "application/json")
            .body(
                serde_json::to_vec(&Request {
                    jsonrpc: "2.0",
                    method,
                    params,
                    id: 1,
                })
                .map_err(|e| RpcError::Transport(e.to_string()))?,
            );
        if let Some(token) = &endpoint.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        Ok(req)
    }

    /// Calls `method` over HTTP and hands the reply's body to `each` chunk by chunk, as it
    /// arrives, never holding it whole: for replies too large to cap (`MpoolPending`). Bounded
    /// by `limit` in time, not in size.
    pub async fn stream_call(
        &self,
        endpoint: &Endpoint,
        method: &str,
        params: serde_json::Value,
        limit: Duration,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), RpcError> {
        if endpoint.transport == Transport::Ws {
            return Err(RpcError::Transport(format!(
                "{method} is read over HTTP; this node is reached over WebSocket only"
            )));
        }
        let classify = |e| classify(e, limit);
        let mut resp = self
            .post(endpoint, method, params, limit)?
            .send()
            .await
            .map_err(classify)?;
        let status = resp.status();
        // go-jsonrpc answers its own errors with 500 and a JSON body: read those too.
        if !(status.is_success() || status == StatusCode::INTERNAL_SERVER_ERROR) {
            return Err(RpcError::Http {
                status: status.as_u16(),
            });
        }
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            each(&chunk);
        }
        Ok(())
    }
}

fn classify(e: reqwest::Error, timeout: Duration) -> RpcError {
    // reqwest puts the URL in its messages, with any user:password or ?token= in it.
    let e = e.without_url();
    if e.is_timeout() {
        RpcError::Timeout(timeout)
    } else if e.is_connect() {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg = s.to_string();
            src = s.source();
        }
        RpcError::Connect(msg)
    } else if e.is_redirect() || e.status().is_some_and(|s| s.is_redirection()) {
        RpcError::Transport("redirect not followed".into())
    } else {
        RpcError::Transport(crate::errors::error_chain(&e))
    }
}

/// Turns a reply body into the method's result. Pure, so the parser tests need no server.
pub(crate) fn decode_reply<T: DeserializeOwned>(
    body: &[u8],
    status: StatusCode,
) -> Result<T, RpcError> {
    let parsed: Result<Response, _> = serde_json::from_slice(body);
    match parsed {
        Ok(Response {
            error: Some(err), ..
        }) => Err(RpcError::Rpc {
            code: err.code,
            message: crate::text::inert(&err.message, 200),
        }),
        // go-jsonrpc answers protocol errors with HTTP 500 *and* a JSON body (handled above);
        // anything else that is not 2xx is reported by its status.
        _ if !status.is_success() => Err(RpcError::Http {
            status: status.as_u16(),
        }),
        Ok(Response {
            result: Some(raw), ..
        }) => serde_json::from_str(raw.get()).map_err(|e| RpcError::Shape(e.to_string())),
        Ok(Response { result: None, .. }) => Err(RpcError::Shape(
            "neither `result` nor `error` in the reply".into(),
        )),
        Err(_) => Err(RpcError::NotJson(snippet(body))),
    }
}

/// One frame from a daemon's WebSocket: a reply (it has an `id`) or a notification (it has a
/// `method`, e.g. `xrpc.ch.val`). Parsed once, without building a JSON tree: the result stays
/// raw text for its reader's own type, and notification params are borrowed from the frame.
#[derive(Deserialize)]
pub(crate) struct Frame<'a> {
    /// Only unsigned integer ids are ours; any other id reads as none.
    #[serde(default, deserialize_with = "loose_id")]
    pub id: Option<u64>,
    #[serde(default, borrow)]
    pub method: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub params: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "present_owned")]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<ErrorObject>,
}

fn loose_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(serde_json::Value::deserialize(d)?.as_u64())
}

impl<'a> Frame<'a> {
    /// A frame that is not a JSON-RPC object is [`RpcError::NotJson`].
    pub fn parse(text: &'a str) -> Result<Frame<'a>, RpcError> {
        serde_json::from_str(text).map_err(|_| RpcError::NotJson(snippet(text.as_bytes())))
    }

    /// The reply's outcome: its `result` (`null` included, as over HTTP: Forest answers
    /// `NetPeers` without peers with `null`), or its `error`.
    pub(crate) fn into_result(self) -> Result<Box<RawValue>, RpcError> {
        match self {
            Frame {
                error: Some(err), ..
            } => Err(RpcError::Rpc {
                code: err.code,
                message: crate::text::inert(&err.message, 200),
            }),
            Frame {
                result: Some(v), ..
            } => Ok(v),
            _ => Err(RpcError::Shape(
                "neither `result` nor `error` in the reply".into(),
            )),
        }
    }
}

/// A JSON reply left as text, for the caller to read into its own type.
pub(crate) type Raw = Box<RawValue>;

/// The replies to one batch of calls sent with consecutive ids, filled in whatever order the
/// daemon answers: the one reply-matching scheme of every WebSocket exchange (a one-off
/// [`RpcClient`] call and the long-lived [`crate::probe::link`] alike).
#[derive(Debug)]
pub(crate) struct Slots {
    first: u64,
    results: Vec<Option<Result<Raw, RpcError>>>,
    left: usize,
}

impl Slots {
    /// `n` calls, the first sent with id `first`.
    pub fn new(first: u64, n: usize) -> Slots {
        Slots {
            first,
            results: (0..n).map(|_| None).collect(),
            left: n,
        }
    }

    /// Files the reply to `id`: `false` when `id` is not one of this batch's (a notification's
    /// stray id, a late reply, an id never sent). A second reply to one id replaces the first.
    pub(crate) fn fill(&mut self, id: u64, result: Result<Raw, RpcError>) -> bool {
        let Some(slot) = id
            .checked_sub(self.first)
            .and_then(|i| self.results.get_mut(usize::try_from(i).ok()?))
        else {
            return false;
        };
        if slot.is_none() {
            self.left -= 1;
        }
        *slot = Some(result);
        true
    }

    /// Whether `id` is one of this batch's.
    pub(crate) fn covers(&self, id: u64) -> bool {
        id.checked_sub(self.first)
            .is_some_and(|i| i < self.results.len() as u64)
    }

    /// Every call has its reply.
    pub(crate) fn is_full(&self) -> bool {
        self.left == 0
    }

    /// The replies in call order; only once [`Slots::is_full`].
    pub(crate) fn into_replies(self) -> Vec<Result<Raw, RpcError>> {
        self.results
            .into_iter()
            .map(|r| r.expect("every slot is filled"))
            .collect()
    }
}

/// Reads a raw reply as `T`; a mismatch is [`RpcError::Shape`].
pub fn read<T: DeserializeOwned>(raw: &RawValue) -> Result<T, RpcError> {
    // serde's words quote the offending value: the daemon's bytes.
    serde_json::from_str(raw.get())
        .map_err(|e| RpcError::Shape(crate::text::inert(&e.to_string(), 200)))
}

/// The start of a body that is not JSON, printable on one line.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(60)]);
    let one_line = crate::text::inert(&text, 60);
    format!(
        "{:?}{}",
        one_line.trim(),
        if body.len() > 60 { "…" } else { "" }
    )
}

/// A CID in its JSON form `{"/": "bafy..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Cid {
    #[serde(rename = "/")]
    pub cid: String,
}

/// The fields of a block header that chain-co reads; the rest are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BlockHeader {
    #[serde(deserialize_with = "loose::big_integer")]
    pub parent_weight: String,
    #[serde(deserialize_with = "loose::u64")]
    pub timestamp: u64,
    #[serde(default)]
    pub miner: Option<String>,
    /// The block's own height: a tipset's `Height` is not in any header, so a block at
    /// another height shows a tipset height made up.
    #[serde(default, deserialize_with = "loose::opt_i64")]
    pub height: Option<i64>,
    #[serde(default)]
    pub parents: Option<Vec<Cid>>,
}

/// `Filecoin.ChainHead` / `ChainGetGenesis` reply.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TipSet {
    pub cids: Vec<Cid>,
    pub blocks: Vec<BlockHeader>,
    #[serde(deserialize_with = "loose::i64")]
    pub height: i64,
}

/// What chain-co keeps of a head: enough to compare heads and to explain the comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub height: u64,
    /// The parent weight carried by the head's blocks. All blocks of a tipset share one parent,
    /// so they agree; comparing parent weights orders heads like their own weights do except
    /// between two tipsets on the same parent, where height and block count break the tie.
    pub weight: u128,
    pub key: Vec<String>,
    pub timestamp: u64,
    pub blocks: usize,
    /// Whether its block headers hash to their CIDs (`proof`): set where the head is read.
    pub proof: crate::proof::HeadProof,
    /// The key of the tipset it builds on (its blocks' `Parents`): a head on parents the
    /// pool's chain holds is a late block, not a fork.
    pub parents: Vec<String>,
}

impl TipSet {
    /// Checks what the shape alone cannot: a head with no block, a negative height, a weight
    /// that is not a number, or blocks that disagree on their parent.
    pub fn into_head(self) -> Result<Head, RpcError> {
        let first = self
            .blocks
            .first()
            .ok_or_else(|| RpcError::Shape("tipset has no blocks".into()))?;
        let height = u64::try_from(self.height)
            .map_err(|_| RpcError::Shape(format!("negative height {}", self.height)))?;
        let weight = parse_weight(&first.parent_weight)?;
        if self
            .blocks
            .iter()
            .any(|b| b.parent_weight != first.parent_weight)
        {
            return Err(RpcError::Shape(
                "blocks of one tipset disagree on ParentWeight".into(),
            ));
        }
        if let Some(h) = self
            .blocks
            .iter()
            .find_map(|b| b.height.filter(|&h| h != self.height))
        {
            return Err(RpcError::Shape(format!(
                "a block at height {h} in a tipset at height {}",
                self.height
            )));
        }
        if self.cids.len() != self.blocks.len() {
            return Err(RpcError::Shape(format!(
                "{} Cids for {} Blocks",
                self.cids.len(),
                self.blocks.len()
            )));
        }
        let timestamp = first.timestamp;
        Ok(Head {
            height,
            weight,
            key: self.cids.into_iter().map(|c| c.cid).collect(),
            timestamp,
            blocks: self.blocks.len(),
            proof: crate::proof::HeadProof::Unchecked,
            parents: first
                .parents
                .iter()
                .flatten()
                .take(crate::proof::header::MAX_PARENTS)
                .map(|c| crate::text::inert(&c.cid, 100))
                .collect(),
        })
    }
}

fn parse_weight(s: &str) -> Result<u128, RpcError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RpcError::Shape(format!(
            "ParentWeight {:?} is not a decimal integer",
            crate::text::inert(s, 40)
        )));
    }
    s.parse().map_err(|_| {
        RpcError::Shape(format!(
            "ParentWeight {} is absurdly large",
            crate::text::inert(s, 40)
        ))
    })
}

/// `Filecoin.Version` reply. Only `Version` is on every implementation: Venus has no
/// `BlockDelay` and no `Agent`, Fuhon no `Agent`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct VersionInfo {
    pub version: String,
    #[serde(rename = "APIVersion", default, deserialize_with = "loose::u32")]
    pub api_version: u32,
    #[serde(default, deserialize_with = "loose::opt_u64")]
    pub block_delay: Option<u64>,
    #[serde(default)]
    pub agent: Option<String>,
}

/// Who a node is: its software and the chain it says it is on. Learned at first contact
/// (`Version`, `StateNetworkName`, `ChainGetGenesis`) and again after it was unreachable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub implementation: Implementation,
    pub version: String,
    /// `StateNetworkName`; `None` where the node lacks the method (gateways): it is then
    /// judged by its genesis alone.
    pub network: Option<String>,
    /// CID of the genesis block.
    pub genesis: String,
    /// Unix seconds of the genesis block.
    pub genesis_timestamp: u64,
    /// Seconds per epoch, where `Version` says (not Venus).
    pub block_delay: Option<u64>,
}

/// The `Filecoin.SyncState` reply, as far as chain-co reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SyncState {
    #[serde(default)]
    pub active_syncs: Option<Vec<ActiveSync>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActiveSync {
    #[serde(deserialize_with = "loose::i64")]
    pub stage: i64,
    #[serde(default)]
    pub target: Option<TipSet>,
}

impl SyncState {
    /// The highest target of a worker that is still fetching or validating (stages 1, 2, 3
    /// and 6; 0 is idle, 4 complete, 5 error — lotus api/api_full.go `SyncStateStage`).
    pub(crate) fn syncing_to(&self) -> Option<u64> {
        self.active_syncs
            .iter()
            .flatten()
            .filter(|w| matches!(w.stage, 1 | 2 | 3 | 6))
            .filter_map(|w| w.target.as_ref().map(|t| t.height.max(0) as u64))
            .max()
    }
}

/// Forest's `Forest.SyncStatus` reply (camelCase; forest src/chain_sync/sync_status.rs).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ForestSyncStatus {
    pub status: String,
    #[serde(default, deserialize_with = "loose::opt_i64")]
    pub network_head_epoch: Option<i64>,
}

impl ForestSyncStatus {
    pub(crate) fn syncing_to(&self) -> Option<u64> {
        match self.status.as_str() {
            "Syncing" | "Initializing" => self.network_head_epoch.map(|e| e.max(0) as u64),
            _ => None,
        }
    }
}

/// Which daemon software a node runs, as far as its `Version` reply tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Implementation {
    Lotus,
    Venus,
    Forest,
    Fuhon,
    Unknown,
}

impl fmt::Display for Implementation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Implementation::Lotus => "lotus",
            Implementation::Venus => "venus",
            Implementation::Forest => "forest",
            Implementation::Fuhon => "fuhon",
            Implementation::Unknown => "unknown",
        })
    }
}

impl VersionInfo {
    /// `Agent` names Lotus and Forest; Fuhon's version starts with "Fuhon Node"; Venus is the
    /// one without `BlockDelay` (venus-shared/types/api_types.go `Version`).
    pub fn implementation(&self) -> Implementation {
        match self.agent.as_deref() {
            Some("lotus") => return Implementation::Lotus,
            Some("forest") => return Implementation::Forest,
            _ => {}
        }
        if self.version.starts_with("Fuhon") {
            Implementation::Fuhon
        } else if self.block_delay.is_none() {
            Implementation::Venus
        } else if self.version.contains("+mainnet") || self.version.contains("+calibnet") {
            Implementation::Lotus
        } else {
            Implementation::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOTUS_HEAD: &str = r#"{"jsonrpc":"2.0","id":1,"result":{
 "Cids":[{"/":"bafy2bzacedo7hjsumaajt6sbor42qycvjyk6goqe4oi4o4ddsjxkdeqrqf42c"}],
 "Blocks":[{"Miner":"f01938223","Ticket":{"VRFProof":"rIPy"},"ElectionProof":{"WinCount":1,"VRFProof":"sN51"},
   "BeaconEntries":[{"Round":17133822,"Data":"tH4q"}],"WinPoStProof":[{"PoStProof":3,"ProofBytes":"qOPL"}],
   "Parents":[{"/":"bafy2bzaceba2kdmysmi5ieugzvv5np7f2lobayzpvtk777du74n7jq6xhynda"}],
   "ParentWeight":"116013147118","Height":4863283,
   "ParentStateRoot":{"/":"bafy2a"},"ParentMessageReceipts":{"/":"bafy2b"},"Messages":{"/":"bafy2c"},
   "BLSAggregate":{"Type":2,"Data":"krFA"},"Timestamp":1744204890,
   "BlockSig":{"Type":2,"Data":"pWiU"},"ForkSignaling":0,"ParentBaseFee":"20592036"}],
 "Height":4863283}}"#;

    fn head(body: &str, status: u16) -> Result<Head, RpcError> {
        decode_reply::<TipSet>(
            body.as_bytes(),
            StatusCode::from_u16(status).expect("status"),
        )
        .and_then(TipSet::into_head)
    }

    #[test]
    fn parses_lotus_chain_head_from_the_docs() {
        let h = head(LOTUS_HEAD, 200).expect("valid");
        assert_eq!(h.height, 4863283);
        assert_eq!(h.weight, 116013147118);
        assert_eq!(h.timestamp, 1744204890);
        assert_eq!(h.blocks, 1);
        assert_eq!(
            h.key[0],
            "bafy2bzacedo7hjsumaajt6sbor42qycvjyk6goqe4oi4o4ddsjxkdeqrqf42c"
        );
        // Mainnet genesis + height * 30 s, as the doc example shows.
        assert_eq!(h.timestamp, 1598306400 + h.height * 30);
    }

    #[test]
    fn a_null_result_is_a_result_not_a_missing_one() {
        // Real Forest 0.39 without peers (shared/daemons/forest-0.39.0).
        let body = br#"{"jsonrpc":"2.0","id":1,"result":null}"#;
        let peers: Option<Vec<serde::de::IgnoredAny>> =
            decode_reply(body, StatusCode::OK).expect("null is a result");
        assert!(peers.is_none());
        let frame = Frame::parse(r#"{"jsonrpc":"2.0","id":3,"result":null}"#).expect("frame");
        let raw = frame
            .into_result()
            .expect("null is a result over the link too");
        assert_eq!(raw.get(), "null");
        let missing = decode_reply::<Option<u64>>(br#"{"jsonrpc":"2.0","id":1}"#, StatusCode::OK);
        assert!(matches!(missing, Err(RpcError::Shape(_))));
    }

    #[test]
    fn parses_forest_nulls_for_empty_arrays() {
        let body = r#"{"jsonrpc":"2.0","id":1,"result":{"Cids":[{"/":"bafyA"}],"Blocks":[{"Miner":"f01","ParentWeight":"10","Timestamp":5,"Height":3,"BeaconEntries":null,"WinPoStProof":null}],"Height":3}}"#;
        assert_eq!(head(body, 200).expect("valid").height, 3);
    }

    /// One row per broken reply: body, HTTP status, and the words the reason must contain.
    #[test]
    fn broken_replies_give_precise_reasons() {
        let rows: &[(&str, u16, &str)] = &[
            (
                "<html><body>502 Bad Gateway</body></html>",
                200,
                "not JSON: \"<html><body>502",
            ),
            ("", 200, "not JSON"),
            ("\u{0}\u{1}garbage", 200, "not JSON"),
            ("", 401, "HTTP 401 from daemon (token missing or rejected)"),
            ("", 400, "HTTP 400"),
            ("Not Found", 404, "HTTP 404"),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"method 'Filecoin.ChainHead' not found"}}"#,
                500,
                "JSON-RPC error -32601: method 'Filecoin.ChainHead' not found",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"missing permission to invoke 'ChainHead' (need 'read')"}}"#,
                200,
                "JSON-RPC error 1",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":null}"#,
                200,
                "wrong shape",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1}"#,
                200,
                "neither `result` nor `error`",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"Cids":[],"Blocks":[],"Height":3}}"#,
                200,
                "no blocks",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"Cids":[{"/":"a"}],"Blocks":[{"ParentWeight":"1","Timestamp":1}],"Height":-5}}"#,
                200,
                "negative height",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"Cids":[{"/":"a"}],"Blocks":[{"ParentWeight":true,"Timestamp":1}],"Height":5}}"#,
                200,
                "not a decimal integer",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"Cids":[{"/":"a"}],"Blocks":[{"ParentWeight":"1","Timestamp":1}],"Height":{"n":5}}}"#,
                200,
                "wrong shape",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"Cids":[{"/":"a"}],"Blocks":[{"ParentWeight":"-3","Timestamp":1}],"Height":5}}"#,
                200,
                "not a decimal integer",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"Cids":[{"/":"a"}],"Blocks":[{"ParentWeight":"99999999999999999999999999999999999999999999","Timestamp":1}],"Height":5}}"#,
                200,
                "absurdly large",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"Cids":[{"/":"a"},{"/":"b"}],"Blocks":[{"ParentWeight":"1","Timestamp":1},{"ParentWeight":"2","Timestamp":1}],"Height":5}}"#,
                200,
                "disagree",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"Cids":[{"/":"a"},{"/":"b"}],"Blocks":[{"ParentWeight":"1","Timestamp":1}],"Height":5}}"#,
                200,
                "2 Cids for 1 Blocks",
            ),
            (r#"[1,2,3]"#, 200, "not JSON"),
        ];
        for (body, status, words) in rows {
            let err = head(body, *status).expect_err(body).to_string();
            assert!(err.contains(words), "{body}: got {err:?}, want {words:?}");
        }
    }

    #[test]
    fn loosely_typed_numbers_are_accepted() {
        let body = r#"{"jsonrpc":"2.0","id":1,"result":{"Cids":[{"/":"bafyA"}],"Height":"120","Blocks":[{"ParentWeight":12345678901234567890,"Timestamp":1598306400.75,"Miner":"f01"}]}}"#;
        let h = head(body, 200).expect("loose head");
        assert_eq!(h.height, 120);
        assert_eq!(h.timestamp, 1_598_306_400);
        // Exact up to u64; larger JSON numbers come as f64 from the parser (Lotus itself sends
        // weights as strings, which stay exact at any size).
        assert_eq!(h.weight, 12_345_678_901_234_567_890);
        let v: VersionInfo = serde_json::from_str(
            r#"{"Version":"1.28.1+gateway","APIVersion":131840.0,"BlockDelay":"30"}"#,
        )
        .expect("loose version");
        assert_eq!((v.api_version, v.block_delay), (131_840, Some(30)));
        // An error without a code, worded as gateways word it, is a missing method.
        let e = decode_reply::<serde_json::Value>(
            br#"{"jsonrpc":"2.0","id":1,"error":{"message":"method Filecoin.NetPeers not supported by this gateway"}}"#,
            StatusCode::OK,
        )
        .expect_err("error");
        assert!(e.is_method_missing(), "{e}");
        // Still refused: a negative timestamp, a word where a number belongs.
        assert!(head(r#"{"jsonrpc":"2.0","id":1,"result":{"Cids":[{"/":"a"}],"Height":1,"Blocks":[{"ParentWeight":"1","Timestamp":-5}]}}"#, 200).is_err());
        assert!(head(r#"{"jsonrpc":"2.0","id":1,"result":{"Cids":[{"/":"a"}],"Height":"ten","Blocks":[{"ParentWeight":"1","Timestamp":5}]}}"#, 200).is_err());
    }

    #[test]
    fn version_names_the_implementation() {
        let rows = [
            (
                r#"{"Version":"1.28.1+mainnet+git.9e4b1e5a0","APIVersion":131840,"BlockDelay":30,"Agent":"lotus"}"#,
                Implementation::Lotus,
            ),
            (
                r#"{"Version":"0.36.0+git.abc","APIVersion":131840,"BlockDelay":30,"Agent":"forest"}"#,
                Implementation::Forest,
            ),
            (
                r#"{"Version":"1.20.0+git.3e20c0d4","APIVersion":131840}"#,
                Implementation::Venus,
            ),
            (
                r#"{"Version":"Fuhon Node v0.9.0-12-gabcdef","APIVersion":131584,"BlockDelay":30}"#,
                Implementation::Fuhon,
            ),
            (
                r#"{"Version":"1.28.1+calibnet+git.9e4b1e5a0","APIVersion":131840,"BlockDelay":30}"#,
                Implementation::Lotus,
            ),
            (
                r#"{"Version":"something","APIVersion":1,"BlockDelay":30}"#,
                Implementation::Unknown,
            ),
        ];
        for (json, want) in rows {
            let v: VersionInfo = serde_json::from_str(json).expect(json);
            assert_eq!(v.implementation(), want, "{json}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests of the reply parser: whatever a daemon sends, decoding returns a result
    //! and never panics. CI runs a bounded number of cases (PROPTEST_CASES to run more).
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| serde_json::json!(f)),
            ".{0,20}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                prop::collection::hash_map(
                    prop_oneof![
                        Just("Cids".to_string()),
                        Just("Blocks".to_string()),
                        Just("Height".to_string()),
                        Just("ParentWeight".to_string()),
                        Just("Timestamp".to_string()),
                        Just("result".to_string()),
                        Just("error".to_string()),
                        Just("/".to_string()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), status in 100u16..600) {
            let status = StatusCode::from_u16(status).expect("in range");
            let _ = decode_reply::<TipSet>(&body, status).and_then(TipSet::into_head);
            let text = String::from_utf8_lossy(&body);
            let _ = Frame::parse(&text).map(Frame::into_result);
        }

        #[test]
        fn arbitrary_json_never_panics(result in json_value()) {
            let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": result}).to_string();
            let _ = decode_reply::<TipSet>(body.as_bytes(), StatusCode::OK).and_then(TipSet::into_head);
            let _ = decode_reply::<VersionInfo>(body.as_bytes(), StatusCode::OK);
            let _ = decode_reply::<SyncState>(body.as_bytes(), StatusCode::OK).map(|s| s.syncing_to());
        }
    }
}

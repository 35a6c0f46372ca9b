//! Hostile and broken daemons, played by a raw TCP fixture: every bad reply is a bad probe with
//! a precise reason, bounded by the timeout and the size cap, and leaks nothing.

use std::time::{Duration, Instant};

use chain_co::probe::rpc::{Endpoint, RpcClient, RpcError, TipSet, Transport};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_millis(800);
const CAP: usize = 64 * 1024;

/// A fixture that answers every connection with `behave`.
async fn fixture<F, Fut>(behave: F) -> String
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let behave = std::sync::Arc::new(behave);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let b = behave.clone();
            tokio::spawn(async move { b(s).await });
        }
    });
    format!("http://{addr}/rpc/v1")
}

/// Reads the request head and body enough to answer.
async fn read_request(s: &mut TcpStream) {
    let mut buf = vec![0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
}

async fn reply(s: &mut TcpStream, text: &str) {
    read_request(s).await;
    let _ = s.write_all(text.as_bytes()).await;
    let _ = s.shutdown().await;
}

fn http(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

async fn probe(url: &str) -> (Result<chain_co::probe::rpc::Head, RpcError>, Duration) {
    let client = RpcClient::new(TIMEOUT, CAP).expect("client");
    let endpoint = Endpoint {
        url: url.parse().expect("url"),
        token: None,
        transport: Transport::Http,
    };
    let start = Instant::now();
    let r = client
        .call::<TipSet>(&endpoint, "Filecoin.ChainHead", json!([]))
        .await
        .and_then(TipSet::into_head);
    (r, start.elapsed())
}

/// The bound every exchange must respect: the timeout, plus scheduling slack.
fn bounded(took: Duration) {
    assert!(took < TIMEOUT + Duration::from_millis(700), "took {took:?}");
}

macro_rules! case {
    ($name:ident, $behave:expr, $words:expr) => {
        #[tokio::test]
        async fn $name() {
            let url = fixture($behave).await;
            let (r, took) = probe(&url).await;
            let err = r.expect_err("a bad probe").to_string();
            assert!(err.contains($words), "got {err:?}, want {:?}", $words);
            bounded(took);
        }
    };
}

case!(
    garbage_bytes,
    |mut s: TcpStream| async move { reply(&mut s, "\u{1}\u{2}GARBAGE\r\n\r\n").await },
    "transport error"
);
case!(
    html_error_page,
    |mut s: TcpStream| async move {
        reply(&mut s, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 38\r\n\r\n<html><body>502 Bad Gateway</body></html>").await
    },
    "not JSON"
);
case!(
    wrong_shape,
    |mut s: TcpStream| async move {
        reply(
            &mut s,
            &http(
                "200 OK",
                r#"{"jsonrpc":"2.0","id":1,"result":{"Height":"12"}}"#,
            ),
        )
        .await
    },
    "wrong shape"
);
case!(
    // Numeric strings are accepted (loosely typed servers send them); words are not.
    numbers_as_words,
    |mut s: TcpStream| async move {
        reply(&mut s, &http("200 OK", r#"{"jsonrpc":"2.0","id":1,"result":{"Cids":[{"/":"a"}],"Blocks":[{"ParentWeight":"1","Timestamp":"five"}],"Height":5}}"#)).await
    },
    "wrong shape"
);
case!(
    absurd_height,
    |mut s: TcpStream| async move {
        reply(&mut s, &http("200 OK", r#"{"jsonrpc":"2.0","id":1,"result":{"Cids":[{"/":"a"}],"Blocks":[{"ParentWeight":"1","Timestamp":5}],"Height":-9223372036854775808}}"#)).await
    },
    "negative height"
);
case!(
    json_rpc_error,
    |mut s: TcpStream| async move {
        reply(&mut s, &http("500 Internal Server Error", r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"method 'Filecoin.ChainHead' not found"}}"#)).await
    },
    "JSON-RPC error -32601"
);
case!(
    unauthorized,
    |mut s: TcpStream| async move { reply(&mut s, &http("401 Unauthorized", "")).await },
    "HTTP 401 from daemon (token missing or rejected)"
);
case!(
    redirect_is_not_followed,
    |mut s: TcpStream| async move {
        reply(&mut s, "HTTP/1.1 302 Found\r\nLocation: http://192.0.2.1/steal-the-token\r\nContent-Length: 0\r\n\r\n").await
    },
    "HTTP 302"
);
case!(
    accepts_and_never_answers,
    |s: TcpStream| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    },
    "timeout after 800ms"
);
case!(
    trickles_one_byte_at_a_time,
    |mut s: TcpStream| async move {
        read_request(&mut s).await;
        let head =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
        let _ = s.write_all(head.as_bytes()).await;
        for _ in 0..1000 {
            if s.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    },
    "timeout after 800ms"
);
case!(
    huge_declared_reply,
    |mut s: TcpStream| async move {
        read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
            .await;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..100 {
            if s.write_all(&chunk).await.is_err() {
                return;
            }
        }
    },
    "reply larger than 65536 bytes"
);
case!(
    huge_chunked_reply,
    |mut s: TcpStream| async move {
        read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
        for _ in 0..1000 {
            if s.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
    },
    "reply larger than 65536 bytes"
);

#[tokio::test]
async fn tls_to_a_plain_port_fails_fast() {
    let url =
        fixture(|mut s: TcpStream| async move { reply(&mut s, &http("200 OK", "{}")).await }).await;
    let (r, took) = probe(&url.replace("http://", "https://")).await;
    assert!(r.is_err());
    bounded(took);
}

#[tokio::test]
async fn a_closed_port_is_refused_at_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let (r, took) = probe(&format!("http://{addr}/rpc/v1")).await;
    assert!(r
        .expect_err("refused")
        .to_string()
        .contains("cannot connect"));
    bounded(took);
}

/// This process's open TCP sockets whose peer is one of `ports` on loopback: the probe
/// client's connections to the fixtures, and nothing the other tests of this binary open.
fn sockets_to(ports: &[u16]) -> usize {
    let own: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    Some(
                        l.to_str()?
                            .strip_prefix("socket:[")?
                            .strip_suffix(']')?
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    ["/proc/self/net/tcp", "/proc/self/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let port = f
                .get(2)
                .and_then(|r| r.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            port.is_some_and(|p| ports.contains(&p))
                && f.get(9).is_some_and(|inode| own.contains(*inode))
        })
        .count()
}

/// Hundreds of bad exchanges leave no socket or task behind.
#[tokio::test]
async fn bad_probes_leak_no_sockets() {
    let url = fixture(|mut s: TcpStream| async move { reply(&mut s, "garbage").await }).await;
    let hang = fixture(|s: TcpStream| async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(s);
    })
    .await;
    let port = |u: &str| {
        u.rsplit(':')
            .next()
            .and_then(|p| p.split('/').next())
            .and_then(|p| p.parse::<u16>().ok())
            .expect("a port")
    };
    let ports = [port(&url), port(&hang)];
    let fds = || sockets_to(&ports);
    // Warm up (connection pool, runtime threads), then measure.
    let _ = probe(&url).await;
    let before = fds();
    for _ in 0..100 {
        let _ = probe(&url).await;
    }
    for _ in 0..3 {
        let _ = probe(&hang).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = fds();
    // The fixtures' own accepted sockets are theirs; the client side must all be closed, apart
    // from at most one kept-alive connection per fixture.
    assert!(
        after <= before.max(2),
        "sockets to the fixtures grew from {before} to {after}"
    );
}

//! The demo's miner: what a storage provider feels. lotus-miner holds one websocket to its
//! daemon for hours, subscribed to ChainNotify and asking ChainHead all the time. When its
//! daemon stalls, every head it gets is stale (behind the simulated network's clock) until the
//! session moves; this one runs through the demo's nginx and says when it was cut, how many
//! stale heads it got first, and when it was back on a live daemon.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chain_co_sim::ChainClock;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// How often the miner asks for the head.
const EVERY: Duration = Duration::from_millis(250);

/// One cut of the session and what followed.
#[derive(Debug, Clone)]
pub struct Cut {
    /// Seconds since the demo started.
    pub at: f64,
    pub from: String,
    /// Stale heads received on `from` before the cut.
    pub stale: u64,
    /// The node it came back on, and after how long.
    pub back: Option<(String, Duration)>,
}

/// What the session saw, for the summary.
#[derive(Debug, Default)]
pub struct SessionLog {
    pub cuts: Vec<Cut>,
    /// Where it is now, and the stale heads it has had there.
    pub on: Option<String>,
    pub stale_now: u64,
    pub heads: u64,
}

/// Starts the session against `ws_url` (nginx's websocket endpoint). A head is stale when it
/// is behind the height the network had a moment before the reply (`clock`).
pub fn spawn(
    ws_url: String,
    clock: ChainClock,
    started: Instant,
    stop: CancellationToken,
) -> (Arc<Mutex<SessionLog>>, tokio::task::JoinHandle<()>) {
    let log = Arc::new(Mutex::new(SessionLog::default()));
    let task = tokio::spawn(run(ws_url, clock, started, stop, log.clone()));
    (log, task)
}

async fn run(
    url: String,
    clock: ChainClock,
    started: Instant,
    stop: CancellationToken,
    log: Arc<Mutex<SessionLog>>,
) {
    let say = |msg: String| println!("[{:>5.1}s] {msg}", started.elapsed().as_secs_f64());
    let mut cut_at: Option<Instant> = None;
    while !stop.is_cancelled() {
        let Ok(Ok((ws, resp))) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(&url),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let node = resp
            .headers()
            .get("x-sim-node")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string();
        {
            let mut l = log.lock().expect("session lock");
            if let (Some(t), Some(last)) = (cut_at.take(), l.cuts.last_mut()) {
                let after = t.elapsed();
                say(format!(
                    "    miner session: back on {node} after {:.2}s",
                    after.as_secs_f64()
                ));
                last.back = Some((node.clone(), after));
            } else if l.on.is_none() {
                say(format!(
                    "    miner session: websocket through nginx on {node} (ChainNotify, ChainHead every 250 ms)"
                ));
            }
            l.on = Some(node.clone());
            l.stale_now = 0;
        }
        let cut = hold(ws, clock, &stop, &log).await;
        if cut {
            let mut l = log.lock().expect("session lock");
            let stale = l.stale_now;
            say(format!(
                "    miner session: cut on {node} after {stale} stale heads; reconnecting through nginx"
            ));
            l.cuts.push(Cut {
                at: started.elapsed().as_secs_f64(),
                from: node,
                stale,
                back: None,
            });
            cut_at = Some(Instant::now());
        }
    }
}

/// Holds one connection: subscribes, asks for the head every [`EVERY`], counts stale heads.
/// `true` when the connection was cut, `false` at `stop`.
async fn hold(
    mut ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    clock: ChainClock,
    stop: &CancellationToken,
    log: &Arc<Mutex<SessionLog>>,
) -> bool {
    let notify = r#"{"jsonrpc":"2.0","method":"Filecoin.ChainNotify","params":[],"id":1}"#;
    if ws.send(Message::Text(notify.into())).await.is_err() {
        return true;
    }
    let mut tick = tokio::time::interval(EVERY);
    let mut id = 1u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = ws.close(None).await;
                return false;
            }
            _ = tick.tick() => {
                id += 1;
                let call = format!(r#"{{"jsonrpc":"2.0","method":"Filecoin.ChainHead","params":[],"id":{id}}}"#);
                if ws.send(Message::Text(call.into())).await.is_err() {
                    return true;
                }
            }
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    _ => return true,
                };
                let Some(height) = head_height(&text) else { continue };
                // What the network had a moment ago: a reply made just before a new epoch is
                // not stale for arriving just after it.
                let network = clock.height_at(SystemTime::now() - Duration::from_millis(300));
                let mut l = log.lock().expect("session lock");
                l.heads += 1;
                if height < network {
                    l.stale_now += 1;
                }
            }
        }
    }
}

/// The height of a `ChainHead` reply; `None` for anything else (notifications, other calls).
fn head_height(text: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.get("id")?;
    v.get("result")?.get("Height")?.as_u64()
}

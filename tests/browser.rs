//! The status page in a real browser: Debian's headless Chromium loads `/` from a running
//! chain-co with the simulator, after a stall has moved the primary. It must show the primary
//! and each node's reason, one chart series per node and the switch in the journal; with a
//! token configured it shows nothing before the token is entered, and everything after.
//!
//! `CHAIN_CO_SCREENSHOT=docs/status-page.png cargo test --test browser` also saves a screenshot.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn chromium() -> Option<PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
];

/// The DOM after the page's scripts ran (its first refresh).
fn dump_dom(browser: &PathBuf, url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile");
    let out = Command::new(browser)
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=4000", "--dump-dom", url])
        .stderr(Stdio::null())
        .output()
        .expect("chromium runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One pool: three nodes, nginx, chain-co (with `api_extra` in `[api]`), and its API URL.
async fn pool(
    api_extra: &str,
) -> (
    tempfile::TempDir,
    Sim,
    chain_co_sim::testbed::PrivateNginx,
    ChildGuard,
    String,
) {
    let sim = Sim::start(&["a", "b", "c"], "1s");
    let dir = tempfile::tempdir().expect("tempdir");
    let nginx = start_nginx(dir.path(), &[sim.addr("a")]);
    let text = config_text(
        dir.path(),
        &sim,
        &nginx,
        "[probe]\ninterval = \"300ms\"\ntimeout = \"250ms\"\n[select]\nrise = 2\nfall = 2\nlag_grace = \"1s\"\n",
    )
    .replace("[api]\n", &format!("[api]\n{api_extra}"));
    let config = dir.path().join("chain-co.toml");
    std::fs::write(&config, text).expect("config");
    let run = start_run(&config);
    let api = api_url(&run).await;
    wait_healthy(&api, &run).await;
    (dir, sim, nginx, run, api)
}

#[tokio::test]
async fn the_status_page_shows_the_pool_the_chart_and_the_switch() {
    let Some(browser) = chromium() else {
        skip("needs Debian's chromium (apt-get install -y chromium)");
        return;
    };
    let (_dir, sim, nginx, run, api) = pool("").await;
    let old = primary_name(&sim, &nginx.upstream_file);
    sim.op(&old, r#"{"op":"stall"}"#).await;
    let moved = wait_until(Duration::from_secs(15), || {
        primary_in(&nginx.upstream_file).is_some_and(|p| p != sim.addr(&old))
    })
    .await;
    assert!(moved.is_some(), "{}", run.stderr());
    rounds_pass(&api, 3).await;
    let new = primary_name(&sim, &nginx.upstream_file);
    let dom = dump_dom(&browser, &format!("{api}/"));
    assert!(
        dom.contains(&format!("<b id=\"primary\">{new}</b>")),
        "primary: {dom}"
    );
    // The stalled node's row, with its reason.
    let row = dom
        .split("<tr data-node=\"")
        .find(|r| r.starts_with(&format!("{old}\"")))
        .unwrap_or_else(|| panic!("no row for {old}: {dom}"));
    assert!(
        row.contains("behind the best head") || row.contains("lagging") || row.contains("stale"),
        "{row}"
    );
    // The chart as drawn (the page's script also holds these words, as source).
    let svg = dom
        .split("<svg id=\"chart\"")
        .nth(1)
        .and_then(|s| s.split("</svg>").next())
        .expect("the chart");
    assert_eq!(
        svg.matches("<polyline class=\"series\"").count(),
        3,
        "one series per node: {svg}"
    );
    for n in &sim.ready.nodes {
        assert!(svg.contains(&format!("data-node=\"{}\"", n.name)), "{svg}");
    }
    assert!(
        svg.contains("class=\"switch\""),
        "the switch is marked on the chart: {svg}"
    );
    // The time axis fits the data there is: three labels, both ends under an hour apart.
    assert_eq!(svg.matches("class=\"axis\"").count(), 3, "{svg}");
    assert!(dom.contains("data-span=\"300\"") && dom.contains("data-span=\"3600\""));
    // The pool's finalized epoch, when it has one, is on the chart.
    let status = common::status_json(&api).await;
    if let Some(epoch) = status["finalized"]["epoch"].as_u64() {
        assert!(
            svg.contains(&format!("finalized epoch {epoch}")) || svg.contains("finalized epoch "),
            "{svg}"
        );
    }
    assert!(
        dom.contains("data-kind=\"switch\"") && dom.contains(&format!("{old} went down")),
        "the journal has the switch: {dom}"
    );
    if let Some(path) = std::env::var_os("CHAIN_CO_SCREENSHOT") {
        night(&sim, &old, &api).await;
        let profile = tempfile::tempdir().expect("profile");
        let shot = Command::new(&browser)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--window-size=1100,1250", "--virtual-time-budget=4000"])
            .arg(format!("--screenshot={}", PathBuf::from(path).display()))
            .arg(format!("{api}/"))
            .stderr(Stdio::null())
            .status()
            .expect("screenshot");
        assert!(shot.success());
    }
}

/// For the screenshot only (`CHAIN_CO_SCREENSHOT=docs/status-page.png`): a night worth
/// showing, about 80 s of it. The stalled node recovers, another lags for a while and
/// recovers, so the chart has a switch, a lagging series and the recoveries, with samples
/// every 10 s.
async fn night(sim: &Sim, stalled: &str, api: &str) {
    tokio::time::sleep(Duration::from_secs(20)).await;
    sim.op(stalled, r#"{"op":"heal"}"#).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let other = others(sim, stalled)[0].to_string();
    sim.op(&other, r#"{"op":"lag","epochs":4}"#).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    sim.op(&other, r#"{"op":"heal"}"#).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    rounds_pass(api, 2).await;
}

/// A minimal Chrome DevTools Protocol session on one page.
struct Page {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Page {
    async fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next += 1;
        let id = self.next;
        let msg = serde_json::json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .expect("send");
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("an answer within 10s")
                .expect("open")
                .expect("frame");
            if let Message::Text(t) = m {
                let v: serde_json::Value = serde_json::from_str(&t).expect("JSON");
                if v["id"] == id {
                    return v;
                }
            }
        }
    }

    async fn eval(&mut self, js: &str) -> serde_json::Value {
        let v = self
            .call(
                "Runtime.evaluate",
                serde_json::json!({"expression": js, "returnByValue": true}),
            )
            .await;
        v["result"]["result"]["value"].clone()
    }

    async fn eval_until(&mut self, js: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.eval(js).await == serde_json::Value::Bool(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

#[tokio::test]
async fn with_a_token_the_page_shows_nothing_until_it_is_entered() {
    let Some(browser) = chromium() else {
        skip("needs Debian's chromium (apt-get install -y chromium)");
        return;
    };
    let tokdir = tempfile::tempdir().expect("tempdir");
    let token = tokdir.path().join("api.token");
    std::fs::write(&token, "page-token-123").expect("token");
    let (_dir, sim, _nginx, _run, api) =
        pool(&format!("token_file = {:?}\n", token.display().to_string())).await;
    // Before the token: the login, no data.
    let dom = dump_dom(&browser, &format!("{api}/"));
    assert!(dom.contains("<div id=\"content\" hidden=\"\">"), "{dom}");
    for n in &sim.ready.nodes {
        assert!(!dom.contains(&format!("data-node=\"{}\"", n.name)), "{dom}");
    }
    // A browser that stays open: enter the token as a person would.
    let profile = tempfile::tempdir().expect("profile");
    let mut child = Command::new(&browser)
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--remote-debugging-port=0", "about:blank"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium");
    let guard_pid = child.id();
    let stderr = child.stderr.take().expect("stderr");
    let ws_browser = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.split("DevTools listening on ").nth(1).map(str::to_string))
    })
    .await
    .expect("join")
    .expect("DevTools address");
    let _browser = ChildGuard {
        child,
        stderr_file: None,
    };
    let port = ws_browser
        .trim_start_matches("ws://")
        .split(['/', ':'])
        .nth(1)
        .expect("port")
        .to_string();
    let list: serde_json::Value = serde_json::from_str(
        &reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .expect("targets")
            .text()
            .await
            .expect("body"),
    )
    .expect("JSON");
    let page_ws = list
        .as_array()
        .and_then(|t| t.iter().find(|t| t["type"] == "page"))
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .expect("a page target")
        .to_string();
    let (ws, _) = tokio_tungstenite::connect_async(page_ws.as_str())
        .await
        .expect("CDP");
    let mut page = Page { ws, next: 0 };
    page.call(
        "Page.navigate",
        serde_json::json!({"url": format!("{api}/")}),
    )
    .await;
    assert!(
        page.eval_until(
            "getComputedStyle(document.getElementById('login')).display === 'block' && document.getElementById('content').hidden",
            Duration::from_secs(10)
        )
        .await,
        "the login is shown first (browser pid {guard_pid})"
    );
    page.eval(
        "document.getElementById('token').value = 'page-token-123'; document.getElementById('login-form').requestSubmit(); true",
    )
    .await;
    assert!(
        page.eval_until(
            "!document.getElementById('content').hidden && document.querySelectorAll('#nodes tbody tr').length === 3",
            Duration::from_secs(10)
        )
        .await,
        "the page works once the token is entered"
    );
    // Kept for the tab only, never in the URL.
    assert_eq!(page.eval("location.search").await, "");
    assert_eq!(
        page.eval("sessionStorage.getItem('chain-co-token')").await,
        "page-token-123"
    );
    assert_eq!(page.eval("localStorage.length").await, 0);
}

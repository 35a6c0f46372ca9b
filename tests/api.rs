//! Operating chain-co: the status API, metrics, the client CLIs, drain/prefer and hot reload,
//! against `chain-co run` with the simulator and a private nginx.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

struct Running {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    sim: Sim,
    nginx: chain_co_sim::testbed::PrivateNginx,
    run: ChildGuard,
    api: String,
    config: std::path::PathBuf,
}

const RULES: &str =
    "[probe]\ninterval = \"300ms\"\ntimeout = \"250ms\"\n[select]\nrise = 2\nfall = 2\n";

async fn running(extra: &str) -> Running {
    let sim = Sim::start(&["a", "b", "c"], "1s");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let nginx = start_nginx(&dir, &[sim.addr("a")]);
    let config = write_config(&dir, &sim, &nginx, &format!("{RULES}{extra}"));
    let run = start_run(&config);
    let api = api_url(&run).await;
    let up = wait_until(Duration::from_secs(15), || {
        servers(&nginx.upstream_file).len() == 3
    })
    .await;
    assert!(up.is_some(), "not up; log:\n{}", run.stderr());
    // The file is renamed into place before nginx -t and the reload; the round's report comes
    // after them. Wait until the API says the apply is done.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&format!("{api}/healthz")).await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "healthz never 200; log:\n{}",
            run.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Running {
        _dir: tmp,
        dir,
        sim,
        nginx,
        run,
        api,
        config,
    }
}

async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run chain-co");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn status_healthz_and_metrics_say_what_chain_co_sees() {
    let r = running("").await;
    let (code, body) = get(&format!("{}/status", r.api)).await;
    assert_eq!(code, 200);
    let s: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let p = primary_name(&r.sim, &r.nginx.upstream_file);
    assert_eq!(s["primary"], p.as_str(), "{s:#}\n{}", r.run.stderr());
    assert!(s["primary_since"].as_str().is_some());
    let backups = s["backups"].as_array().expect("backups");
    assert_eq!(backups.len(), 2);
    assert!(!backups.contains(&serde_json::json!(p)));
    assert_eq!(s["network"], "simnet");
    assert_eq!(s["nodes"][0]["implementation"], "lotus");
    assert!(s["nodes"][0]["latency"].as_str().is_some(), "{s:#}");
    assert_eq!(s["last_apply"]["result"], "reloaded");
    assert!(s["reloads"].as_u64().expect("reloads") >= 1);

    let (code, body) = get(&format!("{}/healthz", r.api)).await;
    assert_eq!(
        (code, body.trim()),
        (200, format!("ok: primary {p}").as_str())
    );

    let (code, text) = get(&format!("{}/metrics", r.api)).await;
    assert_eq!(code, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let find = |name: &str, node: Option<&str>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && node.is_none_or(|n| s.labels.get("node") == Some(n)))
            .unwrap_or_else(|| panic!("{name} {node:?} missing from:\n{text}"))
            .value
            .clone()
    };
    assert!(
        matches!(find("chain_co_node_primary", Some(p.as_str())), prometheus_parse::Value::Gauge(v) if v == 1.0)
    );
    assert!(
        matches!(find("chain_co_node_healthy", Some("c")), prometheus_parse::Value::Gauge(v) if v == 1.0)
    );
    assert!(
        matches!(find("chain_co_node_height", Some("b")), prometheus_parse::Value::Gauge(v) if v > 0.0)
    );
    find("chain_co_probe_duration_seconds_count", Some("a"));
    find("chain_co_nginx_reloads_total", None);
    find("chain_co_build_info", None);

    // The CLI client reads the same.
    let (code, out, err) = cli(&["status", "--url", &r.api]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("primary: {p} since")), "{out}");
    assert!(out.contains("NODE") && out.contains("healthy"), "{out}");
    let (_, out, _) = cli(&["status", "--url", &r.api, "--json"]);
    assert!(out.contains(&format!("\"primary\": \"{p}\"")));

    // All down: healthz says why.
    for n in ["a", "b", "c"] {
        r.sim.op(n, r#"{"op":"die"}"#).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (code, body) = loop {
        let (code, body) = get(&format!("{}/healthz", r.api)).await;
        if code == 503 || std::time::Instant::now() > deadline {
            break (code, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, 503, "healthz stayed {code}: {body}");
    assert!(body.contains("no primary"), "{body}");
    assert_eq!(
        servers(&r.nginx.upstream_file).len(),
        3,
        "fail static: the last upstream stays"
    );
}

#[tokio::test]
async fn drain_undrain_and_prefer_move_traffic_and_survive_a_restart() {
    let mut r = running("").await;
    let file = r.nginx.upstream_file.clone();
    let a = primary_name(&r.sim, &file);
    let (code, out, err) = cli(&["drain", &a, "--url", &r.api, "--by", "alice"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("{a} drained")), "{out}");
    let moved = wait_until(Duration::from_secs(5), || {
        primary_in(&file).is_some_and(|p| p != r.sim.addr(&a))
    })
    .await;
    assert!(moved.is_some(), "drained primary still in use");
    assert!(
        !servers(&file)
            .iter()
            .any(|(addr, _)| *addr == r.sim.addr(&a)),
        "a left the upstream"
    );
    let (_, out, _) = cli(&["status", "--url", &r.api]);
    assert!(out.contains(&format!("drained: {a} by alice")), "{out}");
    let rest = others(&r.sim, &a);
    let (b, c) = (rest[0], rest[1]);
    assert!(std::fs::read_to_string(r.dir.join("state.json"))
        .expect("state file")
        .contains("alice"));

    // Draining b and c too would leave nothing: the last one is refused.
    assert_eq!(cli(&["drain", b, "--url", &r.api]).0, Some(0));
    let (code, _, err) = cli(&["drain", c, "--url", &r.api]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("refused: {c} is the last healthy node")),
        "{err}"
    );
    assert_eq!(cli(&["undrain", b, "--url", &r.api]).0, Some(0));
    // A drained node cannot be preferred: undrain it first.
    let (code, _, err) = cli(&["prefer", &a, "--url", &r.api]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is drained"), "{err}");

    // Prefer c: it becomes primary while healthy.
    assert_eq!(cli(&["prefer", c, "--url", &r.api]).0, Some(0));
    let preferred = wait_until(Duration::from_secs(5), || {
        primary_in(&file) == Some(r.sim.addr(c))
    })
    .await;
    assert!(preferred.is_some(), "c not made primary");

    // A restart keeps the marks.
    let _ = r.run.child.kill();
    let _ = r.run.child.wait();
    r.run = start_run(&r.config);
    r.api = api_url(&r.run).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&format!("{}/healthz", r.api)).await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "not back; log:\n{}",
            r.run.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, out, err) = cli(&["status", "--url", &r.api, "--json"]);
    let s: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
    assert_eq!(s["overrides"]["preferred"]["node"], c);
    assert!(s["overrides"]["drained"][&a].is_object());
    assert_eq!(s["primary"], c);
    assert_eq!(cli(&["prefer", "--clear", "--url", &r.api]).0, Some(0));
    assert_eq!(cli(&["undrain", &a, "--url", &r.api]).0, Some(0));

    // A mark for a node the config no longer has is kept, and said.
    let _ = r.run.child.kill();
    let _ = r.run.child.wait();
    let text = std::fs::read_to_string(r.dir.join("state.json")).expect("state");
    let mut state: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    state["drained"]["gone-node"] = serde_json::json!({"by": "bob", "at": "2026-11-26T00:00:00Z"});
    std::fs::write(r.dir.join("state.json"), state.to_string()).expect("state");
    r.run = start_run(&r.config);
    r.api = api_url(&r.run).await;
    let said = wait_until(Duration::from_secs(5), || {
        r.run
            .stderr()
            .contains("marks gone-node, which is not configured")
    })
    .await;
    assert!(said.is_some(), "{}", r.run.stderr());
}

#[tokio::test]
async fn config_changes_apply_without_a_restart_and_bad_ones_are_refused() {
    let r = running("").await;
    let file = r.nginx.upstream_file.clone();
    let p = primary_name(&r.sim, &file);
    let gone = others(&r.sim, &p)[1].to_string();
    // A broken file: refused, the running config stays.
    let good = std::fs::read_to_string(&r.config).expect("config");
    std::fs::write(&r.config, format!("{good}\n[select]\nbogus = 1\n")).expect("write");
    let refused = wait_until(Duration::from_secs(5), || {
        r.run.stderr().contains("new configuration refused")
    })
    .await;
    assert!(refused.is_some(), "no refusal logged:\n{}", r.run.stderr());
    assert_eq!(servers(&file).len(), 3);
    // A valid change: node c removed. It leaves the upstream; a and b keep their state (no
    // rise needed: they stay in without a gap).
    let without_c: String = {
        let mut out = String::new();
        let mut skip = false;
        for line in good.lines() {
            if line == "[[node]]" {
                skip = false;
            }
            if line == format!("name = \"{gone}\"") {
                skip = true;
                // Drop the "[[node]]" line already written for c.
                out.truncate(out.trim_end_matches('\n').rfind('\n').map_or(0, |i| i + 1));
                continue;
            }
            if skip && (line.starts_with("url") || line.is_empty()) {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    };
    assert!(
        !without_c.contains(&format!("name = \"{gone}\"")),
        "{without_c}"
    );
    std::fs::write(&r.config, &without_c).expect("write");
    let applied = wait_until(Duration::from_secs(5), || servers(&file).len() == 2).await;
    assert!(
        applied.is_some(),
        "c still in the upstream; log:\n{}",
        r.run.stderr()
    );
    assert!(r.run.stderr().contains("configuration reloaded"));
    assert_eq!(
        primary_in(&file),
        Some(r.sim.addr(&p)),
        "the primary stayed across the reload"
    );
    // The removed node's series leave /metrics with it.
    let gone_label = format!("node=\"{gone}\"");
    let cleared = {
        let mut ok = false;
        for _ in 0..50 {
            if !get(&format!("{}/metrics", r.api))
                .await
                .1
                .contains(&gone_label)
            {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ok
    };
    assert!(cleared, "{}", get(&format!("{}/metrics", r.api)).await.1);
}

#[tokio::test]
async fn an_api_token_guards_everything_but_healthz() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let token = tmp.path().join("api.token");
    std::fs::write(&token, "s3cret-api-token").expect("token");
    let sim = Sim::start(&["a", "b"], "1s");
    let dir = tmp.path();
    let nginx = start_nginx(dir, &[sim.addr("a")]);
    let text = config_text(dir, &sim, &nginx, RULES);
    let text = text.replace(
        "[api]\n",
        &format!("[api]\ntoken_file = {:?}\n", token.display().to_string()),
    );
    let config = dir.join("chain-co.toml");
    std::fs::write(&config, text).expect("config");
    let run = start_run(&config);
    let api = api_url(&run).await;
    let up = wait_until(Duration::from_secs(15), || {
        servers(&nginx.upstream_file).len() == 2
    })
    .await;
    assert!(up.is_some(), "{}", run.stderr());
    // /healthz answers without the token.
    wait_healthy(&api, &run).await;
    assert_eq!(get(&format!("{api}/status")).await.0, 401);
    assert_eq!(get(&format!("{api}/metrics")).await.0, 401);
    assert_eq!(get(&format!("{api}/history")).await.0, 401);
    assert_eq!(get(&format!("{api}/heads")).await.0, 401);
    // The page itself holds no data, so it loads; it asks for the token.
    let (code, page) = get(&format!("{api}/")).await;
    assert_eq!(code, 200);
    assert!(page.contains("id=\"login\""));
    // Every route but /healthz sits behind the same layer, marks included.
    for (method, path) in [
        (reqwest::Method::POST, "/nodes/a/drain"),
        (reqwest::Method::POST, "/nodes/a/prefer"),
        (reqwest::Method::DELETE, "/prefer"),
    ] {
        let r = reqwest::Client::new()
            .request(method, format!("{api}{path}"))
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    let (code, out, err) = cli(&[
        "status",
        "--url",
        &api,
        "--token-file",
        token.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.contains("s3cret-api-token"));
    assert!(!run.stderr().contains("s3cret-api-token"));

    let with = |auth: Option<String>| {
        let url = format!("{api}/status");
        async move {
            let mut req = reqwest::Client::new().get(url);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = req.send().await.expect("answers");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    // The scheme is case-insensitive (RFC 7235).
    assert_eq!(with(Some("bearer s3cret-api-token".into())).await.0, 200);
    assert_eq!(with(Some("BEARER s3cret-api-token".into())).await.0, 200);
    // A wrong token is told apart from a missing one.
    let (code, missing) = with(None).await;
    assert_eq!(code, 401);
    let (code, wrong) = with(Some("Bearer nope".into())).await;
    assert_eq!(code, 401);
    assert_ne!(missing, wrong);
    assert!(wrong.contains("does not match"), "{wrong}");

    // A rotated token replaces the old one at the reload; a new listen address needs a restart.
    std::fs::write(&token, "rotated-api-token").expect("rotate");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\""),
    )
    .expect("config");
    let pid = nix::unistd::Pid::from_raw(run.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    let rotated = wait_until(Duration::from_secs(5), || {
        run.stderr().contains("status API token replaced")
    })
    .await;
    assert!(rotated.is_some(), "{}", run.stderr());
    assert_eq!(with(Some("Bearer s3cret-api-token".into())).await.0, 401);
    let (code, body) = with(Some("Bearer rotated-api-token".into())).await;
    assert_eq!(code, 200);
    assert!(body.contains("needs a restart"), "{body}");
    assert!(run.stderr().contains("needs a restart"));
    assert!(!run.stderr().contains("rotated-api-token"));
}

/// Thousands of idle, half-sent connections must not starve the API (keepalived's /healthz) nor
/// take the descriptors chain-co needs, even with a low descriptor limit.
#[tokio::test]
async fn a_flood_of_half_sent_connections_does_not_starve_healthz() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        panic!("this test needs prlimit (util-linux)");
    }
    let sim = Sim::start(&["a", "b", "c"], "1s");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let nginx = start_nginx(dir, &[sim.addr("a")]);
    let config = write_config(dir, &sim, &nginx, RULES);
    let stderr_file = dir.join("run.stderr");
    let child = Command::new("prlimit")
        .args(["--nofile=128:128", "--"])
        .arg(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("CHAIN_CO_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).expect("stderr"))
        .spawn()
        .expect("prlimit chain-co run");
    let run = ChildGuard {
        child,
        stderr_file: Some(stderr_file),
    };
    let api = api_url(&run).await;
    wait_healthy(&api, &run).await;
    let addr = api.trim_start_matches("http://").to_string();
    // 400 connections that never finish their request, far past the 128 descriptors.
    let mut flood = Vec::new();
    for _ in 0..400 {
        if let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n").await;
            flood.push(s);
        }
    }
    for i in 0..10 {
        let r = tokio::time::timeout(
            Duration::from_secs(3),
            reqwest::get(format!("{api}/healthz")),
        )
        .await;
        let ok = matches!(&r, Ok(Ok(resp)) if resp.status().is_success());
        assert!(ok, "healthz #{i} under the flood: {r:?}\n{}", run.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The daemon's own work goes on: a change is still applied.
    let primary = primary_name(&sim, &nginx.upstream_file);
    sim.op(&primary, r#"{"op":"die"}"#).await;
    let moved = wait_until(Duration::from_secs(15), || {
        primary_in(&nginx.upstream_file).is_some_and(|p| p != sim.addr(&primary))
    })
    .await;
    drop(flood);
    assert!(moved.is_some(), "{}", run.stderr());
    assert!(
        !run.stderr().contains("Too many open files"),
        "{}",
        run.stderr()
    );
}

/// A damaged state file (empty after a power cut) never stops `run`: it is set aside, chain-co
/// starts without marks, and says so in the log and in /status.
#[tokio::test]
async fn a_damaged_state_file_is_set_aside_and_run_starts() {
    let sim = Sim::start(&["a", "b"], "1s");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(dir.join("state.json"), "").expect("empty state");
    let nginx = start_nginx(dir, &[sim.addr("a")]);
    let config = write_config(dir, &sim, &nginx, RULES);
    let run = start_run(&config);
    let api = api_url(&run).await;
    wait_healthy(&api, &run).await;
    let status = status_json(&api).await;
    let notices = status["notices"].to_string();
    assert!(notices.contains("damaged copy"), "{status}");
    assert!(
        run.stderr().contains("damaged state file"),
        "{}",
        run.stderr()
    );
    let aside = std::fs::read_dir(dir)
        .expect("ls")
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains("damaged"));
    assert!(aside, "the bad copy is kept");
}

/// The status page and what it reads: one self-contained HTML file under 50 KB at `/`, the
/// journal gaining a switch with its reason, one head series per node, and the data behind the
/// token while the page itself holds none.
#[tokio::test]
async fn the_status_page_the_journal_and_the_heads() {
    let mut r = running("").await;
    let (code, html) = get(&format!("{}/", r.api)).await;
    assert_eq!(code, 200);
    assert!(html.len() < 50_000, "{} bytes", html.len());
    assert!(html.contains("<svg id=\"chart\""));
    for external in ["http://", "https://", "//cdn", "src=\""] {
        assert!(
            !html.contains(external),
            "the page loads nothing from elsewhere: {external}"
        );
    }
    assert!(!html.contains("?token="), "never a token in a URL");
    let file = r.nginx.upstream_file.clone();
    let p = primary_name(&r.sim, &file);
    r.sim.op(&p, r#"{"op":"die"}"#).await;
    let moved = wait_until(Duration::from_secs(10), || {
        primary_in(&file).is_some_and(|a| a != r.sim.addr(&p))
    })
    .await;
    assert!(moved.is_some(), "{}", r.run.stderr());
    rounds_pass(&r.api, 2).await;
    let journal: serde_json::Value =
        serde_json::from_str(&get(&format!("{}/history", r.api)).await.1).expect("JSON");
    let events = journal["events"].as_array().expect("events");
    assert!(
        events.iter().any(|e| e["kind"] == "switch"
            && e["text"]
                .as_str()
                .is_some_and(|t| t.contains(&format!("{p} went down")))),
        "{journal:#}"
    );
    assert!(events
        .iter()
        .any(|e| e["kind"] == "down" && e["node"] == p.as_str()));
    let heads: serde_json::Value =
        serde_json::from_str(&get(&format!("{}/heads", r.api)).await.1).expect("JSON");
    let nodes = heads["nodes"].as_object().expect("nodes");
    assert_eq!(nodes.len(), 3, "{heads:#}");
    assert!(nodes
        .values()
        .all(|s| !s.as_array().expect("samples").is_empty()));
    let (code, out, err) = cli(&["status", "--history", "--url", &r.api]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("switch") && out.contains(&format!("{p} went down")),
        "{out}"
    );

    // The journal survives a restart: what happened before it, then the restart itself.
    let _ = r.run.child.kill();
    let _ = r.run.child.wait();
    r.run = start_run(&r.config);
    r.api = api_url(&r.run).await;
    wait_healthy(&r.api, &r.run).await;
    let journal: serde_json::Value =
        serde_json::from_str(&get(&format!("{}/history", r.api)).await.1).expect("JSON");
    let events = journal["events"].as_array().expect("events");
    assert!(
        events.iter().any(|e| e["kind"] == "switch"
            && e["text"]
                .as_str()
                .is_some_and(|t| t.contains(&format!("{p} went down")))),
        "the switch before the restart: {journal:#}"
    );
    let starts: Vec<&serde_json::Value> = events.iter().filter(|e| e["kind"] == "start").collect();
    assert_eq!(starts.len(), 2, "{journal:#}");
    assert!(
        starts[1]["text"]
            .as_str()
            .is_some_and(|t| t.contains("from the previous run")),
        "{journal:#}"
    );
    assert!(journal["since"].as_u64().is_some(), "{journal:#}");
    assert!(
        journal["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("state.journal.jsonl")),
        "{journal:#}"
    );
    let (_, out, _) = cli(&["status", "--history", "--url", &r.api]);
    assert!(
        out.starts_with("journal since ") && out.contains("across restarts"),
        "{out}"
    );
}

#[tokio::test]
async fn another_sites_page_cannot_change_marks_and_a_bad_body_changes_nothing() {
    let r = running("").await;
    let send = |path: &str, headers: &[(&str, &str)], body: &str| {
        let mut req = reqwest::Client::new()
            .post(format!("{}{path}", r.api))
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        async move {
            let resp = req.send().await.expect("answers");
            (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            )
        }
    };
    let drained = || async {
        status_json(&r.api).await["overrides"]["drained"]
            .as_object()
            .map_or(0, |d| d.len())
    };
    // A no-CORS POST from a page: a form's content type, or none.
    let form = [("content-type", "text/plain")];
    assert_eq!(send("/nodes/a/drain", &form, "{}").await.0, 415);
    assert_eq!(send("/nodes/a/drain", &[], "").await.0, 415);
    // JSON from another origin.
    let json = ("content-type", "application/json");
    let foreign = [json, ("origin", "http://evil.example")];
    assert_eq!(send("/nodes/b/prefer", &foreign, "{}").await.0, 403);
    // A name re-pointed at this host (DNS rebinding).
    let rebound = [json, ("host", "evil.example:9797")];
    assert_eq!(send("/nodes/a/drain", &rebound, "{}").await.0, 403);
    let page = reqwest::Client::new()
        .get(format!("{}/status", r.api))
        .header("host", "evil.example")
        .send()
        .await
        .expect("answers");
    assert_eq!(page.status().as_u16(), 403, "reading is refused too");
    // Malformed bodies are refused with the reason, and drain nothing.
    for body in [
        r#"{"grace": 30}"#,
        r#""half a minute""#,
        "{broken",
        r#"{"grace":"soon"}"#,
    ] {
        let (code, text) = send("/nodes/a/drain", &[json], body).await;
        assert_eq!(code, 400, "{body}: {text}");
        assert!(text.contains("nothing changed"), "{text}");
    }
    assert_eq!(drained().await, 0, "nothing was drained");
    // The real thing works: the CLI's request, and the page's own origin.
    let own = r.api.trim_start_matches("http://").to_string();
    let origin = format!("http://{own}");
    let ok = [json, ("origin", origin.as_str())];
    let (code, text) = send("/nodes/a/drain", &ok, r#"{"by":"ops","grace":"1m"}"#).await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(drained().await, 1);
}

/// Reloading a config whose nodes did not change keeps every link: no reconnect, and the
/// rounds stay on the links.
#[tokio::test]
async fn reloading_an_unchanged_config_keeps_every_link() {
    let r = running("").await;
    let websockets = || async {
        sim_nodes(&r.sim)
            .await
            .iter()
            .map(|n| n["websockets"].as_u64().expect("websockets"))
            .sum::<u64>()
    };
    // The links are up (one websocket per node).
    let up = wait_until(Duration::from_secs(10), || {
        r.run.stderr().matches("node up").count() >= 3
    })
    .await;
    assert!(up.is_some(), "{}", r.run.stderr());
    rounds_pass(&r.api, 2).await;
    let before = websockets().await;
    let pid = nix::unistd::Pid::from_raw(r.run.child.id() as i32);
    // Five reloads, the last with a change that concerns no node.
    for i in 0..5 {
        if i == 4 {
            let text = std::fs::read_to_string(&r.config).expect("config");
            std::fs::write(&r.config, text.replace("fall = 2", "fall = 3")).expect("config");
        }
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
        let done = wait_until(Duration::from_secs(5), || {
            r.run.stderr().matches("configuration reloaded").count() > i
        })
        .await;
        assert!(done.is_some(), "{}", r.run.stderr());
    }
    rounds_pass(&r.api, 3).await;
    assert_eq!(websockets().await, before, "a reload reconnected links");
}

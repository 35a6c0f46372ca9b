//! Broken environments on the apply side, with the real nginx: a full disk, a stale pid file,
//! and secrets that must not leak into any output.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const RULES: &str =
    "[probe]\ninterval = \"300ms\"\ntimeout = \"250ms\"\n[select]\nrise = 2\nfall = 2\n";

async fn status(api: &str, token: Option<&str>) -> serde_json::Value {
    let mut req = reqwest::Client::new().get(format!("{api}/status"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let body = req
        .send()
        .await
        .expect("status")
        .text()
        .await
        .expect("body");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Unmounts on drop, even when the test fails.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_keeps_the_last_good_file_and_chain_co_recovers() {
    if !nix::unistd::geteuid().is_root() {
        skip("mounting a tiny tmpfs needs root");
        return;
    }
    let sim = Sim::start(&["a", "b", "c"], "1s");
    let dir = tempfile::tempdir().expect("tempdir");
    let conf_d = dir.path().join("conf.d");
    std::fs::create_dir_all(&conf_d).expect("conf.d");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&conf_d)
        .status()
        .expect("mount");
    if !mounted.success() {
        skip("cannot mount a tmpfs here");
        return;
    }
    let _mount = Mount(conf_d.clone());
    let nginx = start_nginx(dir.path(), &[sim.addr("a")]);
    let seed = std::fs::read_to_string(&nginx.upstream_file).expect("seed");
    // Fill the filesystem.
    let filler = conf_d.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 1 << 20]);
    let config = write_config(dir.path(), &sim, &nginx, RULES);
    let run = start_run(&config);
    let api = api_url(&run).await;
    let failed = wait_until(Duration::from_secs(10), || {
        run.stderr().contains("No space left on device")
    })
    .await;
    assert!(failed.is_some(), "no ENOSPC error; log:\n{}", run.stderr());
    assert_eq!(
        std::fs::read_to_string(&nginx.upstream_file).expect("file"),
        seed,
        "last good file kept"
    );
    // The log line is written during the round; its report is published when the round ends.
    rounds_pass(&api, 1).await;
    let s = status(&api, None).await;
    assert_eq!(s["last_apply"]["result"], "failed", "{s:#}");
    assert!(s["last_apply"]["error"]
        .as_str()
        .expect("error")
        .contains("kept the previous file"));
    let load = Load::start(nginx.rpc_url());
    assert!(
        wait_until(Duration::from_secs(5), || load.last_node() == "a")
            .await
            .is_some(),
        "nginx still serves"
    );
    // Space comes back: chain-co publishes by itself.
    std::fs::remove_file(&filler).expect("rm filler");
    let recovered = wait_until(Duration::from_secs(10), || {
        servers(&nginx.upstream_file).len() == 3
    })
    .await;
    assert!(recovered.is_some(), "no recovery; log:\n{}", run.stderr());
    load.stop().await;
}

#[tokio::test]
async fn a_stale_pid_file_is_reported_and_the_reload_happens_once_nginx_is_back() {
    let sim = Sim::start(&["a", "b", "c"], "1s");
    let dir = tempfile::tempdir().expect("tempdir");
    let nginx = start_nginx(dir.path(), &[sim.addr("a")]);
    let fake_pid = dir.path().join("stale.pid");
    std::fs::write(&fake_pid, "999999\n").expect("pid");
    let text = config_text(dir.path(), &sim, &nginx, RULES).replace(
        &format!(
            "reload = {{ pid_file = {:?} }}",
            nginx.pid_file.display().to_string()
        ),
        &format!(
            "reload = {{ pid_file = {:?} }}",
            fake_pid.display().to_string()
        ),
    );
    let config = dir.path().join("chain-co.toml");
    std::fs::write(&config, text).expect("config");
    let run = start_run(&config);
    let api = api_url(&run).await;
    let reported = wait_until(Duration::from_secs(10), || {
        run.stderr().contains("stale pid file?")
    })
    .await;
    assert!(reported.is_some(), "log:\n{}", run.stderr());
    // The log line is written during the round; its report is published when the round ends.
    rounds_pass(&api, 1).await;
    let s = status(&api, None).await;
    assert!(
        s["last_apply"]["error"]
            .as_str()
            .expect("error")
            .contains("will be retried"),
        "{s:#}"
    );
    // The file is valid (nginx -t passed) and in place; nginx just was not told.
    assert_eq!(servers(&nginx.upstream_file).len(), 3);
    // nginx is "back" (the pid file is right again): the owed reload happens by itself.
    std::fs::write(&fake_pid, format!("{}\n", nginx.pid())).expect("pid");
    wait_healthy(&api, &run).await;
    let s = status(&api, None).await;
    assert_eq!(s["last_apply"]["result"], "reloaded", "{s:#}");
}

#[tokio::test]
async fn tokens_never_appear_in_logs_status_metrics_or_check() {
    const NODE_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.NODE-SECRET-4f1d9a";
    const API_TOKEN: &str = "API-SECRET-77c2e0";
    let dir = tempfile::tempdir().expect("tempdir");
    let node_token = dir.path().join("node.token");
    let api_token = dir.path().join("api.token");
    std::fs::write(&node_token, NODE_TOKEN).expect("token");
    std::fs::write(&api_token, API_TOKEN).expect("token");
    let sim = Sim::start_args(&[
        "--nodes",
        "a,v:venus",
        "--block-delay",
        "1s",
        "--token-file",
        node_token.to_str().expect("utf-8"),
    ]);
    let nginx = start_nginx(dir.path(), &[sim.addr("a")]);
    let mut text = config_text(dir.path(), &sim, &nginx, RULES);
    text = text.replace(
        "url = \"http",
        &format!(
            "token_file = {:?}\nurl = \"http",
            node_token.display().to_string()
        ),
    );
    text = text.replace(
        "[api]\n",
        &format!(
            "[api]\ntoken_file = {:?}\n",
            api_token.display().to_string()
        ),
    );
    let config = dir.path().join("chain-co.toml");
    std::fs::write(&config, &text).expect("config");
    let run = {
        let stderr_file = config.with_extension("stderr");
        let child = Command::new(BIN)
            .args(["run", "--log-format", "json", "--config"])
            .arg(&config)
            .env("CHAIN_CO_LOG", "debug")
            .stderr(std::fs::File::create(&stderr_file).expect("file"))
            .spawn()
            .expect("run");
        ChildGuard {
            child,
            stderr_file: Some(stderr_file),
        }
    };
    let api = api_url(&run).await;
    let up = wait_until(Duration::from_secs(15), || {
        servers(&nginx.upstream_file).len() == 2
    })
    .await;
    assert!(
        up.is_some(),
        "both nodes accept the token; log:\n{}",
        run.stderr()
    );
    let client = reqwest::Client::new();
    let mut outputs = vec![run.stderr()];
    for path in ["/status", "/metrics", "/healthz"] {
        let body = client
            .get(format!("{api}{path}"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("body");
        outputs.push(body);
    }
    for args in [vec!["check", "--json"], vec!["check"], vec!["validate"]] {
        let out = Command::new(BIN)
            .args(&args)
            .arg("--config")
            .arg(&config)
            .env("CHAIN_CO_LOG", "debug")
            .output()
            .expect("run");
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
        outputs.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let all = outputs.join("\n");
    assert!(all.len() > 1000, "outputs were collected");
    assert!(
        !all.contains(NODE_TOKEN) && !all.contains("NODE-SECRET"),
        "node token leaked"
    );
    assert!(!all.contains(API_TOKEN), "API token leaked");
}

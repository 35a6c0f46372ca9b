//! A wall-clock jump that the daemons' heads agree with (a VM resumed: the monotonic clock
//! stood still while the wall clock moved on) is taken at once: no node reads "head from the
//! future" and the pool stays up. libfaketime moves the wall clock of the simulator and of
//! chain-co together, through one timestamp file, and leaves the monotonic clock alone.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn faked(cmd: &mut Command, offset_file: &Path) {
    cmd.env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME_TIMESTAMP_FILE", offset_file)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
}

#[tokio::test]
async fn a_clock_jump_the_heads_agree_with_is_taken_at_once() {
    if !Path::new(LIBFAKETIME).exists() {
        skip("libfaketime is not installed (apt-get install -y faketime)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let offset = dir.path().join("offset");
    std::fs::write(&offset, "+0\n").expect("offset");

    let mut sim = Command::new(BIN);
    sim.args(["sim", "--nodes", "a,b,c", "--block-delay", "1s"])
        .env("CHAIN_CO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    faked(&mut sim, &offset);
    let mut child = sim.spawn().expect("sim");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let _sim = ChildGuard {
        child,
        stderr_file: None,
    };
    let ready: chain_co_sim::SimReady = serde_json::from_str(&line).expect("ready");
    let mut text = String::new();
    for n in &ready.nodes {
        text.push_str(&format!(
            "[[node]]\nname = \"{}\"\nurl = \"{}\"\n",
            n.name, n.url
        ));
    }
    text.push_str(&format!(
        "[probe]\ninterval = \"500ms\"\ntimeout = \"400ms\"\n[select]\nrise = 1\nfall = 2\n\
         [api]\nlisten = \"127.0.0.1:0\"\nstate_file = {:?}\n[nginx]\noutput = {:?}\n\
         test_cmd = [\"true\"]\nreload = {{ cmd = [\"true\"] }}\n",
        dir.path().join("state.json").display().to_string(),
        dir.path().join("upstream.conf").display().to_string(),
    ));
    let config: PathBuf = dir.path().join("chain-co.toml");
    std::fs::write(&config, text).expect("config");
    let stderr_file = config.with_extension("stderr");
    let mut run = Command::new(BIN);
    run.args(["run", "--config"])
        .arg(&config)
        .env("CHAIN_CO_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).expect("stderr"));
    faked(&mut run, &offset);
    let run = ChildGuard {
        child: run.spawn().expect("run"),
        stderr_file: Some(stderr_file),
    };
    let api = api_url(&run).await;
    wait_healthy(&api, &run).await;
    rounds_pass(&api, 2).await;

    // The VM "resumes": ten minutes later by the wall clock, for both.
    std::fs::write(&offset, "+600\n").expect("jump");
    let taken = wait_until(Duration::from_secs(10), || {
        run.stderr().contains("agree with its new time")
    })
    .await;
    assert!(taken.is_some(), "{}", run.stderr());
    rounds_pass(&api, 4).await;
    let log = run.stderr();
    assert!(!log.contains("head from the future"), "{log}");
    assert!(!log.contains("node down"), "{log}");
    let status = status_json(&api).await;
    assert!(status["primary"].is_string(), "{status:#}");
    assert_eq!(
        status["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter(|n| n["healthy"] == true)
            .count(),
        3,
        "{status:#}"
    );
}

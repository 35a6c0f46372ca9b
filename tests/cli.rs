//! The command line as an operator uses it: `check` against the simulator, `validate`, exit codes.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn pool_config(dir: &Path, sim: &Sim) -> std::path::PathBuf {
    let mut text = String::new();
    for n in &sim.ready.nodes {
        text.push_str(&format!(
            "[[node]]\nname = \"{}\"\nurl = \"{}\"\n",
            n.name, n.url
        ));
    }
    // check writes nothing: the output sits in a directory it could write, and must stay absent.
    text.push_str(&format!(
        "[probe]\ninterval = \"1s\"\ntimeout = \"500ms\"\n[nginx]\noutput = {:?}\n",
        dir.join("upstream.conf").display().to_string()
    ));
    let path = dir.join("chain-co.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn check_json(config: &Path) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(BIN)
        .args(["check", "--json", "--config"])
        .arg(config)
        .output()
        .expect("run check");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

#[tokio::test]
async fn check_json_names_the_right_primary_and_writes_nothing() {
    let sim = Sim::start(&["lotus-a", "lotus-b", "lotus-c"], "1s");
    sim.op("lotus-a", r#"{"op":"lag","epochs":5}"#).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = pool_config(dir.path(), &sim);
    let (code, json) = check_json(&config);
    assert_eq!(code, Some(0), "{json:#}");
    // lotus-b and lotus-c are equal: the first in config order, unless a probe round
    // straddled an epoch boundary and gave lotus-c the heavier head.
    let primary = json["primary"].as_str().expect("a primary").to_string();
    let other = if primary == "lotus-b" {
        "lotus-c"
    } else {
        "lotus-b"
    };
    assert!(primary == "lotus-b" || primary == "lotus-c", "{json:#}");
    assert_eq!(json["backups"], serde_json::json!([other]));
    let a = &json["nodes"][0];
    assert_eq!(a["name"], "lotus-a");
    assert_eq!(a["healthy"], false);
    // 5 epochs behind; 4 or 6 when the round straddles an epoch boundary between the probes
    // (they run at once, in no set order).
    let reason = a["reason"].as_str().expect("reason");
    assert!(
        [
            "lagging 4 epochs (max 2)",
            "lagging 5 epochs (max 2)",
            "lagging 6 epochs (max 2)"
        ]
        .contains(&reason),
        "{reason}"
    );
    assert_eq!(json["nodes"][1]["implementation"], "lotus");
    assert!(json["nodes"][1]["height"].as_u64().is_some());
    let rendered = json["rendered"].as_str().expect("rendered config");
    assert!(rendered.contains(&format!("server {} max_fails", sim.addr(&primary))));
    assert!(!rendered.contains(&sim.addr("lotus-a")));
    let written: Vec<_> = std::fs::read_dir(config.parent().expect("dir"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("upstream"))
        .collect();
    assert!(written.is_empty(), "check wrote {written:?}");

    // The table form says the same.
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("run check");
    let text = String::from_utf8_lossy(&out.stdout);
    // Its own probe round: lotus-c may straddle a boundary this time even if it did not above.
    assert!(
        text.contains("primary: lotus-b") || text.contains("primary: lotus-c"),
        "{text}"
    );
    assert!(text.contains("lagging"), "{text}");
}

#[tokio::test]
async fn check_exits_1_when_no_node_is_healthy() {
    let sim = Sim::start(&["a", "b"], "1s");
    sim.op("a", r#"{"op":"die"}"#).await;
    sim.op("b", r#"{"op":"garbage"}"#).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, json) = check_json(&pool_config(dir.path(), &sim));
    assert_eq!(code, Some(1), "{json:#}");
    assert!(json["primary"].is_null());
    assert!(json["nodes"][0]["reason"]
        .as_str()
        .expect("reason")
        .contains("cannot connect"));
    assert!(json["nodes"][1]["reason"]
        .as_str()
        .expect("reason")
        .contains("not JSON"));
    assert!(json["render_error"]
        .as_str()
        .expect("why nothing")
        .contains("fail static"));
}

#[test]
fn a_bad_config_exits_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[node]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/rpc/v1\"\n\n[select]\nrise = 0\nfal = 3\n",
    )
    .expect("write");
    for cmd in ["check", "validate", "run"] {
        let out = Command::new(BIN)
            .args([cmd, "--config"])
            .arg(&path)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "{}:7:1: select.fal: unknown field `fal`",
                path.display()
            )),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn the_shipped_example_validates() {
    // The example as shipped (and packaged as /etc/chain-co/chain-co.toml), with only its output
    // directory moved to one that exists here: validate also checks that it is writable.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/chain-co.toml"),
    )
    .expect("example");
    let dir = tempfile::tempdir().expect("tempdir");
    let example = dir.path().join("chain-co.toml");
    let moved = text.replace(
        "/etc/nginx/chain-co/filecoin-upstream.conf",
        &dir.path()
            .join("filecoin-upstream.conf")
            .display()
            .to_string(),
    );
    assert_ne!(moved, text, "the example names chain-co's own directory");
    std::fs::write(&example, moved).expect("write");
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&example)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn probe_asks_a_daemon_directly() {
    let sim = Sim::start_args(&["--nodes", "a,f:fuhon", "--block-delay", "1s"]);
    let out = Command::new(BIN)
        .args(["probe", &sim.node("a").url])
        .output()
        .expect("run probe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("head:     height"), "{text}");
    assert!(text.contains("(lotus)"), "{text}");
    assert!(text.contains("network:  simnet"), "{text}");
    assert!(text.contains("peers:    12"), "{text}");
    // Fuhon over WebSocket, and any method with --method.
    let out = Command::new(BIN)
        .args(["probe", &sim.node("f").url, "--method", "Filecoin.Version"])
        .output()
        .expect("run probe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Fuhon Node"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A dead daemon is a clear error, exit 1.
    sim.op("a", r#"{"op":"die"}"#).await;
    let out = Command::new(BIN)
        .args(["probe", &sim.node("a").url, "--timeout", "2s"])
        .output()
        .expect("run probe");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[test]
fn completions_and_man_page_are_generated() {
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("chain-co"));
    let out = Command::new(BIN).arg("man").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH chain-co"));
}

/// A password or token in a node's URL never reaches the screen: not in `check --json`, not in
/// `validate`'s errors, not in `run`'s log.
#[tokio::test]
async fn secrets_in_node_urls_are_never_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[[node]]\nname = \"a\"\nurl = \"http://miner:hunter2@127.0.0.1:1/rpc/v1?token=eyJsecret\"\n\
         [probe]\ninterval = \"1s\"\ntimeout = \"300ms\"\n[nginx]\noutput = \"/nonexistent/chain-co/upstream.conf\"\n",
    )
    .expect("config");
    let out = Command::new(BIN)
        .args(["check", "--json", "--config"])
        .arg(&good)
        .output()
        .expect("check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("127.0.0.1"), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("eyJsecret"),
        "{text}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[node]]\nname = \"a\"\nurl = \"http://miner:hunter2@[bad/rpc/v1?token=eyJsecret\"\n",
    )
    .expect("config");
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&bad)
        .output()
        .expect("validate");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node[0].url"), "{err}");
    assert!(
        !err.contains("hunter2") && !err.contains("eyJsecret"),
        "{err}"
    );
}

/// `validate` checks what `run` will need on this host: a writable output directory.
#[test]
fn validate_refuses_an_output_directory_that_is_not_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[[node]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/rpc/v1\"\n[nginx]\noutput = \"/nonexistent/chain-co/upstream.conf\"\n",
    )
    .expect("config");
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .expect("validate");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not writable"), "{err}");
}

/// With every node down at start, `run` says so once instead of staying silent.
#[tokio::test]
async fn run_with_every_node_down_says_so_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[[node]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/rpc/v1\"\n[[node]]\nname = \"b\"\nurl = \"http://127.0.0.1:2/rpc/v1\"\n\
             [probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n[api]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{d}/state.json\"\n\
             [nginx]\noutput = \"{d}/upstream.conf\"\ntest_cmd = [\"true\"]\nreload = {{ cmd = [\"true\"] }}\n",
            d = dir.path().display()
        ),
    )
    .expect("config");
    let run = start_run(&path);
    let said = wait_until(std::time::Duration::from_secs(10), || {
        run.stderr()
            .contains("no node answered the first probe round")
    })
    .await;
    assert!(said.is_some(), "{}", run.stderr());
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let log = run.stderr();
    assert_eq!(log.matches("no node answered").count(), 1, "{log}");
    assert!(log.contains("a: cannot connect"), "{log}");
}

/// A new user's first minutes: `init` from daemon addresses writes a config that validates as
/// it is, with tokens in 0600 files and never in the config, and refuses to overwrite.
#[tokio::test]
async fn init_writes_a_config_that_validates_and_keeps_tokens_out_of_it() {
    use std::os::unix::fs::PermissionsExt;
    let sim = Sim::start_args(&["--nodes", "a,f:forest", "--block-delay", "1s"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("chain-co.toml");
    let a = sim.node("a").url.clone();
    let f = sim.node("f").addr;
    let info = format!("eyJinittoken:/ip4/{}/tcp/{}/http", f.ip(), f.port());
    let run = Command::new(BIN)
        .args(["init", "--nginx", "--output"])
        .arg(&out)
        .args([&a, &info])
        .output()
        .expect("init");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("lotus"), "{stdout}");
    assert!(stdout.contains("forest"), "{stdout}");
    assert!(
        stdout.contains("proxy_pass http://filecoin"),
        "--nginx: {stdout}"
    );
    let text = std::fs::read_to_string(&out).expect("config");
    assert!(!text.contains("eyJinittoken"), "{text}");
    assert!(!stdout.contains("eyJinittoken"));
    assert!(text.contains("network = \"simnet\""), "{text}");
    let token_file = std::fs::read_dir(dir.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(".token"))
        .expect("a token file");
    let mode = token_file.metadata().expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::read_to_string(token_file.path())
            .expect("token")
            .trim(),
        "eyJinittoken"
    );
    // Validates as it is: the parse part always; the output directory part where nginx's is.
    let config = chain_co::config::Config::load(&out).expect("the written config parses");
    assert_eq!(config.nodes.len(), 2);
    if Path::new("/etc/nginx/conf.d").is_dir() && nix::unistd::geteuid().is_root() {
        let v = Command::new(BIN)
            .args(["validate", "--config"])
            .arg(&out)
            .output()
            .expect("validate");
        assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    }
    // Never overwrites.
    let again = Command::new(BIN)
        .args(["init", "--output"])
        .arg(&out)
        .arg(&a)
        .output()
        .expect("init");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));
}

/// `check` with `[messages]`: the accounts `run` would follow, resolved from the miner, and a
/// node whose token cannot push said, in the JSON and the text alike.
#[tokio::test]
async fn check_shows_whose_messages_follow_and_which_node_cannot_take_them() {
    use chain_co_sim::actors::{ACCOUNTS, MINER};
    let sim = Sim::start(&["a", "b"], "1s");
    sim.op("b", r#"{"op":"read_token","token":"read-token"}"#)
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = pool_config(dir.path(), &sim);
    let token = dir.path().join("b.token");
    std::fs::write(&token, "read-token\n").expect("token");
    let text = std::fs::read_to_string(&config).expect("config");
    let b_url = format!("url = \"{}\"\n", sim.node("b").url);
    let text = text.replacen(
        &b_url,
        &format!("{b_url}token_file = {:?}\n", token.display().to_string()),
        1,
    ) + &format!("[messages]\nminer = \"{MINER}\"\n");
    std::fs::write(&config, text).expect("config");
    let (_, json) = check_json(&config);
    let m = &json["messages"];
    let followed: Vec<&str> = m["senders"]
        .as_array()
        .expect("senders")
        .iter()
        .filter_map(|s| s["address"].as_str())
        .collect();
    assert_eq!(
        followed,
        [ACCOUNTS[0].1, ACCOUNTS[1].1, ACCOUNTS[2].1],
        "{json:#}"
    );
    assert_eq!(
        m["problems"],
        serde_json::json!([
            "cannot carry messages to a: no token with write (set [[node]] write_token_file)",
            "cannot carry messages to b: its token lacks write (set [[node]] write_token_file)"
        ]),
        "{json:#}"
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("pending messages follow a switch for: f0100 (")
            && stdout.contains("WARNING: cannot carry messages to b: its token lacks write"),
        "{stdout}"
    );
}

/// `init --miner`: the `[messages]` section, with the accounts the chain gives in a comment,
/// and a config that parses with it; a miner that is not an ID address is refused.
#[tokio::test]
async fn init_with_a_miner_offers_messages() {
    use chain_co_sim::actors::{ACCOUNTS, MINER};
    let sim = Sim::start(&["a", "b"], "1s");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("chain-co.toml");
    let run = Command::new(BIN)
        .args(["init", "--miner", MINER, "--output"])
        .arg(&out)
        .args([&sim.node("a").url, &sim.node("b").url])
        .output()
        .expect("init");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}");
    assert!(
        stdout.contains(ACCOUNTS[1].1) && stdout.contains("worker"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&out).expect("config");
    assert!(text.contains("[messages]\n"), "{text}");
    assert!(text.contains(&format!("miner = \"{MINER}\"")), "{text}");
    assert!(text.contains("# write_token_file"), "{text}");
    let config = chain_co::config::Config::load(&out).expect("parses");
    assert_eq!(config.message_miner.as_deref(), Some(MINER));
    let bad = Command::new(BIN)
        .args(["init", "--miner", "f3notanid", "--output"])
        .arg(dir.path().join("other.toml"))
        .arg(&sim.node("a").url)
        .output()
        .expect("init");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a miner ID"));
    assert!(!dir.path().join("other.toml").exists());
}

#[test]
fn proxy_variables_never_see_a_daemons_token() {
    let sim = Sim::start(&["a", "b"], "1s");
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("a.token");
    std::fs::write(&token, "token-for-the-daemon-only\n").expect("token");
    let config = pool_config(dir.path(), &sim);
    let text = std::fs::read_to_string(&config).expect("config").replacen(
        "[probe]",
        &format!("token_file = {:?}\n[probe]", token.display().to_string()),
        1,
    );
    std::fs::write(&config, text).expect("config");
    // A "proxy" that counts who reaches it.
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    proxy.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", proxy.local_addr().expect("addr"));
    let out = Command::new(BIN)
        .args(["check", "--json", "--config"])
        .arg(&config)
        .env("HTTP_PROXY", &url)
        .env("http_proxy", &url)
        .env("ALL_PROXY", &url)
        .env("all_proxy", &url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .expect("run check");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(json["primary"].is_string(), "{json:#}");
    assert!(
        proxy.accept().is_err(),
        "chain-co went through the proxy with the daemons' tokens"
    );
}

/// The README's first command: the demo runs to its end and shows the miner's session moving
/// with the primary (cut at the switch, back on the new primary).
#[test]
fn the_demo_shows_the_switches_and_the_miner_session_moving() {
    let out = Command::new(BIN)
        .arg("demo")
        .env("NGINX", nginx_binary())
        .output()
        .expect("demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for words in [
        "stalled → primary",
        "miner session: cut on lotus-a",
        "miner session: back on",
        "summary:",
        "miner session: ",
    ] {
        assert!(text.contains(words), "{words:?} missing:\n{text}");
    }
}

//! A daemon's words are inert wherever they land: a `Version` holding newlines, TOML and
//! terminal escape sequences cannot add a node or a command to the config `init` writes, clear
//! the operator's screen in `check` or `status`, or forge a row of their tables.

mod common;

use common::*;

/// What a hostile daemon says its version is: a TOML injection that would add a reload
/// command and a node of its own, an escape that clears a terminal, and invisible format
/// characters (a right-to-left override, an isolate, a zero-width space, a BOM) that would
/// make it read as something else.
const HOSTILE: &str = "1.0\u{202E}1.32\u{2066}\u{200B}\u{FEFF}\n[nginx.reload]\ncmd = [\"/bin/sh\", \"-c\", \"touch /tmp/chain-co-owned\"]\n[[node]]\nname = \"evil\"\nurl = \"http://203.0.113.9:1234/rpc/v1\"\n\u{1b}[2J\u{1b}]0;title\u{7}";

async fn hostile_pool() -> Sim {
    let sim = Sim::start(&["a", "b"], "1s");
    let op = serde_json::json!({"op": "version", "version": HOSTILE}).to_string();
    sim.op("a", &op).await;
    sim
}

fn assert_inert(text: &str) {
    assert!(
        !text.contains('\u{1b}'),
        "an escape reached the output:\n{text}"
    );
    assert!(!text.contains('\u{7}'), "a BEL reached the output:\n{text}");
    for c in ['\u{202E}', '\u{2066}', '\u{200B}', '\u{FEFF}'] {
        assert!(
            !text.contains(c),
            "format character {:?} reached the output:\n{text}",
            c
        );
    }
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("[nginx.reload]") || l.starts_with("name = \"evil\"")),
        "the daemon's newline forged a line:\n{text}"
    );
}

#[tokio::test]
async fn init_writes_a_daemons_version_as_an_inert_comment() {
    let sim = hostile_pool().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("chain-co.toml");
    let out = std::process::Command::new(BIN)
        .arg("init")
        .arg("--output")
        .arg(&output)
        .arg(format!("http://{}/rpc/v1?token=secret-of-a", sim.addr("a")))
        .arg(format!("http://{}", sim.addr("b")))
        .output()
        .expect("init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_inert(&String::from_utf8_lossy(&out.stdout));
    let text = std::fs::read_to_string(&output).expect("config");
    assert_inert(&text);
    assert!(
        !text.contains("secret-of-a"),
        "a URL's token stays out of the config:\n{text}"
    );
    let parsed: toml::Table = toml::from_str(&text).expect("the config is TOML");
    let nodes = parsed["node"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2, "{text}");
    assert!(nodes.iter().all(|n| n["name"].as_str() != Some("evil")));
    let reload = parsed.get("nginx").and_then(|n| n.get("reload"));
    assert!(reload.is_none(), "{text}");
    // The token went to a 0600 file the config names.
    let token_file = nodes[0]["token_file"].as_str().expect("a token file");
    assert_eq!(
        std::fs::read_to_string(token_file).expect("token").trim(),
        "secret-of-a"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(token_file)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn check_and_status_print_a_daemons_words_inert() {
    let sim = hostile_pool().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let nginx = start_nginx(dir.path(), &[sim.addr("b")]);
    let config = write_config(dir.path(), &sim, &nginx, "[select]\nrise = 1\n");
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_inert(&text);
    // One row per node, however many newlines the daemon sent.
    let rows = text.lines().take_while(|l| !l.is_empty()).count();
    assert_eq!(rows, 3, "a header and two nodes:\n{text}");

    let run = start_run(&config);
    let api = api_url(&run).await;
    wait_healthy(&api, &run).await;
    let out = std::process::Command::new(BIN)
        .args(["status", "--url", &api])
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_inert(&text);
    assert_inert(&run.stderr());
}

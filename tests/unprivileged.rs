//! chain-co as the hardened unit runs it: an unprivileged user with only the unit's
//! capabilities (CAP_KILL, CAP_NET_ADMIN), against a real nginx whose files have the stock
//! ownership (config and pid file root's, workers an unprivileged user). With
//! `[nginx] validate = "private"` a change is validated without privileges, swapped in its own
//! directory and reloaded; a template nginx refuses is refused and the previous file stays.
//!
//! Needs root (to create the user and start nginx as the stock service does) and setpriv;
//! elsewhere it says why it is skipped (and fails in CI, which must run it).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const USER: &str = "chainco-test";

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

fn chown(path: &Path, user: &str) {
    let ok = Command::new("chown")
        .arg(format!("{user}:{user}"))
        .arg(path)
        .status()
        .expect("chown");
    assert!(ok.success());
}

fn workers(master: u32) -> Vec<u32> {
    chain_co::apply::sessions::children(master)
}

#[tokio::test]
async fn an_unprivileged_chain_co_validates_swaps_and_reloads_a_root_nginx() {
    if !nix::unistd::geteuid().is_root()
        || Command::new("setpriv").arg("--version").output().is_err()
    {
        skip("needs root and setpriv (util-linux)");
        return;
    }
    // The unit's system user.
    let _ = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            USER,
        ])
        .output();
    let sim = Sim::start(&["a", "b", "c"], "1s");
    let base = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // nginx's side: root's, as Debian lays it out.
    let ng = base.path().join("nginx");
    for sub in ["logs", "tmp", "conf.d"] {
        std::fs::create_dir_all(ng.join(sub)).expect("dirs");
    }
    // chain-co's own directory, which nginx includes.
    let own = base.path().join("chain-co");
    std::fs::create_dir_all(&own).expect("dir");
    let upstream = own.join("filecoin-upstream.conf");
    std::fs::write(
        &upstream,
        format!("upstream filecoin {{\n    server {};\n}}\n", sim.addr("a")),
    )
    .expect("seed");
    chown(&own, USER);
    chown(&upstream, USER);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let conf = chain_co_sim::testbed::private_conf(&ng, format!("127.0.0.1:{port}"))
        .replace("user root;\n", "user nobody nogroup;\n")
        .replace(
            &format!("include {}/conf.d/*.conf;", ng.display()),
            &format!("include {};", upstream.display()),
        );
    std::fs::write(ng.join("nginx.conf"), conf).expect("nginx.conf");
    let nginx_bin = nginx_binary();
    // Declared before nginx, removed after it: nginx's unit of its own, as systemd gives it.
    let _cgroup;
    let child = Command::new(&nginx_bin)
        .arg("-p")
        .arg(&ng)
        .arg("-c")
        .arg(ng.join("nginx.conf"))
        .arg("-e")
        .arg(ng.join("logs/error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("nginx");
    let nginx = Nginx(child);
    let master = nginx.0.id();
    let pid_file = ng.join("nginx.pid");
    assert!(
        wait_until(Duration::from_secs(10), || pid_file.exists()
            && !workers(master).is_empty())
        .await
        .is_some(),
        "nginx did not start: {}",
        std::fs::read_to_string(ng.join("logs/error.log")).unwrap_or_default()
    );
    _cgroup = chain_co_sim::testbed::own_cgroup(master).expect("a cgroup of its own for nginx");

    // chain-co's config, readable by its user.
    let mut text = String::new();
    for n in &sim.ready.nodes {
        text.push_str(&format!(
            "[[node]]\nname = \"{}\"\nurl = \"{}\"\n",
            n.name, n.url
        ));
    }
    text.push_str(&format!(
        "[probe]\ninterval = \"300ms\"\ntimeout = \"250ms\"\n[select]\nrise = 2\nfall = 2\n\
         [api]\nlisten = \"127.0.0.1:0\"\nstate_file = {:?}\n\
         [nginx]\noutput = {:?}\nvalidate = \"private\"\ntest_cmd = [{:?}]\nreload = {{ pid_file = {:?} }}\n",
        own.join("state.json").display().to_string(),
        upstream.display().to_string(),
        nginx_bin.display().to_string(),
        pid_file.display().to_string(),
    ));
    let config = own.join("chain-co.toml");
    std::fs::write(&config, &text).expect("config");
    chown(&config, USER);
    let stderr_file = base.path().join("run.stderr");
    let child = Command::new("setpriv")
        .args([
            "--reuid",
            USER,
            "--regid",
            USER,
            "--clear-groups",
            "--inh-caps",
            "+kill,+net_admin",
            "--ambient-caps",
            "+kill,+net_admin",
            "--",
        ])
        .arg(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("CHAIN_CO_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).expect("stderr"))
        .spawn()
        .expect("setpriv chain-co run");
    let run = ChildGuard {
        child,
        stderr_file: Some(stderr_file),
    };
    let api = api_url(&run).await;
    wait_healthy(&api, &run).await;
    // Validated without privileges, swapped in its own directory, reloaded: new workers.
    let before = workers(master);
    let published = wait_until(Duration::from_secs(15), || servers(&upstream).len() == 3).await;
    assert!(published.is_some(), "{}", run.stderr());
    let status = status_json(&api).await;
    assert_eq!(status["session_mode"], "destroy", "{status}");
    let primary = primary_name(&sim, &upstream);
    sim.op(&primary, r#"{"op":"die"}"#).await;
    let moved = wait_until(Duration::from_secs(15), || {
        primary_in(&upstream).is_some_and(|p| p != sim.addr(&primary))
    })
    .await;
    assert!(moved.is_some(), "{}", run.stderr());
    let reloaded = wait_until(Duration::from_secs(10), || {
        workers(master).iter().any(|w| !before.contains(w))
    })
    .await;
    assert!(
        reloaded.is_some(),
        "nginx was not reloaded: {}",
        run.stderr()
    );
    assert!(!run.stderr().contains("apply failed"), "{}", run.stderr());
    // The file was swapped in by the unprivileged user, not by root.
    use std::os::unix::fs::MetadataExt;
    let user_uid = std::fs::metadata(&own).expect("dir").uid();
    assert_ne!(user_uid, 0);
    assert_eq!(std::fs::metadata(&upstream).expect("file").uid(), user_uid);
    // A template nginx refuses: refused by the private test, the previous file stays.
    let good = std::fs::read_to_string(&upstream).expect("file");
    let bad = own.join("bad.tera");
    std::fs::write(
        &bad,
        "upstream {{ upstream_name }} {\n{% for s in servers %}    server {{ s.address }} not_a_parameter;\n{% endfor %}}\n",
    )
    .expect("template");
    chown(&bad, USER);
    std::fs::write(
        &config,
        text.replace("[nginx]\n", "[nginx]\ntemplate = \"bad.tera\"\n"),
    )
    .expect("config");
    let pid = nix::unistd::Pid::from_raw(run.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    sim.op(&primary, r#"{"op":"revive"}"#).await;
    let refused = wait_until(Duration::from_secs(15), || {
        run.stderr().contains("nginx test rejected")
    })
    .await;
    assert!(refused.is_some(), "{}", run.stderr());
    assert_eq!(std::fs::read_to_string(&upstream).expect("file"), good);
    drop(run);
    drop(nginx);
}

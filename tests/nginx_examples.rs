//! The shipped nginx example must be a configuration nginx accepts, with the upstream chain-co
//! renders from the shipped template.

mod common;

use std::process::Command;

use chain_co::apply::nginx::Nginx;
use chain_co::apply::{UpstreamPlan, UpstreamServer};
use common::nginx_binary;

#[test]
fn the_example_nginx_conf_passes_nginx_t_with_a_rendered_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("nginx-examples/nginx.conf"),
    )
    .expect("example");
    // Only the machine-specific paths change; every directive is tested as shipped.
    let conf = example
        .replace("user www-data;", "")
        .replace(
            "/etc/nginx/conf.d/filecoin-upstream.conf",
            &format!("{d}/upstream.conf"),
        )
        .replace("/run/nginx.pid", &format!("{d}/nginx.pid"))
        .replace("/var/log/nginx/", &format!("{d}/"));
    std::fs::write(dir.path().join("nginx.conf"), conf).expect("write conf");

    let mut cfg =
        chain_co_sim::testbed::PrivateNginx::template_config(dir.path().join("upstream.conf"));
    cfg.test_cmd = vec!["true".into()];
    let nginx = Nginx::new(cfg).expect("template");
    let plan = UpstreamPlan {
        primary: UpstreamServer {
            name: "lotus-a".into(),
            address: "10.0.0.11:1234".into(),
            backup: false,
        },
        backups: vec![UpstreamServer {
            name: "forest-b".into(),
            address: "[fd00::12]:2345".into(),
            backup: true,
        }],
    };
    std::fs::write(
        dir.path().join("upstream.conf"),
        nginx.render(&plan).expect("render"),
    )
    .expect("write upstream");

    let out = Command::new(nginx_binary())
        .args([
            "-t",
            "-p",
            &d,
            "-c",
            &format!("{d}/nginx.conf"),
            "-e",
            &format!("{d}/error.log"),
        ])
        .output()
        .expect("run nginx -t");
    assert!(
        out.status.success(),
        "nginx -t refused the example: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

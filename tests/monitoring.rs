//! The shipped Prometheus rules and Grafana dashboard use only what a running chain-co exports:
//! every metric they name is in `/metrics`, with the labels they select or group by, and every
//! rule has the fields Prometheus requires (and a runbook for the operator).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::*;
use yaml_rust2::{Yaml, YamlLoader};

fn shipped(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect(path)
}

/// `chain_co_…` names in a PromQL expression, with the labels selected or grouped by.
fn used(expr: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("chain_co_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = expr[start..end].to_string();
        let labels = out.entry(name).or_default();
        if bytes.get(end) == Some(&b'{') {
            let close = expr[end..].find('}').map_or(expr.len(), |c| end + c);
            for m in expr[end + 1..close].split(',') {
                let l = m.split(['=', '!', '~']).next().unwrap_or("").trim();
                if !l.is_empty() {
                    labels.insert(l.to_string());
                }
            }
        }
        i = end;
    }
    // `by (a, b)` applies to the metric of the aggregation: attach to every name found.
    let mut by = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("by (") {
        let after = &rest[at + 4..];
        let close = after.find(')').unwrap_or(after.len());
        for l in after[..close].split(',') {
            by.insert(l.trim().to_string());
        }
        rest = &after[close..];
    }
    for labels in out.values_mut() {
        labels.extend(by.iter().cloned());
    }
    out
}

/// The metric family a sample or selector name belongs to (counters end in `_total`,
/// histograms in `_bucket`/`_sum`/`_count`, info metrics in `_info`).
fn family(name: &str) -> &str {
    for suffix in ["_total", "_bucket", "_sum", "_count", "_info"] {
        if let Some(f) = name.strip_suffix(suffix) {
            return f;
        }
    }
    name
}

#[test]
fn the_rules_file_has_what_prometheus_and_an_operator_need() {
    let docs = YamlLoader::load_from_str(&shipped("deploy/prometheus/chain-co.rules.yml"))
        .expect("the rules file is YAML");
    let groups = docs[0]["groups"].as_vec().expect("groups");
    let mut alerts = Vec::new();
    for g in groups {
        assert!(g["name"].as_str().is_some(), "a group needs a name");
        for r in g["rules"].as_vec().expect("rules") {
            let alert = r["alert"].as_str().expect("alert name");
            let expr = r["expr"].as_str().expect("expr");
            assert!(!expr.trim().is_empty(), "{alert}: empty expr");
            if let Some(f) = r["for"].as_str() {
                humantime::parse_duration(f).unwrap_or_else(|e| panic!("{alert}: for {f}: {e}"));
            }
            assert!(
                matches!(
                    r["labels"]["severity"].as_str(),
                    Some("critical" | "warning")
                ),
                "{alert}: severity"
            );
            for key in ["summary", "runbook"] {
                assert!(
                    r["annotations"][key].as_str().is_some_and(|t| t.len() > 20),
                    "{alert}: annotations.{key}"
                );
            }
            if let Yaml::Hash(h) = r {
                for k in h.keys() {
                    let k = k.as_str().unwrap_or("");
                    assert!(
                        [
                            "alert",
                            "expr",
                            "for",
                            "labels",
                            "annotations",
                            "keep_firing_for"
                        ]
                        .contains(&k),
                        "{alert}: unknown rule field {k}"
                    );
                }
            }
            alerts.push(alert.to_string());
        }
    }
    for wanted in [
        "ChainCoNoPrimary",
        "ChainCoPoolStale",
        "ChainCoPrimaryFlapping",
        "ChainCoNodeDown",
        "ChainCoApplyFailing",
        "ChainCoImplementationSplit",
        "ChainCoDown",
    ] {
        assert!(
            alerts.iter().any(|a| a == wanted),
            "no {wanted} in {alerts:?}"
        );
    }
}

#[tokio::test]
async fn every_metric_and_label_the_rules_and_dashboard_use_is_exported() {
    let sim = Sim::start(&["a", "b", "c"], "1s");
    let dir = tempfile::tempdir().expect("tempdir");
    let nginx = start_nginx(dir.path(), &[sim.addr("a")]);
    let config = write_config(
        dir.path(),
        &sim,
        &nginx,
        "[probe]\ninterval = \"300ms\"\ntimeout = \"250ms\"\n[select]\nrise = 1\nfall = 1\n",
    );
    let run = start_run(&config);
    let api = api_url(&run).await;
    wait_healthy(&api, &run).await;
    // Errors and a switch, so that the labelled families have samples.
    let primary = primary_name(&sim, &nginx.upstream_file);
    sim.op(&primary, r#"{"op":"die"}"#).await;
    let moved = wait_until(Duration::from_secs(10), || {
        primary_in(&nginx.upstream_file).is_some_and(|p| p != sim.addr(&primary))
    })
    .await;
    assert!(moved.is_some(), "{}", run.stderr());
    rounds_pass(&api, 2).await;
    let text = reqwest::get(format!("{api}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    // Family → label names seen on its samples.
    let mut exported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap_or("");
            exported.entry(name.to_string()).or_default();
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let fam = family(&line[..name_end]).to_string();
            if let Some(open) = line.find('{') {
                let close = line.find('}').unwrap_or(line.len());
                for pair in line[open + 1..close].split(',') {
                    if let Some((k, _)) = pair.split_once('=') {
                        exported
                            .entry(fam.clone())
                            .or_default()
                            .insert(k.to_string());
                    }
                }
            }
        }
    }
    let mut exprs: Vec<String> = Vec::new();
    let rules =
        YamlLoader::load_from_str(&shipped("deploy/prometheus/chain-co.rules.yml")).expect("YAML");
    for g in rules[0]["groups"].as_vec().expect("groups") {
        for r in g["rules"].as_vec().expect("rules") {
            exprs.push(r["expr"].as_str().expect("expr").to_string());
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&shipped("deploy/grafana/chain-co.json")).expect("dashboard JSON");
    for p in dashboard["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    let mut checked = 0;
    for expr in &exprs {
        for (name, labels) in used(expr) {
            let fam = family(&name);
            let have = exported
                .get(fam)
                .unwrap_or_else(|| panic!("{name} (in {expr}) is not exported:\n{text}"));
            for l in labels {
                if ["instance", "job", "le"].contains(&l.as_str()) {
                    continue;
                }
                assert!(
                    have.contains(&l),
                    "{name} has no label {l} (in {expr}):\n{text}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} uses checked");
}

/// `[ha] track_file`: the nginx watch's view is a metric too, `chain_co_nginx_up`, labelled
/// with the pid file it watches: 1 while nginx runs with an accepted configuration, 0 from the
/// moment its master dies (the track file says 1 then).
#[tokio::test]
async fn nginx_up_follows_the_master_the_watch_sees() {
    let sim = Sim::start(&["a", "b"], "1s");
    let dir = tempfile::tempdir().expect("tempdir");
    let nginx = start_nginx(dir.path(), &[sim.addr("a")]);
    let track = dir.path().join("nginx-down");
    let config = write_config(
        dir.path(),
        &sim,
        &nginx,
        &format!("[ha]\ntrack_file = {:?}\n", track.display().to_string()),
    );
    let run = start_run(&config);
    let api = api_url(&run).await;
    let series = format!(
        "chain_co_nginx_up{{pid_file=\"{}\"}}",
        nginx.pid_file.display()
    );
    let metric = |text: &str| {
        text.lines()
            .find(|l| l.starts_with(&series))
            .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
    };
    let mut seen = None;
    for _ in 0..50 {
        seen = metric(&metrics_text(&api).await);
        if seen.as_deref() == Some("1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen.as_deref(), Some("1"), "{}", run.stderr());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(nginx.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill nginx's master");
    for _ in 0..50 {
        seen = metric(&metrics_text(&api).await);
        if seen.as_deref() == Some("0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen.as_deref(), Some("0"), "{}", run.stderr());
    assert_eq!(std::fs::read_to_string(&track).expect("track").trim(), "1");
}

async fn metrics_text(api: &str) -> String {
    reqwest::get(format!("{api}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body")
}

//! `chain-co check`: the dry run. Probes the pool as `run` would, prints the decision and the
//! nginx config it would publish, and touches nothing.
//!
//! Hysteresis needs `rise` good probes before a node is used, so the check probes `rise` rounds
//! back to back (a short pause between them) instead of waiting whole intervals.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use serde::Serialize;

use crate::apply::UpstreamPlan;
use crate::config::Config;
use crate::decide::clock::SteadyClock;
use crate::decide::evaluate::{merge_pushed_heads, Evaluator};
use crate::decide::overrides::Overrides;
use crate::probe::Round;

use crate::decide::select::{Decision, Exclusion, Role, Trigger, Warning, WarningKind};
use crate::probe::rpc::RpcError;

/// Pause between the rounds of a check.
const ROUND_GAP: Duration = Duration::from_millis(200);

/// What `check` found, as printed with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub primary: Option<String>,
    pub backups: Vec<String>,
    pub nodes: Vec<CheckedNode>,
    /// The upstream file `run` would write, or why there is none.
    pub rendered: Option<String>,
    pub render_error: Option<String>,
    pub output: String,
    pub network: Option<String>,
    pub best_height: Option<u64>,
    pub expected_height: Option<u64>,
    /// Pool-wide trouble: stale pool, network tie, implementation split, finality.
    pub warnings: Vec<Warning>,
    /// The newest tipset two nodes' F3 finalized; `None` in a pool without F3.
    pub finalized: Option<crate::probe::f3::TipsetRef>,
    /// This host's VRRP role, when `[ha]` is configured.
    pub role: Option<crate::apply::ha::VrrpRole>,
    /// With `[messages]`: whose messages `run` would follow, and what would keep them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<CheckedMessages>,
}

/// `[messages]` as `check` finds it: the accounts resolved as `run` resolves them, and each
/// node's write permission for `MpoolPush`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckedMessages {
    pub senders: Vec<crate::apply::senders::Sender>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckedNode {
    pub name: String,
    pub url: String,
    pub implementation: Option<String>,
    pub version: Option<String>,
    pub network: Option<String>,
    pub height: Option<u64>,
    pub lag: Option<u64>,
    pub healthy: bool,
    pub role: Role,
    pub reason: String,
    #[serde(with = "crate::duration::opt")]
    pub latency: Option<Duration>,
    /// The same, in milliseconds, for machines.
    pub latency_ms: Option<f64>,
    /// Optional methods the node lacks; their checks are off for it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unsupported: Vec<crate::probe::OptionalMethod>,
    /// The epoch the node says is final, and its F3 in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finalized_epoch: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f3: Option<String>,
    /// Whether its head's headers hash to their CIDs: verified, unverified or failed, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<String>,
    /// What the daemon says about itself (health endpoint, `NodeStatus`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub own_word: Option<crate::probe::health::OwnWord>,
    /// Whether it accepts the clients' token (`[chain] client_token_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_token: Option<crate::probe::health::ClientToken>,
}

/// Probes `rounds` times and reports the last decision.
pub async fn check(config: &Config, rounds: u32) -> anyhow::Result<CheckReport> {
    let prober = config.prober()?;
    let target = config.build_target()?;
    // The operator's drains and preference, as `run` would see them.
    let overrides = Overrides::load(&config.api.state_file).unwrap_or_default();
    // The same evaluation as `run` (without push subscriptions: a dry run polls only), on the
    // same kind of clock.
    let mut evaluator = Evaluator::default();
    let mut clock = SteadyClock::new(Duration::from_secs(60));
    let no_push = std::collections::BTreeMap::new();
    let mut last = None;
    for i in 0..rounds.max(1) {
        if i > 0 {
            tokio::time::sleep(ROUND_GAP).await;
        }
        let round = merge_pushed_heads(prober.round().await, &no_push);
        let (now, _) = clock.now();
        let evaluation = evaluator.evaluate(
            &config.select,
            &config.chain,
            &overrides,
            &round,
            &no_push,
            now,
            Trigger::Probe,
        );
        // The next rounds check each node's chain at the epoch the pool finalized.
        prober.set_pool_finalized(evaluation.decision.finalized.as_ref().map(|f| f.epoch));
        last = Some((round, evaluation.decision));
    }
    let (round, decision) = last.expect("at least one round ran");
    let nodes = checked_nodes(config, &decision, &round);
    let (rendered, render_error) = match UpstreamPlan::from_decision(&decision, &config.upstreams())
    {
        Some(plan) => match target.preview(&plan) {
            Ok(text) => (Some(text), None),
            Err(e) => (None, Some(e.to_string())),
        },
        None => (
            None,
            Some("no healthy node: run would keep the current file (fail static)".into()),
        ),
    };
    let mut warnings = decision.warnings.clone();
    warnings.extend(token_rejected(&decision));
    let messages = if config.carries_messages() {
        Some(check_messages(config, decision.primary.as_deref()).await?)
    } else {
        None
    };
    Ok(CheckReport {
        primary: decision.primary.clone(),
        backups: decision.backups.clone(),
        nodes,
        rendered,
        render_error,
        output: target.describe(),
        network: decision.network,
        best_height: decision.best_height,
        expected_height: decision.expected_height,
        warnings,
        finalized: decision.finalized.clone(),
        role: config.ha.as_ref().map(crate::apply::ha::read_role),
        messages,
    })
}

/// The accounts (asked of the primary first) and every node's write permission, as `run`
/// finds them at start.
async fn check_messages(config: &Config, primary: Option<&str>) -> anyhow::Result<CheckedMessages> {
    use crate::apply::{messages, senders};
    let rpc =
        crate::probe::rpc::RpcClient::new(config.probe.timeout, config.probe.max_reply_bytes)?;
    let mut nodes = crate::serve::carry::daemons(config);
    nodes.sort_by_key(|d| Some(d.name.as_str()) != primary);
    let mut problems = Vec::new();
    let configured = &config.message_addresses;
    let senders =
        match senders::resolve_on_any(&rpc, &nodes, configured, config.message_miner.as_deref())
            .await
        {
            Ok(s) => s,
            Err(p) => {
                problems.push(p);
                configured
                    .iter()
                    .map(|a| senders::Sender::configured(a))
                    .collect()
            }
        };
    for d in &nodes {
        problems.extend(messages::write_problem(&rpc, d).await);
    }
    Ok(CheckedMessages { senders, problems })
}

/// Each node as `check` reports it.
fn checked_nodes(config: &Config, decision: &Decision, round: &Round) -> Vec<CheckedNode> {
    decision
        .nodes
        .iter()
        .enumerate()
        .map(|(i, v)| CheckedNode {
            name: v.name.clone(),
            url: crate::secret::redact_url(config.nodes[i].url.as_str()),
            implementation: v.implementation.clone(),
            version: v.version.clone(),
            network: v.network.clone(),
            height: v.height,
            lag: v.lag,
            healthy: v.healthy,
            role: v.role,
            reason: v.reason.clone(),
            latency: Some(round.latencies[i]),
            latency_ms: Some(crate::duration::ms(round.latencies[i])),
            unsupported: v.unsupported.clone(),
            finalized_epoch: v.finalized_epoch,
            f3: v.f3.clone(),
            headers: v.headers.clone(),
            own_word: v.own_word.clone(),
            client_token: v.client_token,
        })
        .collect()
}

/// Nodes that refused the configured token (401/403), in one warning.
fn token_rejected(decision: &Decision) -> Option<Warning> {
    let rejected: Vec<&str> = decision
        .nodes
        .iter()
        .filter(|v| {
            matches!(
                v.exclusion,
                Some(Exclusion::Probe(RpcError::Http { status: 401 | 403 }))
            )
        })
        .map(|v| v.name.as_str())
        .collect();
    (!rejected.is_empty()).then(|| {
        Warning::new(
            WarningKind::TokenRejected,
            format!(
            "{} rejected the configured token. Clients send one token through nginx to whichever \
             node is primary, so every daemon of the pool must accept the same token: share the \
             JWT secret between them (with Venus, use one sophon-auth service)",
            rejected.join(", ")
        ),
        )
    })
}

/// The human form of a report: a table, the choice, the file.
pub fn render_text(r: &CheckReport) -> String {
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let paint = super::table::paint(colour);
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rows: Vec<(Role, Vec<String>)> = r
        .nodes
        .iter()
        .map(|n| {
            let cells = vec![
                n.name.clone(),
                match (&n.implementation, &n.version) {
                    (Some(i), Some(v)) => format!("{i} {v}"),
                    _ => "-".into(),
                },
                dash(n.height.map(|h| h.to_string())),
                dash(n.lag.map(|l| l.to_string())),
                dash(n.finalized_epoch.map(|e| e.to_string())),
                super::table::role_word(n.role).into(),
                dash(n.latency.map(crate::duration::human)),
                n.reason.clone(),
            ];
            (n.role, cells)
        })
        .collect();
    let header = [
        "NODE",
        "IMPLEMENTATION",
        "HEIGHT",
        "LAG",
        "FINALIZED",
        "STATE",
        "LATENCY",
        "REASON",
    ];
    let mut out = super::table::render(&header, &rows, colour);
    out.push('\n');
    if let Some(n) = &r.network {
        let _ = writeln!(
            out,
            "network: {n}, best height {}, expected by the clock {}",
            r.best_height.map_or("-".into(), |h| h.to_string()),
            r.expected_height.map_or("-".into(), |h| h.to_string())
        );
    }
    if let Some(f) = &r.finalized {
        let _ = writeln!(out, "finalized (F3, by two nodes or more): {f}");
    }
    out.push_str(&crate::serve::report::node_detail_lines(
        r.nodes.iter().map(|n| crate::serve::report::NodeDetail {
            name: &n.name,
            f3: n.f3.as_deref(),
            headers: n.headers.as_deref(),
            own: n.own_word.as_ref(),
        }),
    ));
    if let Some(role) = &r.role {
        let _ = writeln!(out, "VRRP role: {role}");
    }
    if let Some(m) = &r.messages {
        let _ = writeln!(
            out,
            "pending messages follow a switch for: {}",
            crate::text::inert(&crate::apply::senders::describe(&m.senders), 400)
        );
        for p in &m.problems {
            let _ = writeln!(
                out,
                "{}",
                paint("1;33", &format!("WARNING: {}", crate::text::inert(p, 400)))
            );
        }
    }
    for w in &r.warnings {
        let _ = writeln!(out, "{}", paint("1;33", &format!("WARNING: {w}")));
    }
    let _ = writeln!(
        out,
        "primary: {}",
        r.primary
            .as_deref()
            .map_or_else(|| paint("1;31", "none"), |p| paint("1;32", p))
    );
    let _ = writeln!(
        out,
        "backups: {}",
        if r.backups.is_empty() {
            "none".to_string()
        } else {
            r.backups.join(", ")
        }
    );
    match (&r.rendered, &r.render_error) {
        (Some(text), _) => {
            let _ = write!(out, "\n# would write {}:\n{text}", r.output);
        }
        (None, Some(e)) => {
            let _ = writeln!(out, "\nnothing to write: {e}");
        }
        (None, None) => {}
    }
    out
}

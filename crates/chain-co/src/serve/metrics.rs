//! Prometheus metrics, in the text format served at `/metrics`.
//!
//! Names follow the Prometheus conventions: the `chain_co_` prefix, base units in the name
//! (`_seconds`, `_epochs`), `_total` on counters. Per-node series carry a `node` label; the
//! probe errors also a `reason` (the kind of error, never its text, to keep cardinality fixed).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::decide::select::{ProofState, Role};
use crate::probe::rpc::RpcError;
use crate::serve::report::{ApplyRecord, Report};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum ErrorKind {
    timeout,
    connect,
    http,
    too_large,
    not_json,
    rpc,
    shape,
    transport,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApplyLabel {
    target: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PidFileLabel {
    pid_file: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    node: String,
    reason: ErrorKind,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric chain-co exports.
pub struct Metrics {
    registry: Registry,
    height: Family<NodeLabel, Gauge>,
    finalized: Family<NodeLabel, Gauge>,
    says_ready: Family<NodeLabel, Gauge>,
    headers_verified: Family<NodeLabel, Gauge>,
    pool_finalized: Gauge,
    finality_stalled: Gauge,
    lag: Family<NodeLabel, Gauge>,
    head_age: Family<NodeLabel, FloatGauge>,
    probe_duration: Family<NodeLabel, Histogram>,
    probe_errors: Family<ErrorLabel, Counter>,
    healthy: Family<NodeLabel, Gauge>,
    behind: Family<NodeLabel, FloatGauge>,
    pushed: Family<NodeLabel, Gauge>,
    primary: Family<NodeLabel, Gauge>,
    switches: Counter,
    reloads: Counter,
    sessions_moved: Counter,
    messages_carried: Counter,
    nginx_up: Family<PidFileLabel, Gauge>,
    applies: Family<ApplyLabel, Counter>,
    /// Node labels that have series, so that a node leaving the config takes them along.
    nodes_seen: std::sync::Mutex<std::collections::BTreeSet<String>>,
    failed_applies: Counter,
    rounds: Counter,
    round_seconds: FloatGauge,
    warnings: Gauge,
    no_primary: Gauge,
    pool_stale: Gauge,
    implementation_split: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("chain_co");
        let m = Metrics {
            height: Family::default(),
            finalized: Family::default(),
            says_ready: Family::default(),
            headers_verified: Family::default(),
            pool_finalized: Gauge::default(),
            finality_stalled: Gauge::default(),
            lag: Family::default(),
            head_age: Family::default(),
            probe_duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            }),
            probe_errors: Family::default(),
            healthy: Family::default(),
            behind: Family::default(),
            pushed: Family::default(),
            primary: Family::default(),
            switches: Counter::default(),
            reloads: Counter::default(),
            sessions_moved: Counter::default(),
            messages_carried: Counter::default(),
            nginx_up: Family::default(),
            applies: Family::default(),
            nodes_seen: Default::default(),
            failed_applies: Counter::default(),
            rounds: Counter::default(),
            round_seconds: FloatGauge::default(),
            warnings: Gauge::default(),
            no_primary: Gauge::default(),
            pool_stale: Gauge::default(),
            implementation_split: Gauge::default(),
            registry: Registry::default(),
        };
        m.register_nodes(&mut registry);
        m.register_pool(&mut registry);
        Metrics { registry, ..m }
    }

    /// The first half of the series (per node, mostly), by name and help text.
    fn register_nodes(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "node_height",
            "Height of the node's head (epochs)",
            m.height.clone(),
        );
        registry.register(
            "finalized_epoch",
            "The epoch the node says is final (its F3 certificate's, else its finalized tipset)",
            m.finalized.clone(),
        );
        registry.register(
            "node_says_ready",
            "1 while the daemon's own health endpoint says it is ready, 0 while it says it is not (absent: it says nothing)",
            m.says_ready.clone(),
        );
        registry.register(
            "headers_verified",
            "1 while the node's head's block headers hash to their CIDs, 0 while unverified (not checked, or a failure nothing proves), -1 when a proven failure excludes it",
            m.headers_verified.clone(),
        );
        registry.register(
            "pool_finalized_epoch",
            "The newest epoch at least two nodes' F3 finalized (absent in a pool without F3)",
            m.pool_finalized.clone(),
        );
        registry.register(
            "nginx_up",
            "1 while nginx's master (by its pid file) runs with a configuration test_cmd accepts, 0 while it is dead or refused: what keepalived's track file says (absent: no [ha] track_file watch)",
            m.nginx_up.clone(),
        );
        registry.register(
            "finality_stalled",
            "1 while the pool's finalized epoch trails its best head by more than finality_stall_after",
            m.finality_stalled.clone(),
        );
        registry.register(
            "node_lag_epochs",
            "Epochs the node's head is below the best head",
            m.lag.clone(),
        );
        registry.register(
            "node_head_age_seconds",
            "Wall-clock age of the node's head block",
            m.head_age.clone(),
        );
        registry.register(
            "probe_duration_seconds",
            "Duration of one probe of one node",
            m.probe_duration.clone(),
        );
        registry.register(
            "probe_errors",
            "Failed probes by kind of error",
            m.probe_errors.clone(),
        );
        registry.register(
            "node_healthy",
            "1 when the node is in the upstream (after rise/fall)",
            m.healthy.clone(),
        );
        registry.register("node_primary", "1 for the primary node", m.primary.clone());
        registry.register(
            "node_behind_seconds",
            "How long the node has been behind the best head (0 when it is not)",
            m.behind.clone(),
        );
    }

    /// The other half (the pool, the applies, the build).
    fn register_pool(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "node_push_subscribed",
            "1 when the node's ChainNotify subscription is up (push), 0 when polled only",
            m.pushed.clone(),
        );
        registry.register("primary_switches", "Changes of primary", m.switches.clone());
        registry.register(
            "nginx_reloads",
            "nginx reloads after a new upstream",
            m.reloads.clone(),
        );
        registry.register(
            "applies",
            "Applies that did something, by target (nginx, haproxy, slb) and result (reloaded: nginx reloaded; changed: set without a reload; deferred; held; standby; failed)",
            m.applies.clone(),
        );
        registry.register(
            "sessions_moved",
            "Load-balancer connections ended to move their sessions to the primary",
            m.sessions_moved.clone(),
        );
        registry.register(
            "messages_carried",
            "Pending signed messages of the followed accounts pushed to another node: carried to a new primary at a switch, or relayed to a node that lacked them between switches",
            m.messages_carried.clone(),
        );
        registry.register(
            "apply_failures",
            "Applies that failed (nginx -t refused, write or reload failed)",
            m.failed_applies.clone(),
        );
        registry.register("probe_rounds", "Completed probe rounds", m.rounds.clone());
        registry.register(
            "probe_round_seconds",
            "Duration of the last probe round (all nodes, concurrently)",
            m.round_seconds.clone(),
        );
        registry.register(
            "pool_warnings",
            "Pool-wide warnings now (stale pool, network tie, implementation split)",
            m.warnings.clone(),
        );
        registry.register(
            "no_primary",
            "1 when no node is healthy and the last upstream is kept (fail static)",
            m.no_primary.clone(),
        );
        registry.register(
            "pool_stale",
            "1 when the best head is older than stale_after by the wall clock",
            m.pool_stale.clone(),
        );
        registry.register(
            "implementation_split",
            "1 when implementations have disagreed on the chain for a few epochs",
            m.implementation_split.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
    }

    /// Records how long the last probe round took.
    pub(crate) fn round_took(&self, took: Duration) {
        self.round_seconds.set(took.as_secs_f64());
    }

    pub(crate) fn observe(
        &self,
        report: &Report,
        latencies: &[(String, Duration, Option<&RpcError>)],
    ) {
        if !latencies.is_empty() {
            self.rounds.inc();
        }
        {
            let mut seen = self.nodes_seen.lock().expect("nodes lock");
            for v in &report.decision.nodes {
                if !seen.contains(&v.name) {
                    seen.insert(v.name.clone());
                }
            }
        }
        self.observe_nodes(report);
        self.observe_probes(latencies);
        if report
            .decision
            .switch
            .as_ref()
            .is_some_and(|s| s.to.is_some())
        {
            self.switches.inc();
        }
        self.observe_apply(report);
        self.warnings.set(report.decision.warnings.len() as i64);
        self.pool_stale.set(i64::from(report.decision.pool_stale));
        if let Some(f) = &report.decision.finalized {
            self.pool_finalized.set(f.epoch as i64);
        }
        self.finality_stalled.set(i64::from(
            report
                .decision
                .warnings
                .iter()
                .any(|w| w.kind == crate::decide::select::WarningKind::FinalityStalled),
        ));
        self.implementation_split
            .set(i64::from(report.decision.implementation_split));
        self.no_primary
            .set(i64::from(report.decision.primary.is_none()));
    }

    /// Per node: height, lag, finality, readiness, head age, health, push, role.
    fn observe_nodes(&self, report: &Report) {
        for v in &report.decision.nodes {
            let l = NodeLabel {
                node: v.name.clone(),
            };
            if let Some(h) = v.height {
                self.height.get_or_create(&l).set(h as i64);
            }
            if let Some(lag) = v.lag {
                self.lag.get_or_create(&l).set(lag as i64);
            }
            match v.finalized_epoch {
                Some(e) => {
                    self.finalized.get_or_create(&l).set(e as i64);
                }
                None => {
                    self.finalized.remove(&l);
                }
            }
            match v.own_word.as_ref().and_then(|w| w.ready()) {
                Some(ready) => {
                    self.says_ready.get_or_create(&l).set(i64::from(ready));
                }
                None => {
                    self.says_ready.remove(&l);
                }
            }
            match v.proof {
                Some(state) => {
                    let value = match state {
                        ProofState::Verified => 1,
                        ProofState::Unverified => 0,
                        ProofState::Failed => -1,
                    };
                    self.headers_verified.get_or_create(&l).set(value);
                }
                None => {
                    self.headers_verified.remove(&l);
                }
            }
            if let Some(age) = v.head_age {
                self.head_age.get_or_create(&l).set(age.as_secs_f64());
            }
            self.healthy.get_or_create(&l).set(i64::from(v.healthy));
            self.behind
                .get_or_create(&l)
                .set(v.behind.map_or(0.0, |d| d.as_secs_f64()));
            let subscribed = report
                .push
                .get(&v.name)
                .is_some_and(|(s, _)| *s == crate::probe::push::PushStatus::Subscribed);
            self.pushed.get_or_create(&l).set(i64::from(subscribed));
            self.primary
                .get_or_create(&l)
                .set(i64::from(v.role == Role::Primary));
        }
    }

    /// Per probe: its duration, and its error by kind.
    fn observe_probes(&self, latencies: &[(String, Duration, Option<&RpcError>)]) {
        for (node, latency, error) in latencies {
            let l = NodeLabel { node: node.clone() };
            self.probe_duration
                .get_or_create(&l)
                .observe(latency.as_secs_f64());
            if let Some(e) = error {
                let reason = match e {
                    RpcError::Timeout(_) => ErrorKind::timeout,
                    RpcError::Connect(_) => ErrorKind::connect,
                    RpcError::Http { .. } => ErrorKind::http,
                    RpcError::TooLarge { .. } => ErrorKind::too_large,
                    RpcError::NotJson(_) => ErrorKind::not_json,
                    RpcError::Rpc { .. } => ErrorKind::rpc,
                    RpcError::Shape(_) => ErrorKind::shape,
                    RpcError::Transport(_) => ErrorKind::transport,
                };
                self.probe_errors
                    .get_or_create(&ErrorLabel {
                        node: node.clone(),
                        reason,
                    })
                    .inc();
            }
        }
    }

    /// The apply's result, per target.
    fn observe_apply(&self, report: &Report) {
        let result = match report.apply {
            ApplyRecord::Unchanged => None,
            ApplyRecord::Deferred => Some("deferred"),
            ApplyRecord::Reloaded => Some("reloaded"),
            ApplyRecord::Changed => Some("changed"),
            ApplyRecord::Held { .. } => Some("held"),
            ApplyRecord::Standby { .. } => Some("standby"),
            ApplyRecord::Failed { .. } => Some("failed"),
        };
        if let Some(result) = result {
            self.applies
                .get_or_create(&ApplyLabel {
                    target: report.target.to_string(),
                    result: result.to_string(),
                })
                .inc();
        }
        match report.apply {
            ApplyRecord::Reloaded => {
                self.reloads.inc();
            }
            ApplyRecord::Failed { .. } => {
                self.failed_applies.inc();
            }
            _ => {}
        }
    }

    /// Drops every per-node series of nodes that are no longer configured, so that a removed
    /// node cannot linger as a second `chain_co_node_primary = 1` on a dashboard.
    pub(crate) fn retain_nodes(&self, nodes: &[&str]) {
        let mut seen = self.nodes_seen.lock().expect("nodes lock");
        let gone: Vec<String> = seen
            .iter()
            .filter(|n| !nodes.contains(&n.as_str()))
            .cloned()
            .collect();
        for node in gone {
            let l = NodeLabel { node: node.clone() };
            self.height.remove(&l);
            self.finalized.remove(&l);
            self.says_ready.remove(&l);
            self.headers_verified.remove(&l);
            self.lag.remove(&l);
            self.head_age.remove(&l);
            self.probe_duration.remove(&l);
            self.healthy.remove(&l);
            self.behind.remove(&l);
            self.pushed.remove(&l);
            self.primary.remove(&l);
            for reason in [
                ErrorKind::timeout,
                ErrorKind::connect,
                ErrorKind::http,
                ErrorKind::too_large,
                ErrorKind::not_json,
                ErrorKind::rpc,
                ErrorKind::shape,
                ErrorKind::transport,
            ] {
                self.probe_errors.remove(&ErrorLabel {
                    node: node.clone(),
                    reason,
                });
            }
            seen.remove(&node);
        }
    }

    /// Counts connections ended to move sessions.
    pub(crate) fn sessions_moved(&self, n: u64) {
        self.sessions_moved.inc_by(n);
    }

    /// What the nginx watch saw of the master named by `pid_file`.
    pub(crate) fn nginx_up(&self, pid_file: &std::path::Path, up: bool) {
        self.nginx_up
            .get_or_create(&PidFileLabel {
                pid_file: pid_file.display().to_string(),
            })
            .set(i64::from(up));
    }

    /// Counts pending messages carried to a new primary, or relayed to a node lacking them.
    pub(crate) fn messages_carried(&self, n: u64) {
        self.messages_carried.inc_by(n);
    }

    /// The text exposition format.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

//! The loop of `chain-co run`: every interval, probe → select → apply, and publish what
//! happened.
//!
//! One round at a time, so at most one apply (and one nginx reload) per interval: the rate limit
//! on reloads is the loop itself. Shutdown is checked between steps only: an apply in progress
//! always finishes, so nothing is left half-written.

use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::apply::nginx::{Applied, Nginx, NginxError};
use crate::apply::UpstreamPlan;
use crate::config::Config;
use crate::probe::{Prober, Round, Target};
use crate::rpc::{RpcClient, RpcError};
use crate::select::{select, Decision, SelectState};

/// The outcome of the last apply, as shown in status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum ApplyRecord {
    /// Nothing was published: no healthy node (fail static).
    Held {
        reason: String,
    },
    Unchanged,
    Reloaded,
    Failed {
        error: String,
    },
}

/// What one round found and did; sent to watchers (the demo, later the status API).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub round: u64,
    pub decision: Decision,
    pub apply: ApplyRecord,
    pub reloads: u64,
    pub failed_applies: u64,
}

/// The parts of a running chain-co, built from a config.
pub struct Daemon {
    config: Config,
    prober: Prober,
    nginx: Nginx,
    state: SelectState,
    round: u64,
    reloads: u64,
    failed_applies: u64,
    last_error: Option<String>,
}

impl Daemon {
    pub fn new(config: Config) -> Result<Self, DaemonError> {
        let client = RpcClient::new(config.probe.timeout, config.probe.max_reply_bytes)
            .map_err(DaemonError::Client)?;
        let prober = Prober::new(
            client,
            config.nodes.iter().map(Target::from).collect(),
            config.probe.sync_checks,
        );
        let nginx = Nginx::new(config.nginx.clone()).map_err(DaemonError::Nginx)?;
        Ok(Daemon {
            config,
            prober,
            nginx,
            state: SelectState::default(),
            round: 0,
            reloads: 0,
            failed_applies: 0,
            last_error: None,
        })
    }

    /// Checks the environment before the first round.
    pub fn preflight(&self) -> Result<(), DaemonError> {
        self.nginx.preflight().map_err(DaemonError::Nginx)
    }

    /// Runs until `shutdown` is cancelled, sending a report after every round.
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        reports: watch::Sender<Option<Report>>,
    ) {
        let mut ticker = tokio::time::interval(self.config.probe.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(
            nodes = self.config.nodes.len(),
            interval = %humantime::format_duration(self.config.probe.interval),
            output = %self.nginx.output().display(),
            "chain-co running"
        );
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let round = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.prober.round() => r,
            };
            let report = self.step(round).await;
            reports.send_replace(Some(report));
        }
        info!("chain-co stopped");
    }

    /// One round after probing: decide, log changes, apply.
    pub async fn step(&mut self, round: Round) -> Report {
        self.round += 1;
        let (decision, next) = select(
            &self.config.select,
            &self.config.chain,
            &self.state,
            &round.observations,
            SystemTime::now(),
        );
        self.log_changes(&decision);
        self.state = next;

        let apply = match UpstreamPlan::from_decision(&decision, &self.config.nodes) {
            None => ApplyRecord::Held {
                reason: "no healthy node; the last published upstream stays".into(),
            },
            Some(plan) => match self.nginx.apply(&plan).await {
                Ok(Applied::Unchanged) => {
                    self.last_error = None;
                    ApplyRecord::Unchanged
                }
                Ok(Applied::Reloaded) => {
                    self.reloads += 1;
                    self.last_error = None;
                    let backups: Vec<&str> = plan.backups.iter().map(|b| b.name.as_str()).collect();
                    info!(
                        primary = %plan.primary.name,
                        backups = ?backups,
                        output = %self.nginx.output().display(),
                        "nginx upstream updated and reloaded"
                    );
                    ApplyRecord::Reloaded
                }
                Err(e) => {
                    self.failed_applies += 1;
                    self.log_apply_error(&e);
                    ApplyRecord::Failed {
                        error: e.to_string(),
                    }
                }
            },
        };
        Report {
            round: self.round,
            decision,
            apply,
            reloads: self.reloads,
            failed_applies: self.failed_applies,
        }
    }

    /// State changes only: a primary switch, a node going up or down. Never per tick.
    fn log_changes(&self, d: &Decision) {
        for v in &d.nodes {
            let was_up = self.state.tracks.get(&v.name).is_some_and(|t| t.up);
            if v.healthy && !was_up {
                info!(node = %v.name, height = ?v.height, "node up");
            } else if !v.healthy && was_up {
                warn!(node = %v.name, reason = %v.reason, "node down");
            }
        }
        if let Some(s) = &d.switch {
            match &s.to {
                Some(to) => info!(
                    from = s.from.as_deref().unwrap_or("none"),
                    to = %to,
                    why = %s.why,
                    "primary changed"
                ),
                None => error!(
                    from = s.from.as_deref().unwrap_or("none"),
                    why = %s.why,
                    "no healthy node: failing static"
                ),
            }
        }
    }

    /// The same failure every round is logged once, not every interval.
    fn log_apply_error(&mut self, e: &NginxError) {
        let msg = e.to_string();
        if self.last_error.as_deref() != Some(msg.as_str()) {
            error!(error = %msg, "apply failed");
            self.last_error = Some(msg);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot build the HTTP client: {0}")]
    Client(RpcError),
    #[error("{0}")]
    Nginx(NginxError),
}

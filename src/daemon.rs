//! The loop of `chain-co run`: every interval, probe → select → apply, and publish what
//! happened.
//!
//! One round at a time, so at most one apply (and one nginx reload) per interval: the rate limit
//! on reloads is the loop itself. Shutdown is checked between steps only: an apply in progress
//! always finishes, so nothing is left half-written.
//!
//! A new configuration (SIGHUP or a change of the file) is read and validated first; an invalid
//! one is refused and the running one stays. A valid one replaces the nodes and rules without
//! losing what is known of nodes that did not change (their rise/fall counters).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::api::Shared;
use crate::apply::{Applied, ApplyError, SessionMode, Target as ApplyTarget};
use crate::apply::{UpstreamPlan, UpstreamServer};
use crate::clock::{ClockEvent, SteadyClock};
use crate::config::Config;
use crate::ha::{read_role, Role};
use crate::metrics::Metrics;
use crate::overrides::Overrides;
use crate::probe::{Prober, Round, Target};
use crate::push::{PushHub, PushStatus};
use crate::report::{ApplyRecord, Report};
use crate::rpc::{RpcClient, RpcError};
use crate::select::{select, Decision, SelectState, Trigger};

/// The parts of a running chain-co, built from a config.
pub struct Daemon {
    config: Config,
    config_path: Option<PathBuf>,
    prober: Prober,
    target: ApplyTarget,
    state: SelectState,
    shared: Arc<Shared>,
    reports: watch::Sender<Option<Report>>,
    round: u64,
    reloads: u64,
    failed_applies: u64,
    switches: u64,
    primary_since: Option<SystemTime>,
    last_apply: Option<(SystemTime, ApplyRecord)>,
    last_error: Option<String>,
    /// Warnings of the previous round, so that each is logged when it appears, not every round.
    warnings: Vec<String>,
    role: Option<Role>,
    /// The ChainNotify subscriptions, and the token that ends them (on reload or shutdown).
    push: Option<(PushHub, CancellationToken)>,
    tasks: TaskTracker,
    /// The last probe round, which pushed heads refresh between rounds.
    last_round: Option<Round>,
    last_reload_at: Option<std::time::Instant>,
    /// The plan last applied: where sessions go now.
    published: Option<UpstreamPlan>,
    /// Sessions to move once a drain's grace period has passed.
    pending_moves: Vec<(UpstreamServer, tokio::time::Instant)>,
    /// Whether the fallback from destroying sockets has been logged.
    session_fallback_logged: bool,
    /// When a node that is behind will have been behind for lag_grace: evaluate again then,
    /// without waiting for the next push or poll.
    recheck_at: Option<tokio::time::Instant>,
    clock: SteadyClock,
}

fn parts(config: &Config) -> Result<(Prober, ApplyTarget), DaemonError> {
    let client = RpcClient::new(config.probe.timeout, config.probe.max_reply_bytes)
        .map_err(DaemonError::Client)?;
    let prober = Prober::new(
        client,
        config.nodes.iter().map(Target::from).collect(),
        config.probe.sync_checks,
    );
    let target = ApplyTarget::from_config(config).map_err(DaemonError::Apply)?;
    Ok((prober, target))
}

impl Daemon {
    /// A daemon and the state it shares with the API. `config_path` is where a reload reads
    /// the new configuration from.
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
    ) -> Result<(Self, Arc<Shared>), DaemonError> {
        let (prober, target) = parts(&config)?;
        let (overrides, damaged) = Overrides::load_or_set_aside(&config.api.state_file);
        let (tx, rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            reports: rx,
            overrides: Mutex::new(overrides),
            metrics: Metrics::new(),
            state_file: config.api.state_file.clone(),
            token: std::sync::RwLock::new(config.api.token.clone()),
            notices: Mutex::new(Vec::new()),
            mark_writes: tokio::sync::Mutex::new(()),
            max_report_age: config.probe.interval * 2
                + config.probe.timeout
                + Duration::from_secs(1),
        });
        let daemon = Daemon {
            config,
            config_path,
            prober,
            target,
            state: SelectState::default(),
            shared: shared.clone(),
            reports: tx,
            round: 0,
            reloads: 0,
            failed_applies: 0,
            switches: 0,
            primary_since: None,
            last_apply: None,
            last_error: None,
            warnings: Vec::new(),
            role: None,
            push: None,
            tasks: TaskTracker::new(),
            last_round: None,
            last_reload_at: None,
            published: None,
            pending_moves: Vec::new(),
            session_fallback_logged: false,
            recheck_at: None,
            clock: SteadyClock::new(Duration::from_secs(60)),
        };
        if let Some(why) = damaged {
            error!(file = %daemon.config.api.state_file.display(), "damaged state file: {why}");
            shared.notice(format!("state file: {why}"));
        }
        if daemon.config.api.is_open() {
            let text = format!(
                "the status API listens on {} without a token (allow_unauthenticated): anyone who reaches it can drain or prefer nodes",
                daemon.config.api.listen
            );
            warn!("{text}");
            shared.notice(text);
        }
        daemon.check_marks();
        Ok((daemon, shared))
    }

    /// Checks the environment before the first round.
    pub fn preflight(&self) -> Result<(), DaemonError> {
        self.target.preflight().map_err(DaemonError::Apply)
    }

    /// Runs until `shutdown` is cancelled. Each message on `reload` re-reads the config file.
    pub async fn run(mut self, shutdown: CancellationToken, mut reload: mpsc::Receiver<()>) {
        let mut ticker = self.ticker();
        self.start_push(&shutdown);
        if self.target.session_mode() == SessionMode::WorkerShutdownTimeout {
            warn!("no CAP_NET_ADMIN: at a switch the old primary's sessions (miners' websockets) stay on it until nginx's worker_shutdown_timeout; grant the capability (see deploy/systemd) to move them at once");
            self.session_fallback_logged = true;
        }
        info!(
            nodes = self.config.nodes.len(),
            interval = %humantime::format_duration(self.config.probe.interval),
            target = %self.target.describe(),
            "chain-co running"
        );
        loop {
            let pushed = self.push.as_ref().map(|(hub, _)| hub.changed.clone());
            let pushed = async move {
                match pushed {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(()) = reload.recv() => {
                    // Editors write in several steps: let them finish, then read once.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    while reload.try_recv().is_ok() {}
                    if self.reload() {
                        ticker = self.ticker();
                        self.start_push(&shutdown);
                    }
                    continue;
                }
                _ = async {
                    match self.recheck_at {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.recheck_at = None;
                    if let Some(round) = self.last_round.clone() {
                        let report = self.step(round, Trigger::Push).await;
                        self.reports.send_replace(Some(report));
                    }
                    continue;
                }
                _ = async {
                    match self.pending_moves.iter().map(|(_, at)| *at).min() {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.move_due_sessions().await;
                    continue;
                }
                _ = pushed => {
                    if let Some(round) = self.last_round.clone() {
                        let report = self.step(round, Trigger::Push).await;
                        self.reports.send_replace(Some(report));
                    }
                    continue;
                }
                _ = ticker.tick() => {}
            }
            let round = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.prober.round() => r,
            };
            self.shared.metrics.round_took(round.took);
            self.last_round = Some(round.clone());
            let report = self.step(round, Trigger::Probe).await;
            self.reports.send_replace(Some(report));
        }
        if let Some((_, stop)) = self.push.take() {
            stop.cancel();
        }
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
        info!("chain-co stopped");
    }

    /// (Re)starts the ChainNotify subscriptions for the current nodes.
    fn start_push(&mut self, shutdown: &CancellationToken) {
        if let Some((_, stop)) = self.push.take() {
            stop.cancel();
        }
        if self.config.probe.push {
            let stop = shutdown.child_token();
            let hub = PushHub::start(
                self.prober.targets(),
                self.config.probe.max_reply_bytes,
                &self.tasks,
                &stop,
            );
            self.push = Some((hub, stop));
        }
    }

    /// A node behind the heaviest head between polls is either stalled or its subscription
    /// went silent: the two look alike until asked. Ask it now, so that only a real stall
    /// counts against it.
    async fn confirm_behind(&self, round: &mut Round) {
        let top = round
            .observations
            .iter()
            .filter_map(|o| o.result.as_ref().ok().map(|h| h.weight))
            .max();
        let behind: Vec<String> = round
            .observations
            .iter()
            .filter(|o| o.result.as_ref().is_ok_and(|h| Some(h.weight) < top))
            .map(|o| o.node.clone())
            .collect();
        let asked = futures_util::future::join_all(
            behind
                .iter()
                .map(|n| async move { (n.clone(), self.prober.head_of(n).await) }),
        )
        .await;
        for (node, answer) in asked {
            let (Some(o), Some(Ok(head))) = (
                round.observations.iter_mut().find(|o| o.node == node),
                answer,
            ) else {
                continue;
            };
            o.result = Ok(head);
            o.via_push = false;
            o.observed_at = None;
        }
    }

    /// Subscriptions that are up but have delivered nothing for a block delay while the node's
    /// head (by poll) moved on: half-broken nodes, reported so an operator can see them.
    fn silent_subscriptions(&self, round: &Round) -> Vec<String> {
        let Some((hub, _)) = &self.push else {
            return Vec::new();
        };
        let now = SystemTime::now();
        round
            .observations
            .iter()
            .filter(|o| {
                let block_delay = Duration::from_secs(
                    o.identity
                        .as_ref()
                        .and_then(|i| i.block_delay)
                        .unwrap_or(30),
                );
                let Some(state) = hub.get(&o.node) else {
                    return false;
                };
                let (Some(pushed), Ok(known)) = (&state.head, &o.result) else {
                    return false;
                };
                // The last pushed head is two block delays old while polls show a newer one:
                // the subscription missed a whole epoch, not just the one being delivered.
                let pushed_at = std::time::UNIX_EPOCH + Duration::from_secs(pushed.timestamp);
                state.status == PushStatus::Subscribed
                    && known.weight > pushed.weight
                    && now.duration_since(pushed_at).unwrap_or_default() > block_delay * 2
            })
            .map(|o| o.node.clone())
            .collect()
    }

    /// Merges pushed heads into the last polled round, and says how fresh each head is: a live
    /// subscription vouches for its node's head up to now; otherwise the head is as old as the
    /// poll.
    fn with_pushed_heads(&self, mut round: Round) -> Round {
        for o in &mut round.observations {
            o.observed_at = Some(round.at);
            let Some((hub, _)) = &self.push else {
                continue;
            };
            let Some(state) = hub.get(&o.node) else {
                continue;
            };
            let (Some(pushed), PushStatus::Subscribed, Ok(polled)) =
                (state.head, &state.status, &o.result)
            else {
                continue;
            };
            if (polled.weight, polled.height) > (pushed.weight, pushed.height) {
                // The poll saw a head the subscription has not delivered (yet): the head is as
                // old as the poll.
                continue;
            }
            if (pushed.weight, pushed.height) > (polled.weight, polled.height) {
                o.result = Ok(pushed);
                o.via_push = true;
            }
            o.observed_at = None;
        }
        round
    }

    fn ticker(&self) -> tokio::time::Interval {
        let mut t = tokio::time::interval(self.config.probe.interval);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    }

    /// Re-reads the config file; returns whether a new config is now running.
    fn reload(&mut self) -> bool {
        let Some(path) = self.config_path.clone() else {
            return false;
        };
        let config = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e.to_string().trim_end(), "new configuration refused; the running one stays");
                return false;
            }
        };
        let old_api = self.config.api.clone();
        match self.reconfigure(config) {
            Ok(()) => {
                info!(file = %path.display(), nodes = self.config.nodes.len(), "configuration reloaded");
                self.apply_api_change(&old_api);
                self.check_marks();
                let names: Vec<&str> = self.config.nodes.iter().map(|n| n.name.as_str()).collect();
                self.shared.metrics.retain_nodes(&names);
                true
            }
            Err(e) => {
                error!(error = %e, "new configuration refused; the running one stays");
                false
            }
        }
    }

    /// `[api]` after a reload: a new token replaces the old one at once (a rotated token never
    /// stays valid); a new listen address or state file needs a restart, said in the log and in
    /// `/status`, and the running ones stay.
    fn apply_api_change(&mut self, old: &crate::config::ApiConfig) {
        let new = self.config.api.clone();
        if new.token != old.token {
            *self.shared.token.write().expect("token lock") = new.token.clone();
            info!(
                token = if new.token.is_some() { "set" } else { "none" },
                "status API token replaced"
            );
        }
        let mut needs_restart = Vec::new();
        if new.listen != old.listen {
            needs_restart.push(format!(
                "[api] listen changed to {}: needs a restart; the API stays on {}",
                new.listen, old.listen
            ));
        }
        if new.state_file != old.state_file {
            needs_restart.push(format!(
                "[api] state_file changed to {}: needs a restart; marks stay in {}",
                new.state_file.display(),
                old.state_file.display()
            ));
        }
        for text in needs_restart {
            warn!("{text}");
            self.shared.notice(text);
        }
        // Keep what is running for the parts that were not applied.
        self.config.api.listen = old.listen;
        self.config.api.state_file = old.state_file.clone();
    }

    /// Marks for nodes the configuration does not have: kept (the node may come back), said.
    fn check_marks(&self) {
        let known: Vec<&str> = self.config.nodes.iter().map(|n| n.name.as_str()).collect();
        let overrides = self.shared.overrides.lock().expect("overrides lock");
        for node in overrides.unknown_nodes(&known) {
            let text = format!(
                "the state file marks {node}, which is not configured; the mark is kept in case it returns (chain-co undrain/prefer --clear to remove it)"
            );
            warn!("{text}");
            self.shared.notice(text);
        }
    }

    /// Switches to `config`, keeping the hysteresis of nodes whose name and URL did not change.
    pub fn reconfigure(&mut self, config: Config) -> Result<(), DaemonError> {
        let (prober, target) = parts(&config)?;
        let unchanged: Vec<&str> = config
            .nodes
            .iter()
            .filter(|n| {
                self.config
                    .nodes
                    .iter()
                    .any(|o| o.name == n.name && o.url == n.url)
            })
            .map(|n| n.name.as_str())
            .collect();
        self.state
            .tracks
            .retain(|name, _| unchanged.contains(&name.as_str()));
        if self
            .state
            .primary
            .as_deref()
            .is_some_and(|p| !unchanged.contains(&p))
        {
            self.state.primary = None;
        }
        self.prober = prober;
        self.target = target;
        self.config = config;
        Ok(())
    }

    /// One round after probing: decide, log changes, apply.
    pub async fn step(&mut self, round: Round, trigger: Trigger) -> Report {
        let mut round = self.with_pushed_heads(round);
        if trigger == Trigger::Push {
            self.confirm_behind(&mut round).await;
        }
        let silent = self.silent_subscriptions(&round);
        if trigger == Trigger::Probe {
            self.round += 1;
            if self.round == 1 && round.observations.iter().all(|o| o.result.is_err()) {
                // Nothing else would be said until a node is seen: say it once, now.
                let why: Vec<String> = round
                    .observations
                    .iter()
                    .filter_map(|o| o.result.as_ref().err().map(|e| format!("{}: {e}", o.node)))
                    .collect();
                error!(
                    nodes = round.observations.len(),
                    "no node answered the first probe round; nothing is published until one does ({})",
                    why.join("; ")
                );
            }
        }
        let (now, clock_event) = self.clock.now();
        match clock_event {
            Some(ClockEvent::Jumped { forward, by }) => warn!(
                direction = if forward { "forward" } else { "back" },
                by = %humantime::format_duration(Duration::from_secs(by.as_secs())),
                "the system clock jumped; keeping time by the monotonic clock for a minute so that heads do not all look stale or from the future"
            ),
            Some(ClockEvent::Accepted) => info!("the system clock's new time persisted; using it"),
            None => {}
        }
        // Read fresh every round: a host that lost the VIP must know it at once.
        let role = self.config.ha.as_ref().map(read_role);
        if role != self.role {
            if let Some(r) = role {
                info!(from = %self.role.map_or("none".into(), |r| r.to_string()), to = %r, "VRRP role changed");
            }
            self.role = role;
        }
        let overrides = self
            .shared
            .overrides
            .lock()
            .expect("overrides lock")
            .clone();
        let (decision, next) = select(
            &self.config.select,
            &self.config.chain,
            &overrides,
            &self.state,
            &round.observations,
            now,
            trigger,
        );
        // The earliest moment a node now behind would pass lag_grace.
        self.recheck_at = decision
            .nodes
            .iter()
            .filter(|v| v.healthy)
            .filter_map(|v| v.behind)
            .filter(|b| *b <= decision.lag_grace)
            .map(|b| decision.lag_grace - b + Duration::from_millis(50))
            .min()
            .map(|d| tokio::time::Instant::now() + d);
        let mut decision = decision;
        for node in &silent {
            decision.warnings.push(format!(
                "{node}: ChainNotify delivered nothing while polls show newer heads; relying on polls"
            ));
        }
        self.log_changes(&decision);
        self.state = next;
        self.warnings = decision.warnings.clone();
        if decision.switch.as_ref().is_some_and(|s| s.to.is_some()) {
            self.switches += 1;
            self.primary_since = Some(now);
        }

        // At most one reload per probe interval: a burst of pushed heads must not make nginx
        // reload in a loop. A deferred change is applied at the next evaluation.
        // A new primary is never deferred: that is what push is for.
        let published_primary = self.published.as_ref().map(|p| p.primary.name.clone());
        let too_soon = trigger == Trigger::Push
            && decision.primary == published_primary
            && self
                .last_reload_at
                .is_some_and(|t| t.elapsed() < self.config.probe.interval);
        // Only the master writes a shared target; a host that lost the VIP stops at once.
        let standby = self.target.is_shared() && role.is_some_and(|r| !r.may_change_shared_state());
        let mut sessions_moved = 0;
        let apply = match UpstreamPlan::from_decision(&decision, &self.config.nodes) {
            _ if standby => ApplyRecord::Standby {
                reason: format!(
                    "VRRP role {}: the master pushes to {}",
                    role.map_or("unknown".into(), |r| r.to_string()),
                    self.target.describe()
                ),
            },
            _ if too_soon => ApplyRecord::Deferred,
            None => ApplyRecord::Held {
                reason: "no healthy node; the last published upstream stays".into(),
            },
            Some(plan) => match self.target.apply(&plan).await {
                Ok(applied) => {
                    self.last_error = None;
                    let record = match applied {
                        Applied::Unchanged => ApplyRecord::Unchanged,
                        Applied::Deferred => ApplyRecord::Deferred,
                        Applied::Changed { reloaded } => {
                            // Throttles the next push-triggered change (HAProxy and SLB calls
                            // too, not only nginx reloads).
                            self.last_reload_at = Some(std::time::Instant::now());
                            let backups: Vec<&str> =
                                plan.backups.iter().map(|b| b.name.as_str()).collect();
                            let what = match (self.target.kind(), reloaded) {
                                ("nginx", true) => "nginx reloaded with a new primary",
                                ("nginx", false) => "backups changed: nginx's file rewritten and validated, nginx not reloaded (a reload would cut every session)",
                                ("haproxy", _) => "HAProxy servers set through the runtime API",
                                _ => "SLB weights set",
                            };
                            info!(
                                primary = %plan.primary.name,
                                backups = ?backups,
                                target = %self.target.describe(),
                                "{what}"
                            );
                            if reloaded {
                                self.reloads += 1;
                                ApplyRecord::Reloaded
                            } else {
                                ApplyRecord::Changed
                            }
                        }
                    };
                    let leaving = leaving(self.published.as_ref(), &plan);
                    self.published = Some(plan);
                    sessions_moved = self.move_sessions(leaving).await;
                    record
                }
                Err(e) => {
                    // A refused file or a failed reload: nginx still sends sessions where it
                    // did, so none is moved.
                    self.failed_applies += 1;
                    self.log_apply_error(&e);
                    ApplyRecord::Failed {
                        error: e.to_string(),
                    }
                }
            },
        };
        if matches!(
            apply,
            ApplyRecord::Reloaded | ApplyRecord::Changed | ApplyRecord::Failed { .. }
        ) {
            self.last_apply = Some((SystemTime::now(), apply.clone()));
        }
        let probes: Vec<(String, Duration, Option<&RpcError>)> = round
            .observations
            .iter()
            .zip(&round.latencies)
            .map(|(o, l)| (o.node.clone(), *l, o.result.as_ref().err()))
            .collect();
        let report = Report {
            round: self.round,
            at: now,
            decision,
            target: self.target.kind(),
            apply,
            last_apply: self.last_apply.clone(),
            probes: probes
                .iter()
                .map(|(n, l, e)| (n.clone(), (*l, e.map(|e| e.to_string()))))
                .collect(),
            primary_since: self.primary_since,
            reloads: self.reloads,
            failed_applies: self.failed_applies,
            switches: self.switches,
            role,
            push: self
                .push
                .as_ref()
                .map(|(hub, _)| {
                    round
                        .observations
                        .iter()
                        .filter_map(|o| {
                            hub.get(&o.node).map(|p| {
                                let age = p
                                    .received_at
                                    .map(|t| now.duration_since(t).unwrap_or_default());
                                (o.node.clone(), (p.status, age))
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            session_mode: self.target.session_mode(),
            sessions_moved,
            pending_moves: self.pending_list(),
        };
        // Probe figures come from probe rounds only; a pushed head re-evaluates the same round.
        let probes = if trigger == Trigger::Probe {
            probes
        } else {
            Vec::new()
        };
        self.shared.metrics.observe(&report, &probes);
        report
    }

    /// Moves the sessions of nodes that lost their place now, or after their drain's grace.
    async fn move_sessions(&mut self, leaving: Vec<UpstreamServer>) -> u64 {
        let overrides = self
            .shared
            .overrides
            .lock()
            .expect("overrides lock")
            .clone();
        let mut now = Vec::new();
        for server in leaving {
            // A node that comes back cancels nothing here: moving its sessions once more costs
            // a reconnect, and it is no longer where sessions go anyway.
            match overrides.drained.get(&server.name).and_then(|m| m.grace) {
                Some(grace) if !grace.is_zero() => {
                    info!(node = %server.name, grace = %humantime::format_duration(grace), "sessions move after the drain's grace period");
                    self.pending_moves.retain(|(s, _)| s.name != server.name);
                    self.pending_moves
                        .push((server, tokio::time::Instant::now() + grace));
                }
                _ => now.push(server),
            }
        }
        self.move_now(now).await
    }

    /// Runs the moves whose grace period has passed.
    async fn move_due_sessions(&mut self) {
        let due_at = tokio::time::Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_moves)
            .into_iter()
            .partition(|(_, at)| *at <= due_at);
        self.pending_moves = later;
        let servers = due.into_iter().map(|(s, _)| s).collect();
        self.move_now(servers).await;
    }

    async fn move_now(&mut self, servers: Vec<UpstreamServer>) -> u64 {
        let mut moved = 0;
        for server in servers {
            // The primary again (a drain undone, a node back first): its sessions stay.
            if self
                .published
                .as_ref()
                .is_some_and(|p| p.primary.name == server.name)
            {
                continue;
            }
            match self.target.move_sessions(&server).await {
                Ok(n) => {
                    moved += n.map_or(0, |n| n as u64);
                    match n {
                        Some(0) => {
                            // A node that died took its sessions with it; in fallback mode the
                            // start said it once. Nothing to say per switch.
                            tracing::debug!(node = %server.name, "no session to move");
                        }
                        Some(n) => {
                            info!(node = %server.name, connections = n, "sessions moved off the node")
                        }
                        None => {
                            info!(node = %server.name, mode = %self.target.session_mode(), "sessions moved off the node")
                        }
                    }
                }
                Err(e) => {
                    let fallback = self.target.session_mode() == SessionMode::WorkerShutdownTimeout;
                    if fallback && !self.session_fallback_logged {
                        warn!(node = %server.name, error = %e, "sessions of the old primary are left to nginx's worker_shutdown_timeout");
                        self.session_fallback_logged = true;
                    } else if !fallback {
                        self.log_apply_error(&e);
                    }
                }
            }
        }
        self.shared.metrics.sessions_moved(moved);
        moved
    }

    fn pending_list(&self) -> Vec<(String, Duration)> {
        let now = tokio::time::Instant::now();
        self.pending_moves
            .iter()
            .map(|(s, at)| (s.name.clone(), at.saturating_duration_since(now)))
            .collect()
    }

    /// State changes only: a primary switch, a node going up or down, a warning. Never per tick.
    fn log_changes(&self, d: &Decision) {
        for v in &d.nodes {
            let was_up = self.state.tracks.get(&v.name).is_some_and(|t| t.up);
            if v.healthy && !was_up {
                info!(node = %v.name, height = ?v.height, "node up");
            } else if !v.healthy && was_up {
                warn!(node = %v.name, reason = %v.reason, "node down");
            }
        }
        for w in &d.warnings {
            if !self.warnings.contains(w) {
                warn!(warning = %w, "pool warning");
            }
        }
        for w in &self.warnings {
            if !d.warnings.contains(w) {
                info!(warning = %w, "pool warning cleared");
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
    fn log_apply_error(&mut self, e: &ApplyError) {
        let msg = e.to_string();
        if self.last_error.as_deref() != Some(msg.as_str()) {
            error!(error = %msg, "apply failed");
            self.last_error = Some(msg);
        }
    }
}

/// The servers whose sessions must move when `next` replaces `prev`: the old primary when it
/// is not primary any more, and every node that left the upstream (sessions reach a backup only
/// when the primary failed a request; once the backup is unhealthy or drained, they belong on
/// the primary).
fn leaving(prev: Option<&UpstreamPlan>, next: &UpstreamPlan) -> Vec<UpstreamServer> {
    let Some(prev) = prev else {
        return Vec::new();
    };
    prev.servers()
        .filter(|s| {
            let still = next
                .servers()
                .find(|n| n.name == s.name && n.address == s.address);
            match still {
                None => true,
                Some(n) => s.name == prev.primary.name && n.backup,
            }
        })
        .cloned()
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot build the HTTP client: {0}")]
    Client(RpcError),
    #[error("{0}")]
    Apply(ApplyError),
    #[error("{0}")]
    State(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, backup: bool) -> UpstreamServer {
        UpstreamServer {
            name: name.into(),
            address: format!("10.0.0.{}:1234", name.len()),
            backup,
        }
    }

    fn plan(primary: &str, backups: &[&str]) -> UpstreamPlan {
        UpstreamPlan {
            primary: server(primary, false),
            backups: backups.iter().map(|b| server(b, true)).collect(),
        }
    }

    fn names(v: Vec<UpstreamServer>) -> Vec<String> {
        v.into_iter().map(|s| s.name).collect()
    }

    #[test]
    fn sessions_leave_the_old_primary_and_nodes_that_left_only() {
        // (before, after, whose sessions move)
        let rows: Vec<(Option<UpstreamPlan>, UpstreamPlan, Vec<&str>)> = vec![
            (None, plan("a", &["bb"]), vec![]),
            (Some(plan("a", &["bb"])), plan("a", &["bb"]), vec![]),
            (Some(plan("a", &["bb"])), plan("a", &["bb", "ccc"]), vec![]),
            (
                Some(plan("a", &["bb", "ccc"])),
                plan("a", &["bb"]),
                vec!["ccc"],
            ),
            (
                Some(plan("a", &["bb", "ccc"])),
                plan("bb", &["ccc"]),
                vec!["a"],
            ),
            // Preferred elsewhere: the old primary stays a backup, its sessions still move.
            (Some(plan("a", &["bb"])), plan("bb", &["a"]), vec!["a"]),
            // The new primary's sessions never move.
            (Some(plan("a", &["bb"])), plan("bb", &[]), vec!["a"]),
        ];
        for (before, after, moved) in rows {
            assert_eq!(
                names(leaving(before.as_ref(), &after)),
                moved,
                "{before:?} → {after:?}"
            );
        }
    }
}

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

use crate::apply::ha::{read_role, VrrpRole};
use crate::apply::publish::Publisher;
use crate::apply::{ApplyError, Target as ApplyTarget};
use crate::config::Config;
use crate::decide::clock::{ClockEvent, SteadyClock};
use crate::decide::evaluate::{merge_pushed_heads, Evaluator};
use crate::decide::overrides::Overrides;
use crate::decide::select::{Decision, Track, Trigger, Warning};
use crate::probe::push::PushHub;
use crate::probe::rpc::{RpcClient, RpcError};
use crate::probe::{Prober, Round};
use crate::serve::api::{Messages, Shared};
use crate::serve::history::{EventKind, History};
use crate::serve::metrics::Metrics;
use crate::serve::report::{probe_summary, push_summary, ApplyRecord, Report};

/// The parts of a running chain-co, built from a config.
pub struct Daemon {
    config: Config,
    config_path: Option<PathBuf>,
    prober: Prober,
    /// The target, what was published to it, and the counters of applies.
    publisher: Publisher,
    /// The decision's memory between evaluations.
    evaluator: Evaluator,
    shared: Arc<Shared>,
    reports: watch::Sender<Option<Report>>,
    round: u64,
    switches: u64,
    primary_since: Option<SystemTime>,
    /// Warnings of the previous round, so that each is logged when it appears, not every round.
    warnings: Vec<Warning>,
    /// Rise/fall for the warnings shown and journaled.
    warning_gate: crate::decide::select::WarningGate,
    /// Carries pending messages at switches (`[messages]`).
    carrier: RpcClient,
    role: Option<VrrpRole>,
    /// The ChainNotify subscriptions, and the token that ends them (on reload or shutdown).
    push: Option<(PushHub, CancellationToken)>,
    tasks: TaskTracker,
    /// The last probe round, which pushed heads refresh between rounds.
    last_round: Option<Round>,
    /// When the sending accounts were last resolved (`None`: not since start or reload).
    senders_tried: Option<tokio::time::Instant>,
    /// When a node that is behind will have been behind for lag_grace: evaluate again then,
    /// without waiting for the next push or poll.
    recheck_at: Option<tokio::time::Instant>,
    /// When each node up but behind passes lag_grace, by the last decision (see
    /// `confirm_behind`).
    grace_ends: std::collections::BTreeMap<String, std::time::SystemTime>,
    /// Until when the next round may wait for the links' first connections.
    links_settle_by: Option<tokio::time::Instant>,
    /// When each node was last asked to confirm it is behind, and what it answered (see
    /// `confirm_behind`).
    confirmed_at: std::collections::HashMap<
        String,
        (
            tokio::time::Instant,
            std::time::SystemTime,
            crate::probe::rpc::Head,
        ),
    >,
    clock: SteadyClock,
}

fn parts(config: &Config) -> Result<(Prober, ApplyTarget), DaemonError> {
    let prober = config.prober().map_err(DaemonError::Client)?;
    let target = config.build_target().map_err(DaemonError::Apply)?;
    Ok((prober, target))
}

/// The journal beside the state file, read back, with this start as its newest event; and
/// what the operator must be told about it. Without a state directory (a dry run, a test
/// without one) the journal lives in memory.
fn start_journal(config: &Config) -> (History, Vec<String>) {
    let state = &config.api.state_file;
    let dir_exists = state
        .parent()
        .is_some_and(|d| d.as_os_str().is_empty() || d.is_dir());
    let (mut history, notices) = if dir_exists {
        History::with_file(&crate::serve::journal_file::path_for(state))
    } else {
        (History::default(), Vec::new())
    };
    history.fit(config.nodes.len());
    let before = match history.since() {
        Some(_) => "the events before this one are from the previous run",
        None => "nothing was recorded before",
    };
    history.record(
        std::time::SystemTime::now(),
        EventKind::Start,
        None,
        format!(
            "chain-co {} started with {} nodes; {before}",
            env!("CARGO_PKG_VERSION"),
            config.nodes.len()
        ),
    );
    (history, notices)
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
        let (history, journal_notices) = start_journal(&config);
        let carrier = RpcClient::new(config.probe.timeout, config.probe.max_reply_bytes)
            .map_err(DaemonError::Client)?;
        let (tx, rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            reports: rx,
            overrides: Mutex::new(overrides),
            metrics: Metrics::new(),
            state_file: config.api.state_file.clone(),
            token: std::sync::RwLock::new(config.api.token.clone()),
            allowed_hosts: std::sync::RwLock::new(config.api.allowed_hosts.clone()),
            notices: Mutex::new(Vec::new()),
            mark_writes: tokio::sync::Mutex::new(()),
            history: Mutex::new(history),
            messages: Mutex::new(Messages::for_config(&config)),
            carries_messages: config.carries_messages(),
            gap_check: Default::default(),
            senders_check: Default::default(),
            max_report_age: config.probe.interval * 2
                + config.probe.timeout
                + Duration::from_secs(1),
        });
        let daemon = Daemon {
            config,
            config_path,
            prober,
            publisher: Publisher::new(target),
            evaluator: Evaluator::default(),
            shared: shared.clone(),
            reports: tx,
            round: 0,
            switches: 0,
            primary_since: None,
            warnings: Vec::new(),
            warning_gate: Default::default(),
            carrier,
            role: None,
            push: None,
            tasks: TaskTracker::new(),
            last_round: None,
            senders_tried: None,
            recheck_at: None,
            grace_ends: Default::default(),
            links_settle_by: None,
            confirmed_at: Default::default(),
            clock: SteadyClock::new(Duration::from_secs(60)),
        };
        if let Some(why) = damaged {
            error!(file = %daemon.config.api.state_file.display(), "damaged state file: {why}");
            shared.notice(format!("state file: {why}"));
        }
        for why in journal_notices {
            error!("{why}");
            shared.notice(why);
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
        self.publisher
            .target()
            .preflight()
            .map_err(DaemonError::Apply)
    }

    /// Runs until `shutdown` is cancelled. Each message on `reload` re-reads the config file.
    pub async fn run(mut self, shutdown: CancellationToken, mut reload: mpsc::Receiver<()>) {
        let mut ticker = self.ticker();
        self.start_push(&shutdown);
        self.publisher.announce_session_mode();
        info!(
            nodes = self.config.nodes.len(),
            interval = %humantime::format_duration(self.config.probe.interval),
            target = %self.publisher.target().describe(),
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
                _ = crate::backoff::until(self.recheck_at) => {
                    self.recheck_at = None;
                    if let Some(round) = self.last_round.clone() {
                        let report = self.step(round, Trigger::Push).await;
                        self.reports.send_replace(Some(report));
                    }
                    continue;
                }
                _ = crate::backoff::until(self.publisher.next_move_at()) => {
                    let moved = self.publisher.move_due_sessions().await;
                    self.shared.metrics.sessions_moved(moved);
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
            // After (re)starting the subscriptions, let their connections open first: the round
            // then goes over them rather than opening an HTTP connection per node.
            if let (Some(by), Some((hub, _))) = (self.links_settle_by.take(), &self.push) {
                let left = by.saturating_duration_since(tokio::time::Instant::now());
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = hub.first_tries_done(left) => {}
                }
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

    /// Starts the ChainNotify subscriptions for the current nodes, or, after a reload, makes
    /// the running ones match them: a node whose settings did not change keeps its link.
    fn start_push(&mut self, shutdown: &CancellationToken) {
        if let (true, Some((hub, stop))) = (self.config.probe.push, &self.push) {
            hub.update(
                self.prober.targets(),
                self.config.probe.max_reply_bytes,
                &self.tasks,
                stop,
            );
            self.prober.use_links(Some(hub.clone()));
            return;
        }
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
                self.prober.headers(),
            );
            self.prober.use_links(Some(hub.clone()));
            self.links_settle_by = Some(tokio::time::Instant::now() + self.config.probe.timeout);
            self.push = Some((hub, stop));
        } else {
            self.prober.use_links(None);
        }
    }

    /// A node behind the heaviest head between polls is either stalled or its subscription
    /// went silent: the two look alike until asked. Ask it now, so that only a real stall
    /// counts against it.
    ///
    /// At most one such call per node per probe interval: a node pushing heads as fast as it
    /// can (a flood, or a liar raising its weight) cannot multiply the calls to honest nodes.
    /// One more once its lag_grace has ended, if the last answer is older than that end: only
    /// an answer from after it can show the node still behind, and take it down on time.
    async fn confirm_behind(&mut self, round: &mut Round) {
        let top = round
            .observations
            .iter()
            .filter_map(|o| o.result.as_ref().ok().map(|h| h.weight))
            .max();
        let now = tokio::time::Instant::now();
        let interval = self.config.probe.interval;
        let behind: Vec<String> = round
            .observations
            .iter()
            .filter(|o| o.result.as_ref().is_ok_and(|h| Some(h.weight) < top))
            .map(|o| o.node.clone())
            .collect();
        // Asked within the interval: its answer then stands, as old as it is.
        let wall = std::time::SystemTime::now();
        let (recent, ask): (Vec<String>, Vec<String>) = behind.into_iter().partition(|n| {
            let grace_ended_since = self.grace_ends.get(n).filter(|end| **end <= wall).copied();
            self.confirmed_at.get(n).is_some_and(|(at, when, _)| {
                now.duration_since(*at) < interval
                    && grace_ended_since.is_none_or(|end| *when >= end)
            })
        });
        let prober = &self.prober;
        let asked = futures_util::future::join_all(
            ask.iter()
                .map(|n| async move { (n.clone(), prober.head_of(n).await) }),
        )
        .await;
        for (node, answer) in asked {
            if let Some(Ok(head)) = answer {
                self.confirmed_at.insert(
                    node.clone(),
                    (now, std::time::SystemTime::now(), head.clone()),
                );
                if let Some(o) = round.observations.iter_mut().find(|o| o.node == node) {
                    o.result = Ok(head);
                    o.via_push = false;
                    o.observed_at = None;
                }
            }
        }
        for node in recent {
            let Some((_, when, head)) = self.confirmed_at.get(&node) else {
                continue;
            };
            if let Some(o) = round.observations.iter_mut().find(|o| o.node == node) {
                if o.result.as_ref().is_ok_and(|h| h.weight <= head.weight) {
                    o.result = Ok(head.clone());
                    o.via_push = false;
                    o.observed_at = Some(*when);
                }
            }
        }
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
                self.shared
                    .history
                    .lock()
                    .expect("history lock")
                    .retain_nodes(&names);
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
        *self.shared.allowed_hosts.write().expect("hosts lock") = new.allowed_hosts.clone();
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
    pub(crate) fn reconfigure(&mut self, config: Config) -> Result<(), DaemonError> {
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
        self.evaluator
            .state
            .tracks
            .retain(|name, _| unchanged.contains(&name.as_str()));
        if self
            .evaluator
            .state
            .primary
            .as_deref()
            .is_some_and(|p| !unchanged.contains(&p))
        {
            self.evaluator.state.primary = None;
        }
        self.prober = prober;
        self.publisher.replace_target(target);
        self.config = config;
        // The last round describes the old node set: a push or a recheck re-deciding on it
        // would bring a removed node back (into /metrics, /status, the journal). The next probe
        // round, one interval away, is the first of the new configuration.
        self.last_round = None;
        // The accounts of the new `[messages]`, resolved again at the next round.
        self.shared
            .messages
            .lock()
            .expect("messages lock")
            .follow(&self.config);
        self.senders_tried = None;
        Ok(())
    }

    /// The client the message carrier uses (the start check of write tokens shares it).
    pub(crate) fn carrier(&self) -> RpcClient {
        self.carrier.clone()
    }

    /// One round after probing: decide, log changes, apply.
    pub async fn step(&mut self, round: Round, trigger: Trigger) -> Report {
        let pushed = self
            .push
            .as_ref()
            .map(|(hub, _)| hub.snapshot())
            .unwrap_or_default();
        let mut round = merge_pushed_heads(round, &pushed);
        if trigger == Trigger::Push {
            self.confirm_behind(&mut round).await;
        }
        self.count_round(&round, trigger);
        self.note_message_gaps(&mut round);
        let now = self.decision_time(&round);
        let role = self.vrrp_role();
        // One snapshot of the operator's marks for the decision and the session moves alike.
        let overrides = self
            .shared
            .overrides
            .lock()
            .expect("overrides lock")
            .clone();
        let prev_tracks = self.evaluator.state.tracks.clone();
        let evaluation = self.evaluator.evaluate(
            &self.config.select,
            &self.config.chain,
            &overrides,
            &round,
            &pushed,
            now,
            trigger,
        );
        self.recheck_at = evaluation
            .recheck_after
            .map(|d| tokio::time::Instant::now() + d);
        self.grace_ends = evaluation.decision.grace_ends.clone();
        let mut decision = evaluation.decision;
        // Warnings get the nodes' rise/fall: shown once held, withdrawn once gone a while.
        decision.warnings = self.warning_gate.observe(
            &decision.warnings,
            trigger == Trigger::Probe,
            self.config.select.rise,
            self.config.select.fall,
        );
        // The next rounds check each node's chain at the epoch the pool finalized.
        self.prober
            .set_pool_finalized(decision.finalized.as_ref().map(|f| f.epoch));
        self.log_changes(&decision, &prev_tracks, now);
        self.warnings = decision.warnings.clone();
        if decision.switch.as_ref().is_some_and(|s| s.to.is_some()) {
            self.switches += 1;
            self.primary_since = Some(now);
        }
        let publication = self
            .publisher
            .publish(
                &decision,
                &self.config.upstreams(),
                trigger,
                role,
                self.config.probe.interval,
                &overrides,
            )
            .await;
        self.shared
            .metrics
            .sessions_moved(publication.sessions_moved);
        self.follow_messages(&decision, trigger);
        if let Some(why) = self.publisher.refresh_session_mode() {
            self.shared.notice(format!(
                "sessions are not moved at a switch: {why}; they end at nginx's worker_shutdown_timeout"
            ));
        }
        let report = Report {
            round: self.round,
            at: now,
            decision,
            target: self.publisher.target().kind(),
            apply: publication.record,
            last_apply: self.publisher.last_apply.clone(),
            probes: probe_summary(&round),
            primary_since: self.primary_since,
            reloads: self.publisher.reloads,
            failed_applies: self.publisher.failed_applies,
            switches: self.switches,
            role,
            push: push_summary(&round, &pushed, now),
            session_mode: self.publisher.target().session_mode(),
            sessions_moved: publication.sessions_moved,
            pending_moves: self.publisher.pending_list(),
        };
        self.shared
            .metrics
            .observe(&report, &probe_figures(&round, trigger));
        self.record(&report, trigger, now);
        report
    }

    /// With `[messages]`, after the decision: carry the pending messages at a switch, re-read
    /// the sending accounts when due, and level the pools between switches (all in tasks of
    /// their own: none of it delays the loop).
    fn follow_messages(&mut self, decision: &Decision, trigger: Trigger) {
        use crate::serve::carry;
        carry::after_switch(
            &self.config,
            decision,
            &self.shared,
            &self.tasks,
            &self.carrier,
        );
        if trigger == Trigger::Probe && self.senders_due() {
            self.senders_tried = Some(tokio::time::Instant::now());
            carry::refresh_senders(
                &self.config,
                decision,
                &self.shared,
                &self.tasks,
                &self.carrier,
            );
        }
        // A round that switched has its carry; the levelling would push the same messages.
        if trigger == Trigger::Probe && decision.switch.is_none() {
            carry::level_pools(
                &self.config,
                decision,
                &self.shared,
                &self.tasks,
                &self.carrier,
            );
        }
    }

    /// With `[messages]`: each node's last compared nonce gap to the primary, for the
    /// decision's tie-break (the primary itself, and nodes never compared, lack nothing).
    fn note_message_gaps(&self, round: &mut Round) {
        if !self.config.carries_messages() {
            return;
        }
        let m = self.shared.messages.lock().expect("messages lock");
        for o in &mut round.observations {
            o.messages_behind = m.behind.get(&o.node).copied();
        }
    }

    /// Whether the sending accounts are due to be resolved (again): at start, after a reload,
    /// every [`SENDERS_EVERY`](crate::serve::carry::SENDERS_EVERY), and sooner after a failure.
    fn senders_due(&self) -> bool {
        if !self.config.carries_messages() {
            return false;
        }
        let resolved = self
            .shared
            .messages
            .lock()
            .expect("messages lock")
            .senders_resolved;
        let every = if resolved {
            crate::serve::carry::SENDERS_EVERY
        } else {
            crate::serve::carry::SENDERS_RETRY
        };
        self.senders_tried.is_none_or(|t| t.elapsed() >= every)
    }

    /// Counts probe rounds; says once, loudly, when no node answered the first one.
    fn count_round(&mut self, round: &Round, trigger: Trigger) {
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
    }

    /// The time to decide with: the steady clock, with the heads as evidence of a jump.
    fn decision_time(&mut self, round: &Round) -> SystemTime {
        let heads: Vec<u64> = round
            .observations
            .iter()
            .filter_map(|o| o.result.as_ref().ok().map(|h| h.timestamp))
            .collect();
        let block_delay = self
            .config
            .chain
            .block_delay
            .or_else(|| {
                round
                    .observations
                    .iter()
                    .find_map(|o| o.identity.as_ref()?.block_delay)
                    .map(Duration::from_secs)
            })
            .unwrap_or(Duration::from_secs(30));
        let (now, clock_event) = self
            .clock
            .now_vouched(&heads, block_delay * 2 + Duration::from_secs(2));
        match clock_event {
            Some(ClockEvent::Jumped { forward, by }) => warn!(
                direction = if forward { "forward" } else { "back" },
                by = %humantime::format_duration(Duration::from_secs(by.as_secs())),
                "the system clock jumped; keeping time by the monotonic clock for a minute so that heads do not all look stale or from the future"
            ),
            Some(ClockEvent::Accepted) => info!("the system clock's new time persisted; using it"),
            Some(ClockEvent::Vouched { forward, by, heads }) => warn!(
                direction = if forward { "forward" } else { "back" },
                by = %humantime::format_duration(Duration::from_secs(by.as_secs())),
                heads,
                "the system clock jumped and the nodes' heads agree with its new time; using it at once"
            ),
            None => {}
        }
        now
    }

    /// This host's VRRP role, read fresh every round; a change is logged.
    fn vrrp_role(&mut self) -> Option<crate::apply::ha::VrrpRole> {
        let role = self.config.ha.as_ref().map(read_role);
        if role != self.role {
            if let Some(r) = role {
                info!(from = %self.role.map_or("none".into(), |r| r.to_string()), to = %r, "VRRP role changed");
            }
            self.role = role;
        }
        role
    }

    /// The round in the journal: applies that changed something, and the heads' samples.
    fn record(&self, report: &Report, trigger: Trigger, now: SystemTime) {
        let mut history = self.shared.history.lock().expect("history lock");
        if matches!(
            report.apply,
            ApplyRecord::Reloaded | ApplyRecord::Changed | ApplyRecord::Failed { .. }
        ) {
            let text = match &report.apply {
                ApplyRecord::Reloaded => "nginx reloaded with a new primary".to_string(),
                ApplyRecord::Changed => format!("{} changed without a reload", report.target),
                ApplyRecord::Failed { error } => format!("apply failed: {error}"),
                _ => String::new(),
            };
            history.record(now, EventKind::Apply, None, text);
        }
        if trigger == Trigger::Probe {
            for v in &report.decision.nodes {
                let latency = report.probes.get(&v.name).map(|p| p.0);
                history.sample(&v.name, now, v.height, v.lag, latency);
            }
        }
    }

    /// State changes only, to the log and to the journal: a primary switch, a node going up
    /// or down, a warning. Never per tick.
    fn log_changes(
        &self,
        d: &Decision,
        before: &std::collections::BTreeMap<String, Track>,
        now: SystemTime,
    ) {
        let mut journal = self.shared.history.lock().expect("history lock");
        for v in &d.nodes {
            let was_up = before.get(&v.name).is_some_and(|t| t.up);
            if v.healthy && !was_up {
                info!(node = %v.name, height = ?v.height, "node up");
                journal.record(now, EventKind::Up, Some(&v.name), v.reason.clone());
            } else if !v.healthy && was_up {
                warn!(node = %v.name, reason = %v.reason, "node down");
                journal.record(now, EventKind::Down, Some(&v.name), v.reason.clone());
            }
        }
        // By kind, not by words: a warning whose words change each round (an age, an
        // epoch) is still the same warning, said once when it appears and once when it clears.
        for w in &d.warnings {
            if !self.warnings.iter().any(|o| o.kind == w.kind) {
                warn!(warning = %w, "pool warning");
                journal.record(now, EventKind::Warning, None, w.text.clone());
            }
        }
        for w in &self.warnings {
            if !d.warnings.iter().any(|n| n.kind == w.kind) {
                info!(warning = %w, "pool warning cleared");
                journal.record(now, EventKind::Warning, None, w.cleared_text());
            }
        }
        if let Some(s) = &d.switch {
            let from = s.from.as_deref().unwrap_or("none");
            match &s.to {
                Some(to) => {
                    info!(from, to = %to, why = %s.why, "primary changed");
                    journal.record(
                        now,
                        EventKind::Switch,
                        Some(to),
                        format!("primary {from} → {to}: {}", s.why),
                    );
                }
                None => {
                    error!(from, why = %s.why, "no healthy node: failing static");
                    journal.record(
                        now,
                        EventKind::Switch,
                        None,
                        format!("no primary (fail static): {}", s.why),
                    );
                }
            }
        }
    }
}

/// Probe figures come from probe rounds only; a pushed head re-evaluates the same round.
fn probe_figures(round: &Round, trigger: Trigger) -> Vec<(String, Duration, Option<&RpcError>)> {
    if trigger == Trigger::Probe {
        round
            .observations
            .iter()
            .zip(&round.latencies)
            .map(|(o, l)| (o.node.clone(), *l, o.result.as_ref().err()))
            .collect()
    } else {
        Vec::new()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot build the HTTP client: {0}")]
    Client(RpcError),
    #[error("{0}")]
    Apply(ApplyError),
}

//! Publishing a decision to the target: the reload throttle, the VRRP role gate, the apply
//! itself, moving sessions off nodes that lost their place, and the counters of what was done.
//!
//! The loop hands every decision here; whether and how it reaches nginx, HAProxy or SLB is
//! decided here and nowhere else.

use std::time::{Duration, SystemTime};

use tracing::{error, info, warn};

use crate::apply::ha::VrrpRole;
use crate::apply::ApplyRecord;
use crate::apply::{Applied, ApplyError, SessionMode, Target, UpstreamPlan, UpstreamServer};
use crate::decide::overrides::Overrides;
use crate::decide::select::{Decision, Trigger};

/// What one publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Publication {
    pub record: ApplyRecord,
    /// Connections ended to move sessions.
    pub sessions_moved: u64,
}

/// The target and what has been published to it.
pub(crate) struct Publisher {
    target: Target,
    /// The plan last applied: where sessions go now.
    published: Option<UpstreamPlan>,
    /// Sessions to move once a drain's grace period has passed.
    pending_moves: Vec<(UpstreamServer, tokio::time::Instant)>,
    /// Whether the fallback from destroying sockets has been logged.
    session_fallback_logged: bool,
    /// The last reason given for not moving sessions (nginx's cgroup).
    cgroup_problem_said: Option<String>,
    /// The last apply error, so that the same failure is logged once.
    last_error: Option<String>,
    /// When the target last changed: the throttle for push-triggered changes.
    last_reload_at: Option<std::time::Instant>,
    pub reloads: u64,
    pub failed_applies: u64,
    /// The last apply that changed something or failed, and when.
    pub last_apply: Option<(SystemTime, ApplyRecord)>,
}

impl Publisher {
    pub fn new(target: Target) -> Publisher {
        Publisher {
            target,
            published: None,
            pending_moves: Vec::new(),
            session_fallback_logged: false,
            cgroup_problem_said: None,
            last_error: None,
            last_reload_at: None,
            reloads: 0,
            failed_applies: 0,
            last_apply: None,
        }
    }

    /// A new target after a configuration reload; what was published and pending stays.
    pub(crate) fn replace_target(&mut self, target: Target) {
        self.target = target;
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Says once, at start, when sessions can only leave by nginx's worker_shutdown_timeout.
    pub(crate) fn announce_session_mode(&mut self) {
        if self.target.session_mode() == SessionMode::WorkerShutdownTimeout {
            warn!("no CAP_NET_ADMIN: at a switch the old primary's sessions (miners' websockets) stay on it until nginx's worker_shutdown_timeout; grant the capability (see deploy/systemd) to move them at once");
            self.session_fallback_logged = true;
        }
    }

    /// Looks again at nginx's cgroup (it may have been restarted as a unit of its own, or
    /// not); says once per reason why sessions are not moved. `Some(why)` while they are not.
    pub(crate) fn refresh_session_mode(&mut self) -> Option<String> {
        let why = self.target.refresh_session_mode();
        if why.is_some() && why != self.cgroup_problem_said {
            warn!(
                why = %why.as_deref().unwrap_or(""),
                "sessions are not moved at a switch (they end at nginx's worker_shutdown_timeout): chain-co cannot tell nginx's connections from a direct client's; run nginx as a unit of its own (systemd does)"
            );
        }
        self.cgroup_problem_said = why.clone();
        why
    }

    /// When the next drain grace period ends.
    pub(crate) fn next_move_at(&self) -> Option<tokio::time::Instant> {
        self.pending_moves.iter().map(|(_, at)| *at).min()
    }

    /// Publishes `decision`, or says why not (fail static, standby, throttled, refused).
    pub async fn publish(
        &mut self,
        decision: &Decision,
        nodes: &[(String, String)],
        trigger: Trigger,
        role: Option<VrrpRole>,
        interval: Duration,
        overrides: &Overrides,
    ) -> Publication {
        // At most one reload per probe interval: a burst of pushed heads must not make nginx
        // reload in a loop. A deferred change is applied at the next evaluation.
        // A new primary is never deferred: that is what push is for.
        let published_primary = self.published.as_ref().map(|p| p.primary.name.clone());
        let too_soon = trigger == Trigger::Push
            && decision.primary == published_primary
            && self.last_reload_at.is_some_and(|t| t.elapsed() < interval);
        // Only the master writes a shared target; a host that lost the VIP stops at once.
        let standby = self.target.is_shared() && role.is_some_and(|r| !r.may_change_shared_state());
        let mut sessions_moved = 0;
        let apply = match UpstreamPlan::from_decision(decision, nodes) {
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
                    sessions_moved = self.move_sessions(leaving, overrides).await;
                    record
                }
                Err(e) => {
                    // A refused file or a failed reload: nginx still sends sessions where it
                    // did, so none is moved.
                    self.failed_applies += 1;
                    self.log_apply_error(&e);
                    ApplyRecord::Failed {
                        error: crate::errors::error_chain(&e),
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
        Publication {
            record: apply,
            sessions_moved,
        }
    }

    /// Moves the sessions of nodes that lost their place now, or after their drain's grace.
    async fn move_sessions(&mut self, leaving: Vec<UpstreamServer>, overrides: &Overrides) -> u64 {
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
    pub(crate) async fn move_due_sessions(&mut self) -> u64 {
        let due_at = tokio::time::Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_moves)
            .into_iter()
            .partition(|(_, at)| *at <= due_at);
        self.pending_moves = later;
        let servers = due.into_iter().map(|(s, _)| s).collect();
        self.move_now(servers).await
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
                        warn!(node = %server.name, error = %crate::errors::error_chain(&e), "sessions of the old primary are left to nginx's worker_shutdown_timeout");
                        self.session_fallback_logged = true;
                    } else if !fallback {
                        self.log_apply_error(&e);
                    }
                }
            }
        }
        moved
    }

    pub(crate) fn pending_list(&self) -> Vec<(String, Duration)> {
        let now = tokio::time::Instant::now();
        self.pending_moves
            .iter()
            .map(|(s, at)| (s.name.clone(), at.saturating_duration_since(now)))
            .collect()
    }

    /// The same failure every round is logged once, not every interval.
    fn log_apply_error(&mut self, e: &ApplyError) {
        let msg = crate::errors::error_chain(e);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::nginx::Nginx;

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

    /// A node's name and upstream address, as the publisher is given them.
    fn node(name: &str) -> (String, String) {
        (name.to_string(), format!("127.0.0.{}:1234", name.len()))
    }

    fn decision(primary: Option<&str>, backups: &[&str]) -> Decision {
        Decision {
            primary: primary.map(String::from),
            backups: backups.iter().map(|b| b.to_string()).collect(),
            nodes: Vec::new(),
            best_height: None,
            expected_height: None,
            network: None,
            switch: None,
            warnings: Vec::new(),
            finalized: None,
            pool_stale: false,
            implementation_split: false,
            lag_grace: Duration::from_secs(12),
            grace_ends: Default::default(),
        }
    }

    /// An nginx target in a temp dir whose test and reload commands always succeed.
    fn nginx_publisher(dir: &std::path::Path) -> Publisher {
        let cfg = crate::apply::nginx::NginxConfig {
            template_name: "built-in upstream.conf.tera".into(),
            template: crate::apply::nginx::DEFAULT_TEMPLATE.into(),
            output: dir.join("upstream.conf"),
            test_cmd: vec!["true".into()],
            reload: crate::apply::nginx::Reload::Command(vec!["true".into()]),
            pid_file: dir.join("nginx.pid"),
            upstream_name: "filecoin".into(),
            move_sessions: false,
            validate: crate::apply::nginx::Validate::Full,
        };
        Publisher::new(Target::Nginx(Box::new(Nginx::new(cfg).expect("template"))))
    }

    #[tokio::test]
    async fn a_pushed_change_of_backups_right_after_a_change_is_deferred_but_a_new_primary_is_not()
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = nginx_publisher(dir.path());
        let nodes = [node("a"), node("bb"), node("ccc")];
        let none = Overrides::default();
        let interval = Duration::from_secs(60);
        let first = p
            .publish(
                &decision(Some("a"), &["bb", "ccc"]),
                &nodes,
                Trigger::Probe,
                None,
                interval,
                &none,
            )
            .await;
        assert_eq!(first.record, ApplyRecord::Reloaded);
        // Within the interval, by push, same primary: deferred, nothing written.
        let pushed = p
            .publish(
                &decision(Some("a"), &["bb"]),
                &nodes,
                Trigger::Push,
                None,
                interval,
                &none,
            )
            .await;
        assert_eq!(pushed.record, ApplyRecord::Deferred);
        assert!(std::fs::read_to_string(dir.path().join("upstream.conf"))
            .expect("file")
            .contains("127.0.0.3"));
        // A new primary is never deferred.
        let moved = p
            .publish(
                &decision(Some("bb"), &["ccc"]),
                &nodes,
                Trigger::Push,
                None,
                interval,
                &none,
            )
            .await;
        assert_eq!(moved.record, ApplyRecord::Reloaded);
        // A probe round applies what was deferred: backups only, no reload.
        let probed = p
            .publish(
                &decision(Some("bb"), &[]),
                &nodes,
                Trigger::Probe,
                None,
                interval,
                &none,
            )
            .await;
        assert_eq!(probed.record, ApplyRecord::Changed);
        assert_eq!(p.reloads, 2);
        // No primary: held, and the file stays.
        let held = p
            .publish(
                &decision(None, &[]),
                &nodes,
                Trigger::Probe,
                None,
                interval,
                &none,
            )
            .await;
        assert!(matches!(held.record, ApplyRecord::Held { .. }));
        assert!(std::fs::read_to_string(dir.path().join("upstream.conf"))
            .expect("file")
            .contains("127.0.0.2"));
    }

    #[tokio::test]
    async fn only_the_master_writes_a_shared_target() {
        let cfg = crate::apply::slb::SlbConfig {
            endpoint: "http://127.0.0.1:1/".parse().expect("url"),
            region: "cn-hangzhou".into(),
            load_balancer_id: "lb-test".into(),
            vserver_group_id: None,
            servers: Default::default(),
            weight: 100,
            backup_weight: 0,
            access_key_id: "id".into(),
            access_key_secret: crate::secret::Secret::new("secret"),
        };
        let mut p = Publisher::new(Target::Slb(
            crate::apply::slb::Slb::new(cfg),
            vec!["a".into()],
        ));
        let nodes = [node("a")];
        for role in [VrrpRole::Backup, VrrpRole::Fault, VrrpRole::Unknown] {
            let out = p
                .publish(
                    &decision(Some("a"), &[]),
                    &nodes,
                    Trigger::Probe,
                    Some(role),
                    Duration::from_secs(5),
                    &Overrides::default(),
                )
                .await;
            assert!(
                matches!(&out.record, ApplyRecord::Standby { reason } if reason.contains("the master pushes")),
                "{role:?}: {:?}",
                out.record
            );
        }
        assert_eq!(p.failed_applies, 0, "nothing was sent");
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

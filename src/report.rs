//! What one round found and did: the types the loop publishes and everything else reads (the
//! status API, metrics, the demo, `check`). A module of its own so that none of its readers
//! has to import the loop that writes it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::apply::SessionMode;
use crate::ha::Role;
use crate::push::PushStatus;
use crate::select::Decision;

/// The outcome of an apply, as shown in status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum ApplyRecord {
    /// Nothing was published: no healthy node (fail static).
    Held {
        reason: String,
    },
    /// This host is not the VRRP master: the shared target is left to the master.
    Standby {
        reason: String,
    },
    Unchanged,
    /// Held back by the reload throttle; applied at the next evaluation.
    Deferred,
    /// nginx was reloaded with a new upstream (a new primary).
    Reloaded,
    /// The target carries the new plan without a reload: nginx's file rewritten for its next
    /// reload (backups only: a reload would cut every session), HAProxy's servers or SLB's
    /// weights set.
    Changed,
    Failed {
        error: String,
    },
}

/// What one round found and did; sent to watchers (the API, the demo).
#[derive(Debug, Clone)]
pub struct Report {
    pub round: u64,
    pub at: SystemTime,
    pub decision: Decision,
    /// The kind of target applied to: `nginx`, `haproxy` or `slb`.
    pub target: &'static str,
    pub apply: ApplyRecord,
    /// The last apply that reloaded or failed, and when.
    pub last_apply: Option<(SystemTime, ApplyRecord)>,
    /// Per node: probe latency and error text.
    pub probes: BTreeMap<String, (Duration, Option<String>)>,
    pub primary_since: Option<SystemTime>,
    pub reloads: u64,
    pub failed_applies: u64,
    pub switches: u64,
    /// This host's VRRP role, when in a keepalived pair.
    pub role: Option<Role>,
    /// Per node: the ChainNotify subscription's state and the age of its last pushed head.
    pub push: BTreeMap<String, (PushStatus, Option<Duration>)>,
    /// How sessions leave a node that stops being primary.
    pub session_mode: SessionMode,
    /// Connections ended this round to move sessions off nodes that lost their place.
    pub sessions_moved: u64,
    /// Session moves waiting for a drain's grace period: node and seconds left.
    pub pending_moves: Vec<(String, Duration)>,
}

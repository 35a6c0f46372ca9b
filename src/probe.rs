//! One probe round: ask every node for its head, concurrently, and turn the replies into
//! [`Observation`]s for `select`.
//!
//! A round never takes longer than the probe timeout (every call is bounded in `rpc`), and one
//! node's failure is that node's observation, never the round's. `Filecoin.Version` is asked
//! when a node is first seen and again after it was unreachable (it may have been upgraded in
//! between); its answer names the implementation in the status and logs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;
use tracing::{debug, info, info_span, Instrument};

use crate::config::NodeConfig;
use crate::rpc::{Endpoint, RpcClient, RpcError, TipSet, VersionInfo};
use crate::select::Observation;

/// A node as the prober sees it.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub endpoint: Endpoint,
}

impl From<&NodeConfig> for Target {
    fn from(n: &NodeConfig) -> Self {
        Target {
            name: n.name.clone(),
            endpoint: Endpoint {
                url: n.url.clone(),
                token: n.token.clone(),
            },
        }
    }
}

/// The result of one round: observations in target order, with what else was learned.
#[derive(Debug, Clone)]
pub struct Round {
    pub observations: Vec<Observation>,
    pub latencies: Vec<Duration>,
    pub versions: Vec<Option<VersionInfo>>,
    pub took: Duration,
}

/// Probes a fixed set of targets, remembering each node's version between rounds.
#[derive(Debug, Clone)]
pub struct Prober {
    client: RpcClient,
    targets: Arc<Vec<Target>>,
    versions: Arc<Mutex<HashMap<String, VersionInfo>>>,
}

impl Prober {
    pub fn new(client: RpcClient, targets: Vec<Target>) -> Self {
        Prober {
            client,
            targets: Arc::new(targets),
            versions: Arc::default(),
        }
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Probes every target once, concurrently.
    pub async fn round(&self) -> Round {
        let started = Instant::now();
        let mut set = JoinSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let this = self.clone();
            let t = t.clone();
            let span = info_span!("probe", node = %t.name);
            set.spawn(async move { (i, this.probe_one(&t).await) }.instrument(span));
        }
        let n = self.targets.len();
        let mut results: Vec<Option<(Observation, Duration)>> = vec![None; n];
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((i, r)) => results[i] = Some(r),
                // A panic in one probe must not take the round down; that node reads as failed.
                Err(e) => debug!(error = %e, "probe task failed"),
            }
        }
        let versions = self.versions.lock().expect("version map lock");
        let mut round = Round {
            observations: Vec::with_capacity(n),
            latencies: Vec::with_capacity(n),
            versions: Vec::with_capacity(n),
            took: started.elapsed(),
        };
        for (t, r) in self.targets.iter().zip(results) {
            let (obs, latency) = r.unwrap_or_else(|| {
                (
                    Observation {
                        node: t.name.clone(),
                        result: Err(RpcError::Transport("probe task failed".into())),
                    },
                    Duration::ZERO,
                )
            });
            round.observations.push(obs);
            round.latencies.push(latency);
            round.versions.push(versions.get(&t.name).cloned());
        }
        round
    }

    async fn probe_one(&self, t: &Target) -> (Observation, Duration) {
        let started = Instant::now();
        let known = self
            .versions
            .lock()
            .expect("version map lock")
            .contains_key(&t.name);
        let head = self
            .client
            .call::<TipSet>(&t.endpoint, "Filecoin.ChainHead", json!([]));
        let result = if known {
            head.await.and_then(TipSet::into_head)
        } else {
            let version =
                self.client
                    .call::<VersionInfo>(&t.endpoint, "Filecoin.Version", json!([]));
            let (head, version) = tokio::join!(head, version);
            if let Ok(v) = version {
                info!(
                    implementation = %v.implementation(),
                    version = %v.version,
                    "node identified"
                );
                self.versions
                    .lock()
                    .expect("version map lock")
                    .insert(t.name.clone(), v);
            }
            head.and_then(TipSet::into_head)
        };
        let latency = started.elapsed();
        match &result {
            Ok(h) => debug!(height = h.height, latency = ?latency, "head"),
            Err(e) => {
                debug!(error = %e, "probe failed");
                if matches!(e, RpcError::Connect(_) | RpcError::Timeout(_)) {
                    self.versions
                        .lock()
                        .expect("version map lock")
                        .remove(&t.name);
                }
            }
        }
        (
            Observation {
                node: t.name.clone(),
                result,
            },
            latency,
        )
    }
}

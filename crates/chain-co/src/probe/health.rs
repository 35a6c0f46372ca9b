//! What a daemon says about itself: its own health endpoint (Lotus `/health/readyz`, Forest
//! `/readyz?verbose` on its health port) and `Filecoin.NodeStatus(true)` (how far behind it
//! thinks it is, how many peers would carry the miner's messages and blocks).
//!
//! This is the daemon's view of its own clock and peers, not chain-co's evidence. It is shown,
//! breaks ties between otherwise equal candidates and feeds warnings; it never excludes a node
//! and never stops a promotion. A real Forest near calibnet's genesis is the case in point: it
//! is never "ready" by its own clock, and shows `PeersToPublishMsgs` 0 with a peer, while its
//! chain is as good as its peers'.
//!
//! Every word here came from the daemon: it is capped and stripped of control characters
//! before it is kept ([`crate::probe::f3::cap`]).

use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::probe::rpc::{loose, Implementation};

/// The most of a health reply that is read; the rest is not looked at.
pub(crate) const MAX_HEALTH_BYTES: usize = 4096;
/// At most this many failing checks are kept, each capped.
const MAX_CHECKS: usize = 8;
/// Characters kept of each.
const MAX_WORDS: usize = 128;

/// The daemon's own readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Readiness {
    /// 2xx from its readiness endpoint.
    Ready,
    /// Anything else; `failing`: the checks it names as failed (Forest's `[!] ...` lines), or
    /// the first line of its reply.
    NotReady { status: u16, failing: Vec<String> },
}

impl Readiness {
    /// Why it is not ready, in the daemon's words (or its HTTP status).
    pub fn why(&self) -> String {
        match self {
            Readiness::Ready => String::new(),
            Readiness::NotReady { status, failing } if failing.is_empty() => {
                format!("HTTP {status}")
            }
            Readiness::NotReady { failing, .. } => failing.join(", "),
        }
    }
}

/// `Filecoin.NodeStatus(true)`, the parts that matter to a miner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatusView {
    /// Epochs behind, by the daemon's own clock.
    pub behind: u64,
    /// Peers that would carry the miner's messages, and its blocks.
    pub peers_to_publish_msgs: u64,
    pub peers_to_publish_blocks: u64,
}

/// What the daemon last said about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnWord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_status: Option<NodeStatusView>,
}

impl OwnWord {
    pub fn is_empty(&self) -> bool {
        self.readiness.is_none() && self.node_status.is_none()
    }

    /// `Some(false)`: it says it is not ready; `None`: it says nothing about readiness.
    pub fn ready(&self) -> Option<bool> {
        self.readiness.as_ref().map(|r| *r == Readiness::Ready)
    }

    /// One line for people: "not ready (sync incomplete, epoch outdated); 12 behind by its
    /// clock; publishes to 0 peers (messages) / 0 (blocks)".
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        match &self.readiness {
            Some(Readiness::Ready) => parts.push("ready".to_string()),
            Some(r) => parts.push(format!("not ready ({})", r.why())),
            None => {}
        }
        if let Some(s) = &self.node_status {
            parts.push(format!(
                "{} behind by its clock; publishes to {} peers (messages) / {} (blocks)",
                s.behind, s.peers_to_publish_msgs, s.peers_to_publish_blocks
            ));
        }
        parts.join("; ")
    }
}

/// Whether the daemon accepts the token clients use (`[chain] client_token_file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientToken {
    Accepted,
    Refused,
}

/// Reads a health reply: the status decides; Forest's verbose lines name the failing checks.
pub(crate) fn read_health(status: u16, body: &[u8]) -> Readiness {
    if (200..300).contains(&status) {
        return Readiness::Ready;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_HEALTH_BYTES)]);
    let mut failing: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("[!]"))
        .map(|l| crate::probe::f3::cap(l.trim(), MAX_WORDS))
        .filter(|l| !l.is_empty())
        .take(MAX_CHECKS)
        .collect();
    if failing.is_empty() {
        let first = text.lines().next().unwrap_or("").trim();
        // Forest's terse "ERROR" and an empty Lotus body say nothing the status does not.
        if !first.is_empty() && first != "ERROR" {
            failing.push(crate::probe::f3::cap(first, MAX_WORDS));
        }
    }
    Readiness::NotReady { status, failing }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawNodeStatus {
    sync_status: RawSync,
    peer_status: RawPeers,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSync {
    #[serde(deserialize_with = "loose::u64")]
    behind: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawPeers {
    #[serde(deserialize_with = "loose::u64")]
    peers_to_publish_msgs: u64,
    #[serde(deserialize_with = "loose::u64")]
    peers_to_publish_blocks: u64,
}

/// Reads a `NodeStatus` reply; `None` when it has not the expected shape.
pub(crate) fn read_node_status(raw: &str) -> Option<NodeStatusView> {
    let s: RawNodeStatus = serde_json::from_str(raw).ok()?;
    Some(NodeStatusView {
        behind: s.sync_status.behind,
        peers_to_publish_msgs: s.peer_status.peers_to_publish_msgs,
        peers_to_publish_blocks: s.peer_status.peers_to_publish_blocks,
    })
}

/// The health URL an implementation serves by default, beside its API at `api`: Lotus's
/// `/health/readyz` on the API port; Forest's `/readyz?verbose` on its health port, the RPC
/// port + 1 (2346 beside 2345 by default). The others have none that says more than a probe.
pub(crate) fn default_health_url(api: &Url, implementation: Implementation) -> Option<Url> {
    let mut url = api.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    let scheme = if matches!(api.scheme(), "https" | "wss") {
        "https"
    } else {
        "http"
    };
    url.set_scheme(scheme).ok()?;
    match implementation {
        Implementation::Lotus => {
            url.set_path("/health/readyz");
        }
        Implementation::Forest => {
            let port = api.port_or_known_default()?.checked_add(1)?;
            url.set_port(Some(port)).ok()?;
            url.set_path("/readyz");
            url.set_query(Some("verbose"));
        }
        _ => return None,
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forest_verbose_lines_name_the_failing_checks() {
        let body =
            b"[!] sync incomplete\n[!] epoch outdated\n[+] rpc server running\n[+] f3 disabled";
        assert_eq!(
            read_health(503, body),
            Readiness::NotReady {
                status: 503,
                failing: vec!["sync incomplete".into(), "epoch outdated".into()]
            }
        );
        assert_eq!(read_health(200, b"[+] sync complete"), Readiness::Ready);
        assert_eq!(
            read_health(503, b"ERROR"),
            Readiness::NotReady {
                status: 503,
                failing: vec![]
            }
        );
    }

    #[test]
    fn a_hostile_health_reply_is_capped_and_inert() {
        let mut body = b"[!] \x1b[2Jclear\n".repeat(50);
        body.extend(std::iter::repeat_n(b'x', 10_000));
        let Readiness::NotReady { failing, .. } = read_health(503, &body) else {
            panic!("not ready");
        };
        assert_eq!(failing.len(), MAX_CHECKS);
        assert!(failing.iter().all(|f| !f.contains('\x1b')), "{failing:?}");
        let long = read_health(500, &[b'y'; 9000]);
        let Readiness::NotReady { failing, .. } = long else {
            panic!("not ready");
        };
        assert!(failing[0].chars().count() <= 130, "{}", failing[0].len());
    }

    #[test]
    fn node_status_as_forest_writes_it() {
        let raw = r#"{"SyncStatus":{"Epoch":0,"Behind":4292892},"PeerStatus":{"PeersToPublishMsgs":0,"PeersToPublishBlocks":2},"ChainStatus":{"BlocksPerTipsetLast100":0.0,"BlocksPerTipsetLastFinality":0.0}}"#;
        assert_eq!(
            read_node_status(raw),
            Some(NodeStatusView {
                behind: 4_292_892,
                peers_to_publish_msgs: 0,
                peers_to_publish_blocks: 2
            })
        );
        assert_eq!(read_node_status("null"), None);
    }

    #[test]
    fn default_health_urls_follow_each_implementation() {
        let api: Url = "http://user:pw@10.0.0.5:2345/rpc/v1?token=x"
            .parse()
            .unwrap();
        assert_eq!(
            default_health_url(&api, Implementation::Forest)
                .unwrap()
                .as_str(),
            "http://10.0.0.5:2346/readyz?verbose"
        );
        let lotus: Url = "ws://127.0.0.1:1234/rpc/v0".parse().unwrap();
        assert_eq!(
            default_health_url(&lotus, Implementation::Lotus)
                .unwrap()
                .as_str(),
            "http://127.0.0.1:1234/health/readyz"
        );
        assert_eq!(default_health_url(&lotus, Implementation::Venus), None);
    }
}

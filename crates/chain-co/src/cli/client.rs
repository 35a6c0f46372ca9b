//! The client side of the CLI: `status` (a client of chain-co's own API), the operator's marks
//! (`drain`, `undrain`, `prefer`), and `probe` (an ad-hoc JSON-RPC client for a daemon).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context as _};
use reqwest::Url;
use serde_json::{json, Value};

use crate::decide::select::Role;
use crate::probe::rpc::{Endpoint, RpcClient, TipSet, Transport, VersionInfo};
use crate::secret::Secret;
use crate::serve::api::Status;

/// How to reach a running chain-co.
pub struct ApiClient {
    pub base: Url,
    pub token: Option<Secret>,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: &str, token: Option<Secret>) -> anyhow::Result<ApiClient> {
        let base = Url::parse(base).with_context(|| format!("{base:?} is not a URL"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(ApiClient { base, token, http })
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let url = self.base.join(path)?;
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        Ok(req)
    }

    /// The journal (`GET /history`), oldest first.
    pub async fn history(&self) -> anyhow::Result<Journal> {
        let resp = self
            .request(reqwest::Method::GET, "/history")?
            .send()
            .await
            .with_context(|| format!("cannot reach chain-co at {}", self.base))?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            bail!("chain-co answered {status}: {}", body.trim());
        }
        serde_json::from_str::<Journal>(&body)
            .context("the history is not the JSON chain-co serves")
    }

    pub async fn status(&self) -> anyhow::Result<Status> {
        let resp = self
            .request(reqwest::Method::GET, "/status")?
            .send()
            .await
            .with_context(|| {
                format!(
                    "cannot reach chain-co at {} (is `chain-co run` running?)",
                    self.base
                )
            })?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            bail!("chain-co answered {status}: {}", body.trim());
        }
        serde_json::from_str(&body)
            .context("chain-co's /status reply is not what this version expects")
    }

    /// POSTs (or DELETEs) an operator mark; returns chain-co's one-line answer.
    pub async fn mark(
        &self,
        method: reqwest::Method,
        path: &str,
        by: &str,
        grace: Option<std::time::Duration>,
    ) -> anyhow::Result<String> {
        let mut body = json!({ "by": by });
        if let Some(g) = grace {
            body["grace"] = json!(humantime::format_duration(g).to_string());
        }
        let resp = self
            .request(method, path)?
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .with_context(|| format!("cannot reach chain-co at {}", self.base))?;
        let status = resp.status();
        let body = resp.text().await?.trim().to_string();
        if status.is_success() {
            Ok(body)
        } else {
            bail!("{body} ({status})")
        }
    }
}

/// The status as a table an operator reads at 3 a.m.
pub fn render_status(s: &Status, colour: bool) -> String {
    let paint = super::table::paint(colour);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "primary: {}{}",
        s.primary.as_deref().map_or_else(
            || paint("1;31", "none (failing static)"),
            |p| paint("1;32", p)
        ),
        s.primary_since
            .as_deref()
            .map(|t| format!(" since {t}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "backups: {}",
        if s.backups.is_empty() {
            "none".into()
        } else {
            s.backups.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "network: {}, best height {}, expected {}; round {} at {}",
        s.network.as_deref().unwrap_or("-"),
        s.best_height.map_or("-".into(), |h| h.to_string()),
        s.expected_height.map_or("-".into(), |h| h.to_string()),
        s.round,
        s.updated_at.as_deref().unwrap_or("-")
    );
    if let Some(role) = &s.role {
        let _ = writeln!(out, "role: {role}");
    }
    if let Some(f) = &s.finalized {
        let _ = writeln!(out, "finalized (F3, by two nodes or more): {f}");
    }
    out.push_str(&crate::serve::report::node_detail_lines(
        s.nodes
            .iter()
            .map(|n| crate::serve::report::NodeDetail::of(&n.verdict)),
    ));
    for w in &s.warnings {
        let _ = writeln!(out, "{}", paint("1;33", &format!("WARNING: {w}")));
    }
    if let Some(m) = &s.messages {
        let _ = writeln!(out, "pending messages carried at switches: {}", m.carried);
        if !m.senders.is_empty() {
            let _ = writeln!(
                out,
                "  following: {}",
                crate::text::inert(&crate::apply::senders::describe(&m.senders), 400)
            );
        }
        for line in m.recent.iter().chain(&m.problems).chain(&m.gaps) {
            let _ = writeln!(out, "  {}", crate::text::inert(line, 300));
        }
    }
    out.push('\n');
    let header = [
        "NODE", "IMPL", "VERSION", "HEIGHT", "LAG", "AGE", "LATENCY", "STATE", "REASON",
    ];
    let rows: Vec<(Role, Vec<String>)> = s
        .nodes
        .iter()
        .map(|n| {
            let v = &n.verdict;
            let cells = vec![
                v.name.clone(),
                v.implementation.clone().unwrap_or("-".into()),
                v.version.clone().unwrap_or("-".into()),
                v.height.map_or("-".into(), |h| h.to_string()),
                v.lag.map_or("-".into(), |l| l.to_string()),
                v.head_age.map_or("-".into(), crate::duration::human),
                n.latency.map_or("-".into(), crate::duration::human),
                super::table::role_word(v.role).into(),
                if v.unsupported.is_empty() {
                    v.reason.clone()
                } else {
                    // What the node lacks turns checks off: say which, beside the reason.
                    let lacks: Vec<String> = v.unsupported.iter().map(|m| m.to_string()).collect();
                    format!("{} (lacks {})", v.reason, lacks.join(", "))
                },
            ];
            (v.role, cells)
        })
        .collect();
    out.push_str(&super::table::render(&header, &rows, colour));
    out.push('\n');
    out.push_str(&applies_and_marks(s));
    out
}

/// Under the table of `status`: the last apply and its counters, how sessions move, and the
/// operator's marks.
fn applies_and_marks(s: &Status) -> String {
    let mut out = String::new();
    match &s.last_apply {
        Some(a) => {
            let _ = writeln!(
                out,
                "last apply: {} at {}",
                match &a.record {
                    crate::apply::ApplyRecord::Reloaded => "reloaded nginx".to_string(),
                    crate::apply::ApplyRecord::Changed => {
                        "changed without a reload (nginx: backups only, file rewritten; HAProxy/SLB: set)".to_string()
                    }
                    crate::apply::ApplyRecord::Deferred => "deferred (reload throttle)".to_string(),
                    crate::apply::ApplyRecord::Failed { error } => format!("FAILED: {error}"),
                    crate::apply::ApplyRecord::Held { reason } => format!("held: {reason}"),
                    crate::apply::ApplyRecord::Standby { reason } => format!("standby: {reason}"),
                    crate::apply::ApplyRecord::Unchanged => "unchanged".to_string(),
                },
                a.at
            );
        }
        None => {
            let _ = writeln!(out, "last apply: none yet");
        }
    }
    let _ = writeln!(
        out,
        "reloads {}, failed applies {}, primary switches {}",
        s.reloads, s.failed_applies, s.switches
    );
    if let Some(mode) = s.session_mode {
        let _ = writeln!(out, "sessions leave an old primary by: {mode}");
    }
    for m in &s.pending_session_moves {
        let _ = writeln!(
            out,
            "sessions of {} move in {}",
            m.node,
            crate::duration::human(m.after)
        );
    }
    for (node, m) in &s.overrides.drained {
        let _ = writeln!(out, "drained: {node} by {} at {}", m.by, m.at);
    }
    if let Some(p) = &s.overrides.preferred {
        let _ = writeln!(
            out,
            "preferred: {} by {} at {}",
            p.node, p.mark.by, p.mark.at
        );
    }
    out
}

/// `chain-co probe`: asks one daemon directly.
pub async fn probe(
    url: &str,
    token: Option<Secret>,
    method: Option<&str>,
    params: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let url = Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    let transport = match url.scheme() {
        "ws" | "wss" => Transport::Ws,
        "http" | "https" => Transport::Http,
        other => bail!("scheme {other:?} is not supported; use http(s):// or ws(s)://"),
    };
    let endpoint = Endpoint {
        url,
        token,
        transport,
    };
    let client = RpcClient::new(timeout, 64 << 20)?;
    if let Some(m) = method {
        let params: Value = serde_json::from_str(params)
            .with_context(|| format!("--params {params:?} is not JSON (write e.g. '[]')"))?;
        let result: Value = client.call(&endpoint, m, params).await?;
        return Ok(serde_json::to_string_pretty(&result)?);
    }
    let mut out = String::new();
    let head: TipSet = client
        .call(&endpoint, "Filecoin.ChainHead", json!([]))
        .await?;
    let head = head.into_head()?;
    let version: Result<VersionInfo, _> =
        client.call(&endpoint, "Filecoin.Version", json!([])).await;
    let network: Result<String, _> = client
        .call(&endpoint, "Filecoin.StateNetworkName", json!([]))
        .await;
    // Forest answers `null`, not `[]`, when it has no peer.
    let peers: Result<Option<Vec<serde::de::IgnoredAny>>, _> =
        client.call(&endpoint, "Filecoin.NetPeers", json!([])).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "head:     height {} ({} blocks), {}s old",
        head.height,
        head.blocks,
        now.saturating_sub(head.timestamp)
    );
    // A daemon's words reach the terminal without control characters or escape sequences.
    let clean = |s: &str| crate::probe::f3::cap(s, 120);
    let key: Vec<String> = head.key.iter().map(|k| clean(k)).collect();
    let _ = writeln!(out, "tipset:   {}", key.join(", "));
    let _ = writeln!(out, "weight:   {} (parent)", head.weight);
    match version {
        Ok(v) => {
            let _ = writeln!(
                out,
                "version:  {} ({}), API {}",
                clean(&v.version),
                v.implementation(),
                v.api_version
            );
        }
        Err(e) => {
            let _ = writeln!(out, "version:  {e}");
        }
    }
    let _ = writeln!(
        out,
        "network:  {}",
        network.map_or_else(|e| clean(&e.to_string()), |n| clean(&n))
    );
    let _ = writeln!(
        out,
        "peers:    {}",
        peers.map_or_else(
            |e| clean(&e.to_string()),
            |p| p.map_or(0, |p| p.len()).to_string()
        )
    );
    Ok(out)
}

/// `GET /history`: the journal and how far back it reaches.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Journal {
    pub events: Vec<crate::serve::history::Event>,
    /// Unix seconds of the oldest event kept.
    #[serde(default)]
    pub since: Option<u64>,
    /// Where the journal is kept on disk; `None`: in memory, lost at restart.
    #[serde(default)]
    pub file: Option<String>,
}

/// `chain-co status --history`: how far back the journal reaches, then one line per event,
/// repeats folded ("×6, 09:06:00–09:06:16").
pub fn render_history(j: &Journal) -> String {
    use std::fmt::Write as _;
    let rfc = |s: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
            .to_string()
    };
    let mut out = String::new();
    let reach = j
        .since
        .map_or("empty".to_string(), |s| format!("since {}", rfc(s)));
    let kept = match &j.file {
        Some(f) => format!("kept in {} across restarts", crate::text::inert(f, 200)),
        None => "in memory: lost at restart".to_string(),
    };
    let _ = writeln!(out, "journal {reach}, {kept}");
    for e in &j.events {
        let kind = serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "?".into());
        let folded = match (e.count, e.last) {
            (n, Some(last)) if n > 1 => {
                format!("  (×{n}, {}–{})", &rfc(e.at)[11..19], &rfc(last)[11..19])
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{}  {kind:<7} {}{}{folded}",
            rfc(e.at),
            e.node
                .as_deref()
                .map(|n| format!("{}: ", crate::text::inert(n, 64)))
                .unwrap_or_default(),
            crate::text::inert(&e.text, 400)
        );
    }
    out
}

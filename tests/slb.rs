//! Alibaba Cloud SLB as the target, against a strict local mock of the CLB API that checks the
//! V3 signature and the parameters the way the real service does: bad signature, unknown key,
//! timestamp outside the allowed skew, replayed nonce, missing header, all-zero weights — each
//! refused.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chain_co::apply::slb::{authorization, sha256_hex};
use common::*;
use serde_json::{json, Value};

const KEY_ID: &str = "LTAI5tTestKeyId";
const SECRET: &str = "TestSecret-9b1f2c";
const LB: &str = "lb-bp1test";

#[derive(Default)]
struct Mock {
    weights: BTreeMap<String, u64>,
    nonces: HashSet<String>,
    sets: u32,
    throttle_next_set: bool,
    refusals: Vec<String>,
}

type Shared = Arc<Mutex<Mock>>;

fn refuse(m: &mut Mock, status: StatusCode, code: &str) -> Response {
    m.refusals.push(code.to_string());
    (
        status,
        json!({"Code": code, "Message": code, "RequestId": "mock"}).to_string(),
    )
        .into_response()
}

async fn handle(
    State(mock): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let mut m = mock.lock().expect("lock");
    let get = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let required = [
        "authorization",
        "host",
        "x-acs-action",
        "x-acs-version",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-content-sha256",
    ];
    if required.iter().any(|h| get(h).is_none()) {
        return refuse(&mut m, StatusCode::BAD_REQUEST, "MissingHeader");
    }
    if get("x-acs-version").as_deref() != Some("2014-05-15") {
        return refuse(&mut m, StatusCode::BAD_REQUEST, "InvalidVersion");
    }
    // Timestamp within 15 minutes of the server's clock.
    let date = get("x-acs-date").expect("checked");
    match humantime::parse_rfc3339(&date) {
        Ok(t) => {
            let skew = SystemTime::now()
                .duration_since(t)
                .or_else(|e| Ok::<_, ()>(e.duration()))
                .expect("infallible");
            if skew > Duration::from_secs(900) {
                return refuse(&mut m, StatusCode::BAD_REQUEST, "InvalidTimeStamp.Expired");
            }
        }
        Err(_) => return refuse(&mut m, StatusCode::BAD_REQUEST, "InvalidTimeStamp.Format"),
    }
    // Recompute the signature over what was received.
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let signed: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .filter(|(k, _)| k != "authorization")
        .collect();
    let auth = get("authorization").expect("checked");
    if !auth.starts_with(&format!("ACS3-HMAC-SHA256 Credential={KEY_ID},")) {
        return refuse(&mut m, StatusCode::NOT_FOUND, "InvalidAccessKeyId.NotFound");
    }
    if get("x-acs-content-sha256").as_deref() != Some(sha256_hex(b"").as_str()) {
        return refuse(&mut m, StatusCode::BAD_REQUEST, "ContentSha256Mismatch");
    }
    let expected = authorization(
        "POST",
        "/",
        &pairs,
        &signed,
        &sha256_hex(b""),
        KEY_ID,
        SECRET,
    );
    if auth != expected {
        return refuse(&mut m, StatusCode::BAD_REQUEST, "SignatureDoesNotMatch");
    }
    // A nonce is good once.
    if !m
        .nonces
        .insert(get("x-acs-signature-nonce").expect("checked"))
    {
        return refuse(&mut m, StatusCode::BAD_REQUEST, "SignatureNonceUsed");
    }
    let param = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if param("RegionId").as_deref() != Some("cn-hangzhou")
        || param("LoadBalancerId").as_deref() != Some(LB)
    {
        return refuse(
            &mut m,
            StatusCode::BAD_REQUEST,
            "InvalidParameter.LoadBalancer",
        );
    }
    match get("x-acs-action").as_deref() {
        Some("DescribeLoadBalancerAttribute") => {
            let servers: Vec<Value> = m
                .weights
                .iter()
                .map(|(id, w)| json!({"ServerId": id, "Weight": w, "Type": "ecs"}))
                .collect();
            json!({"LoadBalancerId": LB, "BackendServers": {"BackendServer": servers}, "RequestId": "mock"}).to_string().into_response()
        }
        Some("SetBackendServers") => {
            if m.throttle_next_set {
                m.throttle_next_set = false;
                return refuse(&mut m, StatusCode::SERVICE_UNAVAILABLE, "Throttling.User");
            }
            let Some(list) =
                param("BackendServers").and_then(|b| serde_json::from_str::<Vec<Value>>(&b).ok())
            else {
                return refuse(
                    &mut m,
                    StatusCode::BAD_REQUEST,
                    "InvalidParameter.BackendServers",
                );
            };
            let mut new = BTreeMap::new();
            for s in &list {
                let (Some(id), Some(w)) = (
                    s["ServerId"].as_str(),
                    s["Weight"].as_str().and_then(|w| w.parse::<u64>().ok()),
                ) else {
                    return refuse(
                        &mut m,
                        StatusCode::BAD_REQUEST,
                        "InvalidParameter.BackendServers",
                    );
                };
                if w > 100 || !m.weights.contains_key(id) {
                    return refuse(
                        &mut m,
                        StatusCode::BAD_REQUEST,
                        "InvalidParameter.BackendServer",
                    );
                }
                new.insert(id.to_string(), w);
            }
            if new.values().all(|w| *w == 0) {
                return refuse(
                    &mut m,
                    StatusCode::BAD_REQUEST,
                    "InvalidParameter.AllZeroWeights",
                );
            }
            m.weights.extend(new);
            m.sets += 1;
            json!({"LoadBalancerId": LB, "RequestId": "mock"})
                .to_string()
                .into_response()
        }
        _ => refuse(&mut m, StatusCode::BAD_REQUEST, "InvalidAction.NotFound"),
    }
}

async fn mock() -> (String, Shared) {
    let shared: Shared = Arc::default();
    {
        let mut m = shared.lock().expect("lock");
        for id in ["i-a", "i-b", "i-c"] {
            m.weights.insert(id.into(), 100);
        }
        m.throttle_next_set = true;
    }
    let app = Router::new()
        .route("/", axum::routing::post(handle))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (format!("http://{addr}"), shared)
}

fn config(dir: &std::path::Path, sim: &Sim, endpoint: &str, extra: &str) -> std::path::PathBuf {
    let key = dir.join("slb.key");
    std::fs::write(&key, format!("{KEY_ID}\n{SECRET}\n")).expect("key");
    let mut text = String::new();
    for n in &sim.ready.nodes {
        text.push_str(&format!(
            "[[node]]\nname = \"{}\"\nurl = \"{}\"\n",
            n.name, n.url
        ));
    }
    text.push_str(&format!(
        "[probe]\ninterval = \"300ms\"\ntimeout = \"250ms\"\n[select]\nrise = 2\nfall = 2\nlag_grace = \"1s\"\n\
         [api]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{d}/state.json\"\n{extra}\n\
         [slb]\nregion = \"cn-hangzhou\"\nload_balancer_id = \"{LB}\"\nendpoint = \"{endpoint}\"\naccess_key_file = {key:?}\n\
         [slb.servers]\na = {{ server_id = \"i-a\" }}\nb = {{ server_id = \"i-b\" }}\nc = {{ server_id = \"i-c\" }}\n",
        d = dir.display(),
        key = key.display().to_string()
    ));
    let path = dir.join("chain-co.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn weights(mock: &Shared) -> BTreeMap<String, u64> {
    mock.lock().expect("lock").weights.clone()
}

#[tokio::test]
async fn weights_follow_the_primary_through_a_strict_signed_api() {
    let (endpoint, mock) = mock().await;
    let sim = Sim::start(&["a", "b", "c"], "1s");
    let dir = tempfile::tempdir().expect("tempdir");
    let run = start_run(&config(dir.path(), &sim, &endpoint, ""));
    let api = api_url(&run).await;
    wait_healthy(&api, &run).await;
    let w = weights(&mock);
    let primary: Vec<&String> = w
        .iter()
        .filter(|(_, w)| **w == 100)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(primary.len(), 1, "one primary at full weight: {w:?}");
    assert_eq!(w.values().filter(|w| **w == 0).count(), 2, "{w:?}");
    let first = primary[0].clone();
    // Throttled once, retried, pushed.
    assert!(mock
        .lock()
        .expect("lock")
        .refusals
        .contains(&"Throttling.User".to_string()));
    // Steady state: no further push.
    let sets = mock.lock().expect("lock").sets;
    rounds_pass(&api, 5).await;
    assert_eq!(
        mock.lock().expect("lock").sets,
        sets,
        "pushed at steady state"
    );

    // The primary stalls: its weight goes to another server.
    let node = first.trim_start_matches("i-").to_string();
    sim.op(&node, r#"{"op":"stall"}"#).await;
    let moved = wait_until(Duration::from_secs(10), || {
        weights(&mock).get(&first) == Some(&0)
    })
    .await;
    assert!(
        moved.is_some(),
        "weights: {:?}; log:\n{}",
        weights(&mock),
        run.stderr()
    );
    let w = weights(&mock);
    assert_eq!(w.values().filter(|w| **w == 100).count(), 1, "{w:?}");
    let refusals = mock.lock().expect("lock").refusals.clone();
    assert!(
        refusals.iter().all(|r| r == "Throttling.User"),
        "the mock refused: {refusals:?}"
    );
    assert!(!run.stderr().contains(SECRET), "the secret was logged");
    let status = reqwest::get(format!("{api}/status"))
        .await
        .expect("status")
        .text()
        .await
        .expect("body");
    assert!(!status.contains(SECRET));
}

#[tokio::test]
async fn only_the_vrrp_master_pushes() {
    let (endpoint, mock) = mock().await;
    let sim = Sim::start(&["a", "b", "c"], "1s");
    let dir = tempfile::tempdir().expect("tempdir");
    let role = dir.path().join("role");
    std::fs::write(&role, "BACKUP\n").expect("role");
    let run = start_run(&config(
        dir.path(),
        &sim,
        &endpoint,
        &format!("[ha]\nrole_file = {:?}\n", role.display().to_string()),
    ));
    let api = api_url(&run).await;
    wait_healthy(&api, &run).await;
    rounds_pass(&api, 3).await;
    assert_eq!(mock.lock().expect("lock").sets, 0, "a backup pushed");
    let status: Value = serde_json::from_str(
        &reqwest::get(format!("{api}/status"))
            .await
            .expect("s")
            .text()
            .await
            .expect("b"),
    )
    .expect("json");
    assert_eq!(status["role"], "backup");
    std::fs::write(&role, "MASTER\n").expect("role");
    let pushed = wait_until(Duration::from_secs(10), || {
        mock.lock().expect("lock").sets > 0
    })
    .await;
    assert!(
        pushed.is_some(),
        "the master did not push; log:\n{}",
        run.stderr()
    );
}

/// The mock is strict: a request with a bad secret, a replayed nonce or an old date is refused.
#[tokio::test]
async fn the_mock_refuses_what_the_service_refuses() {
    let (endpoint, mock) = mock().await;
    let client = reqwest::Client::new();
    let send = |secret: &'static str, nonce: &'static str, date: String| {
        let (client, endpoint) = (client.clone(), endpoint.clone());
        async move {
            let host = endpoint.trim_start_matches("http://").to_string();
            let query = vec![
                ("LoadBalancerId".to_string(), LB.to_string()),
                ("RegionId".to_string(), "cn-hangzhou".to_string()),
            ];
            let headers = vec![
                ("host".to_string(), host),
                (
                    "x-acs-action".to_string(),
                    "DescribeLoadBalancerAttribute".to_string(),
                ),
                ("x-acs-version".to_string(), "2014-05-15".to_string()),
                ("x-acs-date".to_string(), date),
                ("x-acs-signature-nonce".to_string(), nonce.to_string()),
                ("x-acs-content-sha256".to_string(), sha256_hex(b"")),
            ];
            let auth = authorization(
                "POST",
                "/",
                &query,
                &headers,
                &sha256_hex(b""),
                KEY_ID,
                secret,
            );
            let mut req = client
                .post(format!(
                    "{endpoint}/?LoadBalancerId={LB}&RegionId=cn-hangzhou"
                ))
                .header("authorization", auth);
            for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
                req = req.header(k.as_str(), v.as_str());
            }
            req.send().await.expect("send").status().as_u16()
        }
    };
    let now = || humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    assert_eq!(send(SECRET, "n1", now()).await, 200);
    assert_eq!(send(SECRET, "n1", now()).await, 400, "replayed nonce");
    assert_eq!(send("wrong", "n2", now()).await, 400, "bad signature");
    let old = humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(3600))
        .to_string();
    assert_eq!(send(SECRET, "n3", old).await, 400, "old timestamp");
    let refusals = mock.lock().expect("lock").refusals.clone();
    assert_eq!(
        refusals,
        [
            "SignatureNonceUsed",
            "SignatureDoesNotMatch",
            "InvalidTimeStamp.Expired"
        ]
    );
}

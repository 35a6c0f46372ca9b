//! Finality as the daemons report it, and how chain-co reads it.
//!
//! Since April 2025 mainnet has fast finality (F3): a tipset that F3 finalizes is never
//! reverted, and Lotus refuses any fork past it. A node whose chain does not hold the finalized
//! tipset is on a dead fork, however heavy. Three readings are asked, every few rounds, of the
//! nodes that have them:
//! - `Filecoin.F3GetLatestCertificate`: the last entry of its `ECChain` is the tipset F3
//!   finalized (`Epoch`, `Key`); `GPBFTInstance` is the instance that finalized it
//!   (go-f3 `certs.FinalityCertificate`; forest `src/rpc/methods/f3/types.rs`);
//! - `Filecoin.ChainGetFinalizedTipSet`: the node's finalized tipset, F3's where it runs, else
//!   EC finality (head − 900);
//! - `Filecoin.ChainGetTipSetByHeight(epoch, null)`: which tipset the node's own chain holds at
//!   the pool's finalized epoch (the fork check, which also works while the node's F3 is down).
//!
//! The F3 state is read in the light of `Filecoin.F3IsRunning`, asked first, because the
//! other methods word "not running" differently on each implementation:
//! - **Lotus** (node/impl/full/f3.go, go-f3 host.go): F3 disabled in its config answers every
//!   F3 method with code 4 "f3 is disabled" (`api.EF3Disabled`); F3 not running answers code 1
//!   "f3 is not running" (go-jsonrpc gives code 1 to every error it has not registered, so code
//!   1 also carries "missing permission": the words decide); while it runs without a
//!   certificate yet, `F3GetLatestCertificate` is `null`; `F3GetProgress` of a stopped F3 is the
//!   zero value with `"Input": null`, not instance 0.
//! - **Forest** forwards every F3 method to its sidecar and turns any failure into `-32603`:
//!   without the sidecar `"client error (Connect)"` (recorded, shared/daemons), `F3IsRunning`
//!   included; the sidecar's own errors in Debug words (`ErrorObject { code: ServerError(1),
//!   message: "f3 is not running", … }`, forest src/rpc/methods/f3.rs): not running, asked
//!   again next finality round.
//! - A missing method (`-32601`) is an absent F3, asked again after minutes like other optional
//!   methods, as are "disabled" and an error that says neither.
//!
//! `F3GetManifest` gives the F3 network name; a node whose name is not the pool's is warned
//! about (it follows another F3 network's certificates). It is asked on its own, apart from the
//! head, so that a huge manifest costs that reading only.
//!
//! Every byte is a daemon's: a certificate with a huge or empty `ECChain`, an epoch below zero
//! or above the head, a key that is not a list of CIDs are each an unanswerable check for that
//! node ([`F3View::Unreadable`]), never a crash and never a verdict on another node.

use std::fmt;

use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::probe::rpc::{Cid, Raw, RpcError, TipSet};

/// go-f3 proposes at most 100 tipsets an instance (`ChainProposedLength`, `MaxChainLength`);
/// anything longer is not a certificate.
pub(crate) const MAX_EC_CHAIN: usize = 128;
/// Filecoin tipsets have a handful of blocks (5 expected winners an epoch); more is garbage.
pub(crate) const MAX_KEY_CIDS: usize = 64;
/// A CIDv1 in base32 is about 62 characters; longer is not a CID.
const MAX_CID_LEN: usize = 128;

/// A tipset by epoch and key: what finality is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TipsetRef {
    pub epoch: u64,
    pub key: Vec<String>,
}

impl fmt::Display for TipsetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.key.first().map(String::as_str).unwrap_or("");
        write!(
            f,
            "epoch {} ({}…)",
            self.epoch,
            &first[..first.len().min(16)]
        )
    }
}

/// What one node says about F3: one variant per state an operator needs told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum F3View {
    /// The node has no F3 methods (older daemons, Fuhon, gateways): its checks are off, asked
    /// again after minutes.
    Lacking,
    /// F3 is turned off in the node's configuration (Lotus code 4): asked again after minutes.
    Disabled,
    /// F3 is not running on the node (Lotus `F3IsRunning` false or "f3 is not running", Forest
    /// without its sidecar): transient, asked again at the next finality round.
    NotRunning(String),
    /// F3 runs and has no certificate yet (Lotus answers `null`): a fresh start.
    NoCertificate,
    /// The tipset F3 finalized, by the node's latest certificate, and the instance.
    Finalized { tipset: TipsetRef, instance: u64 },
    /// The node refused the F3 methods with an error that says neither "absent" nor "not
    /// running" (a missing permission, a third-party server's words): asked again after
    /// minutes.
    Refused(String),
    /// The node answered something that is not a certificate: that check is unanswerable.
    Unreadable(String),
}

impl F3View {
    /// States that last: asked again after minutes, not every finality round.
    pub(crate) fn lasting(&self) -> bool {
        matches!(
            self,
            F3View::Lacking | F3View::Disabled | F3View::Refused(_)
        )
    }
}

impl fmt::Display for F3View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            F3View::Lacking => f.write_str("no F3 methods"),
            F3View::Disabled => f.write_str("F3 disabled in the node's configuration"),
            F3View::NotRunning(why) => write!(f, "F3 not running ({why})"),
            F3View::NoCertificate => f.write_str("F3 running, no certificate yet"),
            F3View::Finalized { tipset, instance } => {
                write!(f, "F3 finalized {tipset}, instance {instance}")
            }
            F3View::Refused(why) => write!(f, "F3 refused ({why})"),
            F3View::Unreadable(why) => write!(f, "F3 certificate unreadable: {why}"),
        }
    }
}

/// Everything chain-co last learned about one node's finality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finality {
    pub f3: F3View,
    /// `ChainGetFinalizedTipSet`: F3's where it runs, else EC finality.
    pub finalized: Option<TipsetRef>,
    /// The tipset the node's own chain holds at the epoch asked (the pool's finalized epoch
    /// when it was asked): the fork check.
    pub chain_at: Option<TipsetRef>,
    /// The F3 instance the node is in (`F3GetProgress`), where it says.
    pub instance: Option<u64>,
    /// The F3 network its manifest names (`F3GetManifest`), or why it could not be read.
    pub network: Option<Result<String, String>>,
}

impl Finality {
    /// The tipset this node says F3 finalized, if it says one.
    pub(crate) fn f3_finalized(&self) -> Option<&TipsetRef> {
        match &self.f3 {
            F3View::Finalized { tipset, .. } => Some(tipset),
            _ => None,
        }
    }

    /// The node's F3 in words: its state, and its F3 network where the manifest said one.
    pub(crate) fn describe(&self) -> String {
        match &self.network {
            Some(Ok(name)) => format!("{} (network {name})", self.f3),
            Some(Err(why)) => format!("{}; manifest unreadable: {why}", self.f3),
            None => self.f3.to_string(),
        }
    }

    /// The node's F3 instance: its progress, else its certificate's.
    pub(crate) fn f3_instance(&self) -> Option<u64> {
        self.instance.or(match &self.f3 {
            F3View::Finalized { instance, .. } => Some(*instance),
            _ => None,
        })
    }
}

/// Lotus's code for "f3 is disabled" (`api.EF3Disabled`: go-jsonrpc's first user code 2, then
/// `EOutOfGas`, `EActorNotFound`, `EF3Disabled`).
const LOTUS_F3_DISABLED: i64 = 4;
/// jsonrpsee's internal error: Forest's words for its unreachable F3 sidecar.
const INTERNAL_ERROR: i64 = -32603;

/// How a JSON-RPC error to an F3 method reads. A transport failure is the probe's failure, not
/// news about F3 (`None`: the last reading stands).
pub(crate) fn f3_error(e: &RpcError) -> Option<F3View> {
    let RpcError::Rpc { code, message } = e else {
        return None;
    };
    let words = cap(message, 80);
    Some(if e.is_method_missing() {
        F3View::Lacking
    } else if *code == LOTUS_F3_DISABLED || words.to_ascii_lowercase().contains("disabled") {
        F3View::Disabled
    } else if *code == INTERNAL_ERROR || words.to_ascii_lowercase().contains("not running") {
        F3View::NotRunning(words)
    } else {
        F3View::Refused(words)
    })
}

/// The F3 state of one finality round's replies: `F3IsRunning` first, then the certificate
/// and the progress read in its light. `None`: a transport failure said nothing (the last
/// reading stands).
pub(crate) fn read_f3(
    running: Result<Raw, RpcError>,
    cert: Result<Raw, RpcError>,
    progress: Result<Raw, RpcError>,
    head: Option<u64>,
) -> Option<(F3View, Option<u64>)> {
    let runs = match running {
        Ok(raw) => match serde_json::from_str::<bool>(raw.get()) {
            Ok(runs) => runs,
            Err(_) => {
                let said = cap(raw.get(), 40);
                return Some((
                    F3View::Unreadable(format!("F3IsRunning answered {said}, not true or false")),
                    None,
                ));
            }
        },
        // A node without F3IsRunning (older daemons) is read by its certificate alone.
        Err(e) if e.is_method_missing() => true,
        Err(e) => return f3_error(&e).map(|v| (v, None)),
    };
    if !runs {
        return Some((F3View::NotRunning("F3IsRunning is false".into()), None));
    }
    let view = match cert {
        Ok(raw) if raw.get().trim() == "null" => F3View::NoCertificate,
        Ok(raw) => read_certificate(raw.get(), head),
        Err(e) => f3_error(&e)?,
    };
    let instance = match view {
        F3View::Finalized { .. } | F3View::NoCertificate => {
            progress.ok().and_then(|raw| read_progress(raw.get()))
        }
        _ => None,
    };
    Some((view, instance))
}

/// A daemon's text, capped and without control characters, for a reason or a status field.
pub use crate::text::inert as cap;

/// One `ECChain` entry, as far as chain-co reads it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EcEntry {
    key: Option<Vec<Cid>>,
    epoch: i64,
}

/// The last `ECChain` entry, and how many there were, read without holding the others.
struct LastOf {
    last: Option<EcEntry>,
    len: usize,
}

impl<'de> Deserialize<'de> for LastOf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LastOf;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of tipsets")
            }
            fn visit_unit<E>(self) -> Result<LastOf, E> {
                Ok(LastOf { last: None, len: 0 })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LastOf, A::Error> {
                let mut out = LastOf { last: None, len: 0 };
                while out.len < MAX_EC_CHAIN {
                    match seq.next_element::<EcEntry>()? {
                        Some(e) => {
                            out.last = Some(e);
                            out.len += 1;
                        }
                        None => return Ok(out),
                    }
                }
                // Over the cap: count the rest without reading them, so the reply is rejected
                // as too long rather than as malformed.
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    out.len += 1;
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct Certificate {
    #[serde(
        rename = "GPBFTInstance",
        deserialize_with = "crate::probe::rpc::loose::u64"
    )]
    instance: u64,
    #[serde(rename = "ECChain", default)]
    ec_chain: Option<LastOf>,
}

/// Reads a `F3GetLatestCertificate` reply; `head` is the node's head height (a finalized
/// epoch above it is a lie).
pub(crate) fn read_certificate(raw: &str, head: Option<u64>) -> F3View {
    let cert: Certificate = match from_str(raw) {
        Ok(c) => c,
        Err(why) => return F3View::Unreadable(why),
    };
    let Some(chain) = cert.ec_chain else {
        return F3View::Unreadable("ECChain is missing".into());
    };
    if chain.len > MAX_EC_CHAIN {
        return F3View::Unreadable(format!(
            "ECChain has {} entries (at most {MAX_EC_CHAIN})",
            chain.len
        ));
    }
    let Some(last) = chain.last else {
        return F3View::Unreadable("ECChain is empty".into());
    };
    match tipset_ref(last.epoch, last.key, head) {
        Ok(tipset) => F3View::Finalized {
            tipset,
            instance: cert.instance,
        },
        Err(why) => F3View::Unreadable(why),
    }
}

/// Reads a tipset reply (`ChainGetFinalizedTipSet`, `ChainGetTipSetByHeight`) as a
/// [`TipsetRef`]; `head` bounds the epoch as for certificates.
pub(crate) fn read_tipset(raw: &str, head: Option<u64>) -> Result<TipsetRef, String> {
    let ts: TipSet = from_str(raw)?;
    tipset_ref(ts.height, Some(ts.cids), head)
}

/// `F3GetProgress`: the instance the node's F3 is in. A stopped F3 answers the zero value with
/// `"Input": null` (go-f3 `InstanceProgress`), which is no instance at all; instance 0 with an
/// input is a real one (a fresh network). A reply without the field (go-f3 before `Input`)
/// is read by its `ID`.
pub(crate) fn read_progress(raw: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Progress {
        #[serde(rename = "ID", deserialize_with = "crate::probe::rpc::loose::u64")]
        id: u64,
        #[serde(rename = "Input", default, deserialize_with = "null_or_not")]
        input_null: Option<bool>,
    }
    from_str::<Progress>(raw)
        .ok()
        .filter(|p| p.input_null != Some(true))
        .map(|p| p.id)
}

/// A field present: `Some(true)` when it is `null`, `Some(false)` otherwise (never held).
fn null_or_not<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Some(Option::<IgnoredAny>::deserialize(d)?.is_none()))
}

/// What a `F3GetManifest` reply says of the node's F3 network: `None` says nothing new (a
/// transport failure: the last reading stands); `Some(None)`: the node has no manifest to give.
pub(crate) fn read_manifest_reply(
    reply: Result<Raw, RpcError>,
) -> Option<Option<Result<String, String>>> {
    match reply {
        Ok(raw) if raw.get().trim() == "null" => Some(None),
        Ok(raw) => Some(Some(read_manifest(raw.get()))),
        Err(e @ RpcError::TooLarge { .. }) => Some(Some(Err(format!("manifest: {e}")))),
        Err(RpcError::Rpc { .. }) => Some(None),
        Err(_) => None,
    }
}

/// F3 network names are short (`filecoin`, `calibrationnet`); longer is not a name.
const MAX_NETWORK_NAME: usize = 64;

/// `F3GetManifest`: the F3 network the node follows. The rest of the manifest is skipped as
/// it is read, whatever its size.
pub(crate) fn read_manifest(raw: &str) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Manifest {
        #[serde(rename = "NetworkName")]
        network_name: Option<String>,
    }
    let name = from_str::<Manifest>(raw)?
        .network_name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| "the manifest names no network".to_string())?;
    if name.chars().count() > MAX_NETWORK_NAME {
        return Err(format!(
            "a network name of {} characters",
            name.chars().count()
        ));
    }
    Ok(cap(&name, MAX_NETWORK_NAME))
}

fn from_str<T: DeserializeOwned>(raw: &str) -> Result<T, String> {
    serde_json::from_str(raw).map_err(|e| cap(&e.to_string(), 120))
}

fn tipset_ref(epoch: i64, key: Option<Vec<Cid>>, head: Option<u64>) -> Result<TipsetRef, String> {
    let epoch = u64::try_from(epoch).map_err(|_| format!("epoch {epoch} is below zero"))?;
    if let Some(h) = head.filter(|&h| epoch > h) {
        return Err(format!(
            "finalized epoch {epoch} is above the node's head {h}"
        ));
    }
    let key = key.unwrap_or_default();
    if key.is_empty() {
        return Err(format!("the tipset at epoch {epoch} has no key"));
    }
    if key.len() > MAX_KEY_CIDS {
        return Err(format!("a key of {} CIDs", key.len()));
    }
    let plausible = |c: &str| {
        !c.is_empty() && c.len() <= MAX_CID_LEN && c.bytes().all(|b| b.is_ascii_alphanumeric())
    };
    if let Some(bad) = key.iter().find(|c| !plausible(&c.cid)) {
        return Err(format!("key entry {:?} is not a CID", cap(&bad.cid, 40)));
    }
    Ok(TipsetRef {
        epoch,
        key: key.into_iter().map(|c| c.cid).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn cert(chain: &str) -> String {
        format!(
            r#"{{"GPBFTInstance":6204,"ECChain":{chain},"SupplementalData":{{}},"Signers":[0],"Signature":"AA=="}}"#
        )
    }

    fn entry(epoch: i64, cid: &str) -> String {
        format!(
            r#"{{"Key":[{{"/":"{cid}"}}],"Commitments":"AAAA","Epoch":{epoch},"PowerTable":{{"/":"bafyPT"}}}}"#
        )
    }

    #[test]
    fn the_last_ec_chain_entry_is_the_finalized_tipset() {
        let raw = cert(&format!(
            "[{},{}]",
            entry(100, "bafyA"),
            entry(101, "bafyB")
        ));
        assert_eq!(
            read_certificate(&raw, Some(105)),
            F3View::Finalized {
                tipset: TipsetRef {
                    epoch: 101,
                    key: vec!["bafyB".into()]
                },
                instance: 6204
            }
        );
    }

    #[test]
    fn bad_certificates_are_unreadable_with_a_reason() {
        let cases = [
            (cert("[]"), "empty"),
            (cert("null"), "missing"),
            (r#"{"GPBFTInstance":1}"#.to_string(), "missing"),
            (cert(&format!("[{}]", entry(-1, "bafyA"))), "below zero"),
            (
                cert(&format!("[{}]", entry(200, "bafyA"))),
                "above the node's head",
            ),
            (cert(r#"[{"Key":"AAAA","Epoch":5}]"#), "invalid type"),
            (
                cert(r#"[{"Key":[{"/":"bafy\n[nginx]"}],"Epoch":5}]"#),
                "not a CID",
            ),
            (cert(r#"[{"Key":[],"Epoch":5}]"#), "no key"),
            (
                cert(&format!("[{}]", vec![entry(5, "bafyA"); 200].join(","))),
                "200 entries",
            ),
            ("\"nonsense\"".to_string(), "invalid type"),
        ];
        for (raw, want) in cases {
            match read_certificate(&raw, Some(150)) {
                F3View::Unreadable(why) => assert!(why.contains(want), "{raw}: {why}"),
                other => panic!("{raw}: {other:?}"),
            }
        }
    }

    fn raw(json: &str) -> Result<Raw, RpcError> {
        Ok(RawValue::from_string(json.to_string()).expect("json"))
    }

    fn rpc(code: i64, message: &str) -> Result<Raw, RpcError> {
        Err(RpcError::Rpc {
            code,
            message: message.into(),
        })
    }

    const PROGRESS: &str =
        r#"{"ID":1413,"Round":1,"Phase":4,"Input":[{"Key":[{"/":"bafyA"}],"Epoch":0}]}"#;
    /// go-f3's `InstanceProgress` zero value: what Lotus answers while its F3 is not running.
    const STOPPED_PROGRESS: &str = r#"{"ID":0,"Round":0,"Phase":0,"Input":null}"#;

    /// One row per F3 state, as Lotus (node/impl/full/f3.go, go-f3, go-jsonrpc) and Forest
    /// (recorded, shared/daemons) answer it: (`F3IsRunning`, certificate, progress) → state.
    #[test]
    fn each_f3_state_reads_in_its_own_words_for_lotus_and_forest() {
        let forest_down = || rpc(-32603, "client error (Connect)");
        let certificate = cert(&format!("[{}]", entry(101, "bafyB")));
        type Replies = [Result<Raw, RpcError>; 3];
        let rows: Vec<(&str, Replies, F3View, Option<u64>)> = vec![
            (
                "lotus running, certificate",
                [raw("true"), raw(&certificate), raw(PROGRESS)],
                F3View::Finalized {
                    tipset: TipsetRef {
                        epoch: 101,
                        key: vec!["bafyB".into()],
                    },
                    instance: 6204,
                },
                Some(1413),
            ),
            (
                "lotus running, no certificate yet",
                [raw("true"), raw("null"), raw(PROGRESS)],
                F3View::NoCertificate,
                Some(1413),
            ),
            (
                "lotus not running",
                [
                    raw("false"),
                    rpc(1, "f3 is not running"),
                    raw(STOPPED_PROGRESS),
                ],
                F3View::NotRunning("F3IsRunning is false".into()),
                None,
            ),
            (
                "lotus disabled",
                [
                    rpc(4, "f3 is disabled"),
                    rpc(4, "f3 is disabled"),
                    rpc(4, "f3 is disabled"),
                ],
                F3View::Disabled,
                None,
            ),
            (
                "lotus without F3 methods",
                [
                    rpc(-32601, "method 'Filecoin.F3IsRunning' not found"),
                    rpc(-32601, "method 'Filecoin.F3GetLatestCertificate' not found"),
                    rpc(-32601, "method 'Filecoin.F3GetProgress' not found"),
                ],
                F3View::Lacking,
                None,
            ),
            (
                "forest without its sidecar",
                [forest_down(), forest_down(), forest_down()],
                F3View::NotRunning("client error (Connect)".into()),
                None,
            ),
            (
                "forest without F3 methods",
                [
                    rpc(-32601, "Method not found"),
                    rpc(-32601, "Method not found"),
                    rpc(-32601, "Method not found"),
                ],
                F3View::Lacking,
                None,
            ),
            (
                "older daemon without F3IsRunning reads its certificate",
                [
                    rpc(-32601, "Method not found"),
                    raw(&certificate),
                    raw(PROGRESS),
                ],
                F3View::Finalized {
                    tipset: TipsetRef {
                        epoch: 101,
                        key: vec!["bafyB".into()],
                    },
                    instance: 6204,
                },
                Some(1413),
            ),
            (
                "code 1 that is not 'not running' (a missing permission)",
                [
                    rpc(
                        1,
                        "missing permission to invoke 'F3IsRunning' (need 'read')",
                    ),
                    rpc(1, "missing permission"),
                    rpc(1, "missing permission"),
                ],
                F3View::Refused("missing permission to invoke 'F3IsRunning' (need 'read')".into()),
                None,
            ),
            (
                "running, then not running by the time the certificate is asked",
                [
                    raw("true"),
                    rpc(1, "f3 is not running"),
                    raw(STOPPED_PROGRESS),
                ],
                F3View::NotRunning("f3 is not running".into()),
                None,
            ),
        ];
        for (what, [running, certificate, progress], view, instance) in rows {
            assert_eq!(
                read_f3(running, certificate, progress, Some(150)),
                Some((view, instance)),
                "{what}"
            );
        }
    }

    #[test]
    fn states_that_last_are_asked_again_after_minutes_and_not_running_at_once() {
        assert!(F3View::Lacking.lasting());
        assert!(F3View::Disabled.lasting());
        assert!(F3View::Refused("x".into()).lasting());
        assert!(!F3View::NotRunning("x".into()).lasting());
        assert!(!F3View::NoCertificate.lasting());
        assert_eq!(
            F3View::NoCertificate.to_string(),
            "F3 running, no certificate yet"
        );
        assert_eq!(
            F3View::Disabled.to_string(),
            "F3 disabled in the node's configuration"
        );
    }

    #[test]
    fn hostile_f3_replies_are_a_reason_never_a_panic() {
        let said = read_f3(raw(r#""yes\u001b[2J""#), raw("null"), raw("null"), None);
        match said {
            Some((F3View::Unreadable(why), None)) => {
                assert!(why.contains("not true or false"), "{why}");
                assert!(!why.contains('\u{1b}'), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // A transport failure says nothing: the last reading stands.
        assert_eq!(
            read_f3(
                Err(RpcError::Timeout(std::time::Duration::from_secs(1))),
                raw("null"),
                raw("null"),
                None
            ),
            None
        );
    }

    #[test]
    fn progress_of_a_stopped_f3_is_no_instance_but_instance_0_with_an_input_is() {
        assert_eq!(read_progress(STOPPED_PROGRESS), None);
        assert_eq!(
            read_progress(r#"{"ID":0,"Round":0,"Phase":0,"Input":[{"Epoch":0}]}"#),
            Some(0)
        );
        assert_eq!(read_progress(r#"{"ID":7,"Round":0,"Phase":1}"#), Some(7));
        assert_eq!(read_progress(PROGRESS), Some(1413));
    }

    #[test]
    fn manifests_give_their_network_name_and_hostile_ones_a_reason() {
        let mainnet = r#"{"Pause":false,"ProtocolVersion":7,"BootstrapEpoch":4920480,"NetworkName":"filecoin","InitialPowerTable":{"/":"bafy2bzacecklgxd2eksmodvhgurqvorkg3wamgqkrunir3al2gchv2cikgmbu"},"Gpbft":{"Delta":6000000000}}"#;
        assert_eq!(read_manifest(mainnet), Ok("filecoin".into()));
        let huge = format!(
            r#"{{"NetworkName":"filecoin","Padding":"{}"}}"#,
            "A".repeat(10 << 20)
        );
        assert_eq!(read_manifest(&huge), Ok("filecoin".into()));
        assert!(read_manifest(r#"{"NetworkName":""}"#).is_err());
        assert!(read_manifest(r#"{"NetworkName":5}"#).is_err());
        assert!(read_manifest(&format!(r#"{{"NetworkName":"{}"}}"#, "n".repeat(100))).is_err());
        assert_eq!(
            read_manifest(r#"{"NetworkName":"file\u001bcoin"}"#),
            Ok("file coin".into())
        );
        assert_eq!(
            read_manifest_reply(Err(RpcError::TooLarge { limit: 4096 })),
            Some(Some(Err("manifest: reply larger than 4096 bytes".into())))
        );
        assert_eq!(read_manifest_reply(rpc(4, "f3 is disabled")), Some(None));
    }

    #[test]
    fn a_recorded_forest_finalized_tipset_reads() {
        let raw = r#"{"Cids":[{"/":"bafy2bzacecyaggy24wol5ruvs6qm73gjibs2l2iyhcqmvi7r7a4ph7zx3yqd4"}],"Blocks":[{"ParentWeight":"0","Timestamp":1667326380}],"Height":0}"#;
        let t = read_tipset(raw, Some(0)).expect("reads");
        assert_eq!(t.epoch, 0);
    }
}

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
//! Real Forest without its F3 sidecar answers the F3 methods with `-32603 "client error
//! (Connect)"` (shared/daemons): F3 *down* on that node, a transient state shown and asked
//! again, not a broken node and not a missing method (`-32601`, asked again every few
//! minutes, like other optional methods).
//!
//! Every byte is a daemon's: a certificate with a huge or empty `ECChain`, an epoch below zero
//! or above the head, a key that is not a list of CIDs are each an unanswerable check for that
//! node ([`F3View::Unreadable`]), never a crash and never a verdict on another node.

use std::fmt;

use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::probe::rpc::{Cid, RpcError, TipSet};

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

/// What one node says about F3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum F3View {
    /// The node has no F3 methods (older daemons, Fuhon, gateways): its checks are off.
    Lacking,
    /// F3 is down on this node (`-32603`, or F3IsRunning false): transient, asked again.
    Down(String),
    /// The tipset F3 finalized, by the node's latest certificate, and the instance.
    Finalized { tipset: TipsetRef, instance: u64 },
    /// The node answered something that is not a certificate: that check is unanswerable.
    Unreadable(String),
}

impl fmt::Display for F3View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            F3View::Lacking => f.write_str("no F3 methods"),
            F3View::Down(why) => write!(f, "F3 down ({why})"),
            F3View::Finalized { tipset, instance } => {
                write!(f, "F3 finalized {tipset}, instance {instance}")
            }
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
}

impl Finality {
    /// The tipset this node says F3 finalized, if it says one.
    pub(crate) fn f3_finalized(&self) -> Option<&TipsetRef> {
        match &self.f3 {
            F3View::Finalized { tipset, .. } => Some(tipset),
            _ => None,
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

/// How a JSON-RPC error to an F3 method reads: `-32603` is F3 down on the node (Forest
/// without its sidecar; Lotus while its F3 is not running); a missing method is a lack; any
/// other error also turns the check off for a while, as for other optional methods (a
/// third-party server words these its own way).
pub(crate) fn f3_error(e: &RpcError) -> Option<F3View> {
    match e {
        RpcError::Rpc {
            code: -32603,
            message,
        } => Some(F3View::Down(cap(message, 80))),
        RpcError::Rpc { .. } => Some(F3View::Lacking),
        // A transport failure is the probe's failure, not news about F3.
        _ => None,
    }
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

/// `F3GetProgress`: the instance the node's F3 is in.
pub(crate) fn read_progress(raw: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Progress {
        #[serde(rename = "ID", deserialize_with = "crate::probe::rpc::loose::u64")]
        id: u64,
    }
    from_str::<Progress>(raw).ok().map(|p| p.id)
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

    #[test]
    fn f3_errors_read_as_down_or_lacking() {
        let down = RpcError::Rpc {
            code: -32603,
            message: "client error (Connect)".into(),
        };
        assert_eq!(
            f3_error(&down),
            Some(F3View::Down("client error (Connect)".into()))
        );
        let missing = RpcError::Rpc {
            code: -32601,
            message: "Method not found".into(),
        };
        assert_eq!(f3_error(&missing), Some(F3View::Lacking));
        assert_eq!(
            f3_error(&RpcError::Timeout(std::time::Duration::from_secs(1))),
            None
        );
    }

    #[test]
    fn a_recorded_forest_finalized_tipset_reads() {
        let raw = r#"{"Cids":[{"/":"bafy2bzacecyaggy24wol5ruvs6qm73gjibs2l2iyhcqmvi7r7a4ph7zx3yqd4"}],"Blocks":[{"ParentWeight":"0","Timestamp":1667326380}],"Height":0}"#;
        let t = read_tipset(raw, Some(0)).expect("reads");
        assert_eq!(t.epoch, 0);
    }
}

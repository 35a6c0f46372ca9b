//! A block header proves its own content: its CID is the blake2b-256 hash of its DAG-CBOR
//! encoding, and `ParentWeight`, `Height`, `Parents` and `Timestamp` are inside it. A daemon
//! that reports a known key with another weight sends a header that no longer hashes to that
//! key. This module re-encodes a header from the JSON a daemon sends and computes its CID.
//!
//! The encoding follows Lotus `chain/types/blockheader.go` (`cbor_gen.go`) and Forest
//! `src/blocks/header.rs`, and each pitfall is a test below:
//! - **field order**: a 16-field tuple, in Lotus's order (`Miner` … `ParentBaseFee`);
//! - **Miner**: the address's bytes; `t`/`f` prefixes are parsed by the prefix itself, never
//!   through `fvm_shared`'s process-global network (with which `"t00"` fails);
//! - **big integers** (`ParentWeight`, `ParentBaseFee`): a sign byte and big-endian bytes,
//!   zero as empty bytes (`fvm_shared::bigint::bigint_ser`);
//! - **signatures** (`BLSAggregate`, `BlockSig`): one byte string, the type byte then the data;
//! - **nulls**: an absent pointer field (`Ticket`, `ElectionProof`, the signatures) is CBOR
//!   null; a JSON `null` list is `[]` (Forest sends `WinPoStProof: null`) and a `null` byte
//!   field is empty bytes (Forest's genesis `"VRFProof": null`);
//! - **CIDs**: tag 42 with a 0x00 prefix (the `cid` crate's serde); the genesis parent is a
//!   sha2 `bafyrei…` CID, kept as it is;
//! - **tuples**: `Ticket`, `ElectionProof`, `BeaconEntries` and `WinPoStProof` entries are
//!   tuples; every list is capped, so a hostile header costs little to refuse.
//!
//! Nothing here is written in CBOR by hand: `fvm_ipld_encoding` (serde_ipld_dagcbor with
//! tuple serde) encodes, `multihash-codetable` hashes.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use cid::Cid;
use fvm_ipld_encoding::tuple::{serde_tuple, Serialize_tuple};
use fvm_ipld_encoding::{strict_bytes, DAG_CBOR};
use fvm_shared::address::{Address, Network};
use fvm_shared::bigint::{bigint_ser, BigInt};
use multihash_codetable::{Code, MultihashDigest};
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use crate::probe::rpc::loose;

/// Beacon entries a header may carry: one a round, more after null rounds; far more is junk.
pub(crate) const MAX_BEACON_ENTRIES: usize = 1000;
/// Winning PoSt proofs a header carries: one per proof type in use.
pub(crate) const MAX_WINPOST_PROOFS: usize = 16;
/// Parents: a tipset key (a handful of blocks).
pub(crate) const MAX_PARENTS: usize = 64;
/// Bytes of one base64 field once decoded (VRF proofs and signatures are 96, PoSt 192).
const MAX_FIELD_BYTES: usize = 16 * 1024;

/// Why a header could not be re-encoded: the words of a reason on that node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unencodable(pub String);

impl fmt::Display for Unencodable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A block header as Lotus's JSON gives it: every field, to re-encode it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HeaderJson {
    pub miner: String,
    #[serde(default)]
    pub ticket: Option<TicketJson>,
    #[serde(default)]
    pub election_proof: Option<ElectionProofJson>,
    #[serde(default, deserialize_with = "capped::<_, MAX_BEACON_ENTRIES, _>")]
    pub beacon_entries: Vec<BeaconEntryJson>,
    #[serde(
        rename = "WinPoStProof",
        default,
        deserialize_with = "capped::<_, MAX_WINPOST_PROOFS, _>"
    )]
    pub win_post_proof: Vec<PoStProofJson>,
    #[serde(default, deserialize_with = "capped::<_, MAX_PARENTS, _>")]
    pub parents: Vec<CidJson>,
    #[serde(deserialize_with = "loose::big_integer")]
    pub parent_weight: String,
    #[serde(deserialize_with = "loose::i64")]
    pub height: i64,
    pub parent_state_root: CidJson,
    pub parent_message_receipts: CidJson,
    pub messages: CidJson,
    #[serde(rename = "BLSAggregate", default)]
    pub bls_aggregate: Option<SignatureJson>,
    #[serde(deserialize_with = "loose::u64")]
    pub timestamp: u64,
    #[serde(default)]
    pub block_sig: Option<SignatureJson>,
    #[serde(default, deserialize_with = "loose::u64")]
    pub fork_signaling: u64,
    #[serde(deserialize_with = "loose::big_integer")]
    pub parent_base_fee: String,
}

/// A CID in its JSON form `{"/": "bafy..."}`.
#[derive(Debug, Clone, Deserialize)]
pub struct CidJson {
    #[serde(rename = "/")]
    pub cid: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TicketJson {
    #[serde(rename = "VRFProof", default)]
    pub vrf_proof: Bytes,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ElectionProofJson {
    #[serde(rename = "WinCount", default, deserialize_with = "loose::i64")]
    pub win_count: i64,
    #[serde(rename = "VRFProof", default)]
    pub vrf_proof: Bytes,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BeaconEntryJson {
    #[serde(rename = "Round", deserialize_with = "loose::u64")]
    pub round: u64,
    #[serde(rename = "Data", default)]
    pub data: Bytes,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PoStProofJson {
    #[serde(rename = "PoStProof", deserialize_with = "loose::i64")]
    pub post_proof: i64,
    #[serde(rename = "ProofBytes", default)]
    pub proof_bytes: Bytes,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SignatureJson {
    #[serde(rename = "Type")]
    pub kind: u8,
    #[serde(rename = "Data", default)]
    pub data: Bytes,
}

/// Bytes as JSON carries them: standard base64, or `null` for none (Go's nil slice).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(Bytes::default());
        };
        if text.len() > MAX_FIELD_BYTES * 4 / 3 + 4 {
            return Err(D::Error::custom(format!(
                "a base64 field of {} characters",
                text.len()
            )));
        }
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Bytes)
            .map_err(|e| D::Error::custom(format!("a field is not base64: {e}")))
    }
}

/// A list of at most `MAX` entries; `null` is the empty list. Over the cap, the rest is not
/// read: the header is refused as too long.
fn capped<'de, D, const MAX: usize, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T, const MAX: usize>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for V<T, MAX> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list of at most {MAX} entries")
        }
        fn visit_unit<E>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_none<E>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Vec<T>, D2::Error> {
            d.deserialize_seq(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            use serde::de::Error;
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                if out.len() == MAX {
                    return Err(A::Error::custom(format!(
                        "more than {MAX} entries in a list"
                    )));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_option(V::<T, MAX>(std::marker::PhantomData))
}

/// The header in Lotus's CBOR shape: the 16-field tuple, in its order.
#[derive(Serialize_tuple)]
struct HeaderCbor {
    miner: Address,
    ticket: Option<TicketCbor>,
    election_proof: Option<ElectionProofCbor>,
    beacon_entries: Vec<BeaconEntryCbor>,
    win_post_proof: Vec<PoStProofCbor>,
    parents: Vec<Cid>,
    #[serde(with = "bigint_ser")]
    parent_weight: BigInt,
    height: i64,
    parent_state_root: Cid,
    parent_message_receipts: Cid,
    messages: Cid,
    bls_aggregate: Option<SignatureCbor>,
    timestamp: u64,
    block_sig: Option<SignatureCbor>,
    fork_signaling: u64,
    #[serde(with = "bigint_ser")]
    parent_base_fee: BigInt,
}

#[derive(Serialize_tuple)]
struct TicketCbor {
    #[serde(with = "strict_bytes")]
    vrf_proof: Vec<u8>,
}

#[derive(Serialize_tuple)]
struct ElectionProofCbor {
    win_count: i64,
    #[serde(with = "strict_bytes")]
    vrf_proof: Vec<u8>,
}

#[derive(Serialize_tuple)]
struct BeaconEntryCbor {
    round: u64,
    #[serde(with = "strict_bytes")]
    data: Vec<u8>,
}

#[derive(Serialize_tuple)]
struct PoStProofCbor {
    post_proof: i64,
    #[serde(with = "strict_bytes")]
    proof_bytes: Vec<u8>,
}

/// A signature as Lotus encodes it (`crypto.Signature.MarshalCBOR`): one byte string, the
/// type byte then the data.
#[derive(serde::Serialize)]
struct SignatureCbor(#[serde(with = "strict_bytes")] Vec<u8>);

impl HeaderJson {
    /// The header's DAG-CBOR bytes, as Lotus and Forest encode it.
    pub fn encode(&self) -> Result<Vec<u8>, Unencodable> {
        let cbor = HeaderCbor {
            miner: address(&self.miner)?,
            ticket: self.ticket.as_ref().map(|t| TicketCbor {
                vrf_proof: t.vrf_proof.0.clone(),
            }),
            election_proof: self.election_proof.as_ref().map(|e| ElectionProofCbor {
                win_count: e.win_count,
                vrf_proof: e.vrf_proof.0.clone(),
            }),
            beacon_entries: self
                .beacon_entries
                .iter()
                .map(|b| BeaconEntryCbor {
                    round: b.round,
                    data: b.data.0.clone(),
                })
                .collect(),
            win_post_proof: self
                .win_post_proof
                .iter()
                .map(|p| PoStProofCbor {
                    post_proof: p.post_proof,
                    proof_bytes: p.proof_bytes.0.clone(),
                })
                .collect(),
            parents: self
                .parents
                .iter()
                .map(|c| cid(&c.cid))
                .collect::<Result<_, _>>()?,
            parent_weight: big_integer("ParentWeight", &self.parent_weight)?,
            height: self.height,
            parent_state_root: cid(&self.parent_state_root.cid)?,
            parent_message_receipts: cid(&self.parent_message_receipts.cid)?,
            messages: cid(&self.messages.cid)?,
            bls_aggregate: self.bls_aggregate.as_ref().map(signature),
            timestamp: self.timestamp,
            block_sig: self.block_sig.as_ref().map(signature),
            fork_signaling: self.fork_signaling,
            parent_base_fee: big_integer("ParentBaseFee", &self.parent_base_fee)?,
        };
        fvm_ipld_encoding::to_vec(&cbor).map_err(|e| Unencodable(format!("CBOR: {e}")))
    }

    /// The CID this header hashes to: CIDv1, DAG-CBOR, blake2b-256.
    pub fn cid(&self) -> Result<Cid, Unencodable> {
        Ok(cid_of(&self.encode()?))
    }
}

/// The CID of DAG-CBOR bytes (CIDv1, blake2b-256), as Filecoin names blocks.
pub fn cid_of(bytes: &[u8]) -> Cid {
    Cid::new_v1(DAG_CBOR, Code::Blake2b256.digest(bytes))
}

/// Reads a header from its JSON; every failure is words for a reason, never a panic.
pub fn read(raw: &str) -> Result<HeaderJson, Unencodable> {
    serde_json::from_str(raw).map_err(|e| Unencodable(crate::text::inert(&e.to_string(), 120)))
}

/// An address by its own prefix: `f` mainnet, `t` any test network. `fvm_shared`'s
/// `Address::from_str` checks against a process-global network instead.
fn address(s: &str) -> Result<Address, Unencodable> {
    let network = match s.as_bytes().first() {
        Some(b'f') => Network::Mainnet,
        Some(b't') => Network::Testnet,
        _ => {
            return Err(Unencodable(format!(
                "Miner {:?} is not an address",
                short(s)
            )))
        }
    };
    network
        .parse_address(s)
        .map_err(|e| Unencodable(format!("Miner {:?} is not an address: {e}", short(s))))
}

fn cid(s: &str) -> Result<Cid, Unencodable> {
    Cid::try_from(s).map_err(|e| Unencodable(format!("{:?} is not a CID: {e}", short(s))))
}

fn big_integer(field: &str, s: &str) -> Result<BigInt, Unencodable> {
    // 2^256 is far beyond any weight or fee; longer text is junk, not a number to parse.
    if s.len() > 80 {
        return Err(Unencodable(format!("{field} of {} digits", s.len())));
    }
    BigInt::from_str(s)
        .map_err(|_| Unencodable(format!("{field} {:?} is not an integer", short(s))))
}

fn signature(s: &SignatureJson) -> SignatureCbor {
    let mut bytes = Vec::with_capacity(1 + s.data.0.len());
    bytes.push(s.kind);
    bytes.extend_from_slice(&s.data.0);
    SignatureCbor(bytes)
}

fn short(s: &str) -> String {
    crate::text::inert(s, 40)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Real headers with the CIDs they must hash to (shared/fixtures/real_headers.json, each
    /// with its source; copied into tests/data/headers.json).
    fn fixtures() -> Value {
        serde_json::from_str(include_str!("../../tests/data/headers.json")).expect("fixture")
    }

    fn cid_of_json(block: &Value) -> String {
        read(&block.to_string())
            .expect("reads")
            .cid()
            .expect("encodes")
            .to_string()
    }

    #[test]
    fn the_mainnet_genesis_hashes_to_its_cid() {
        let f = fixtures();
        let g = &f["genesis"]["mainnet"];
        assert_eq!(
            cid_of_json(&g["block"]),
            "bafy2bzacecnamqgqmifpluoeldx7zzglxcljo6oja4vrmtj7432rphldpdmm2"
        );
    }

    #[test]
    fn the_calibnet_genesis_as_forest_writes_it_hashes_to_its_cid() {
        // Forest leaves out the null BLSAggregate and BlockSig and writes a null VRFProof.
        let f = fixtures();
        let g = &f["genesis"]["calibrationnet"];
        assert_eq!(cid_of_json(&g["block"]), g["cid"].as_str().expect("cid"));
    }

    #[test]
    fn real_mainnet_and_vector_headers_hash_to_their_cids() {
        let f = fixtures();
        let mut n = 0;
        for set in ["mainnet_blocks", "signed_headers", "serialization_vectors"] {
            for h in f[set].as_array().expect("list") {
                assert_eq!(
                    cid_of_json(&h["block"]),
                    h["cid"].as_str().expect("cid"),
                    "{set}: {}",
                    h["source"]
                );
                n += 1;
            }
        }
        assert!(n >= 4, "{n} headers");
    }

    #[test]
    fn the_encoding_is_byte_exact_where_the_fixture_gives_the_bytes() {
        let f = fixtures();
        for set in ["signed_headers", "serialization_vectors"] {
            for h in f[set].as_array().expect("list") {
                let Some(want) = h["cbor_hex"].as_str() else {
                    continue;
                };
                let got = read(&h["block"].to_string())
                    .expect("reads")
                    .encode()
                    .expect("encodes");
                assert_eq!(hex::encode(got), want, "{set}: {}", h["source"]);
            }
        }
    }

    fn genesis() -> Value {
        fixtures()["genesis"]["mainnet"]["block"].clone()
    }

    #[test]
    fn any_change_to_a_field_changes_the_cid() {
        let base = cid_of_json(&genesis());
        for (field, value) in [
            ("ParentWeight", json!("1")),
            ("Height", json!(1)),
            ("Timestamp", json!(1598306401)),
            ("Miner", json!("f01")),
            ("ForkSignaling", json!(1)),
            ("ParentBaseFee", json!("100000001")),
        ] {
            let mut b = genesis();
            b[field] = value;
            assert_ne!(cid_of_json(&b), base, "{field}");
        }
    }

    #[test]
    fn nulls_read_as_lotus_means_them() {
        // A null list is the empty list; a null byte field is empty bytes; an absent
        // signature is CBOR null, not an empty signature.
        let mut b = genesis();
        b["BeaconEntries"] = json!(null);
        let mut c = genesis();
        c["BeaconEntries"] = json!([]);
        assert_eq!(cid_of_json(&b), cid_of_json(&c));
        let mut d = genesis();
        d["BlockSig"] = json!({"Type": 2, "Data": null});
        assert_ne!(cid_of_json(&d), cid_of_json(&genesis()));
        let mut e = genesis();
        e.as_object_mut().expect("object").remove("BlockSig");
        assert_eq!(cid_of_json(&e), cid_of_json(&genesis()));
    }

    #[test]
    fn test_network_addresses_parse_by_their_own_prefix() {
        assert!(address("t00").is_ok());
        assert!(address("f01938223").is_ok());
        assert!(address("t3vfs6f7tagrcpnwv65wq3leznbajqyg77bmijrpvoyjv3zjyi3urq25vigfbs3ob6ug5xdihajumtgsxnz2pa").is_ok());
        assert!(address("x01").is_err());
        assert!(address("").is_err());
    }

    #[test]
    fn hostile_headers_are_words_never_a_panic() {
        let cases: Vec<(Value, &str)> = vec![
            (
                {
                    let mut b = genesis();
                    b["BeaconEntries"] = Value::Array(
                        (0..100_000)
                            .map(|r| json!({"Round": r, "Data": "AA=="}))
                            .collect(),
                    );
                    b
                },
                "more than 1000 entries",
            ),
            (
                {
                    let mut b = genesis();
                    b["Ticket"] = json!({"VRFProof": "not base64!"});
                    b
                },
                "not base64",
            ),
            (
                {
                    let mut b = genesis();
                    b["ParentWeight"] = json!("12x");
                    b
                },
                "not an integer",
            ),
            (
                {
                    let mut b = genesis();
                    b["ParentWeight"] = json!("9".repeat(500));
                    b
                },
                "500 digits",
            ),
            (
                {
                    let mut b = genesis();
                    b["Messages"] = json!({"/": "bafy\u{1b}[2J"});
                    b
                },
                "not a CID",
            ),
            (
                {
                    let mut b = genesis();
                    b["Miner"] = json!("g0\n1");
                    b
                },
                "not an address",
            ),
            (json!("nonsense"), "invalid type"),
        ];
        for (block, want) in cases {
            let why = read(&block.to_string())
                .and_then(|h| h.cid())
                .expect_err("refused");
            assert!(why.0.contains(want), "{want}: {why}");
            assert!(!why.0.chars().any(char::is_control), "{why:?}");
        }
    }
}

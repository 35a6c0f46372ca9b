//! A block is signed by its miner's worker: `BlockSig` is a BLS signature (min-pk, DST
//! `BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_NUL_`) over the header's signing bytes. A daemon that
//! does not hold the worker's key cannot make one, so a signed header is a block the network
//! could have produced, not one a daemon made up (issue #34; this module is its first part:
//! the check itself, against a key already known).
//!
//! - **Signing bytes** (Lotus `BlockHeader.SigningBytes`): the DAG-CBOR of the full 16-field
//!   header with `BlockSig` encoded as CBOR null. Not the CID, and not the header with the field
//!   dropped.
//! - **Scheme**: workers are always BLS (the miner actor requires it), so a `BlockSig` of
//!   another type fails.
//! - **The key**: a BLS address's payload is its 48-byte public key.

use std::fmt;

use bls_signatures::Serialize as _;
use fvm_shared::address::{Network, Payload};

use super::header::{HeaderJson, Unencodable};

/// Filecoin's signature type for BLS (`crypto.SigTypeBLS`).
const SIG_TYPE_BLS: u8 = 2;

/// Why a block's signature does not prove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureFault {
    /// The header has no `BlockSig` (only genesis has none; it is checked by its CID).
    Missing,
    /// A `BlockSig` of another type than BLS.
    NotBls(u8),
    /// The signature's or the key's bytes are not a point on the curve.
    Malformed(String),
    /// The header cannot be encoded.
    Unencodable(String),
    /// It does not verify with the worker's key.
    Invalid,
}

impl fmt::Display for SignatureFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureFault::Missing => f.write_str("the block has no BlockSig"),
            SignatureFault::NotBls(t) => write!(f, "its BlockSig is of type {t}, not BLS"),
            SignatureFault::Malformed(why) => write!(f, "its BlockSig is malformed: {why}"),
            SignatureFault::Unencodable(why) => write!(f, "its header cannot be encoded: {why}"),
            SignatureFault::Invalid => f.write_str("it is not signed by its miner's worker"),
        }
    }
}

/// The bytes a miner's worker signs: the header with `BlockSig` as CBOR null.
pub fn signing_bytes(header: &HeaderJson) -> Result<Vec<u8>, Unencodable> {
    let unsigned = HeaderJson {
        block_sig: None,
        ..header.clone()
    };
    unsigned.encode()
}

/// Checks `header`'s `BlockSig` against the worker's BLS public key.
pub fn verify_block_sig(header: &HeaderJson, worker_key: &[u8]) -> Result<(), SignatureFault> {
    let sig = header.block_sig.as_ref().ok_or(SignatureFault::Missing)?;
    if sig.kind != SIG_TYPE_BLS {
        return Err(SignatureFault::NotBls(sig.kind));
    }
    let signature = bls_signatures::Signature::from_bytes(&sig.data.0)
        .map_err(|e| SignatureFault::Malformed(format!("signature: {e}")))?;
    let key = bls_signatures::PublicKey::from_bytes(worker_key)
        .map_err(|e| SignatureFault::Malformed(format!("worker key: {e}")))?;
    let message = signing_bytes(header).map_err(|e| SignatureFault::Unencodable(e.0))?;
    if key.verify(signature, &message) {
        Ok(())
    } else {
        Err(SignatureFault::Invalid)
    }
}

/// The public key a BLS address (`f3…`/`t3…`) carries.
pub fn bls_key_of(address: &str) -> Result<Vec<u8>, String> {
    let network = match address.as_bytes().first() {
        Some(b'f') => Network::Mainnet,
        Some(b't') => Network::Testnet,
        _ => {
            return Err(format!(
                "{:?} is not an address",
                crate::text::inert(address, 40)
            ))
        }
    };
    let parsed = network.parse_address(address).map_err(|e| {
        format!(
            "{:?} is not an address: {e}",
            crate::text::inert(address, 40)
        )
    })?;
    match parsed.payload() {
        Payload::BLS(key) => Ok(key.to_vec()),
        _ => Err(format!(
            "{:?} is not a BLS address",
            crate::text::inert(address, 40)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proof::header::{read, Bytes};
    use serde_json::Value;

    /// Forest's Space Race header, "pulled from space race, and contains a valid signature",
    /// with the worker key it verifies against (tests/data/headers.json, `signed_headers`).
    fn space_race() -> (HeaderJson, Vec<u8>) {
        let f: Value =
            serde_json::from_str(include_str!("../../tests/data/headers.json")).expect("fixture");
        let h = &f["signed_headers"][0];
        let header = read(&h["block"].to_string()).expect("header");
        let key = bls_key_of(h["worker_key"].as_str().expect("key")).expect("a BLS key");
        (header, key)
    }

    #[test]
    fn a_real_block_verifies_with_its_workers_key() {
        let (header, key) = space_race();
        assert_eq!(key.len(), 48);
        assert_eq!(verify_block_sig(&header, &key), Ok(()));
    }

    #[test]
    fn any_change_or_another_key_fails() {
        let (header, key) = space_race();
        let mut heavier = header.clone();
        heavier.parent_weight.push('0');
        assert_eq!(
            verify_block_sig(&heavier, &key),
            Err(SignatureFault::Invalid)
        );
        let mut other_key = key.clone();
        other_key[47] ^= 1;
        assert!(verify_block_sig(&header, &other_key).is_err());
        let mut secp = header.clone();
        secp.block_sig.as_mut().expect("sig").kind = 1;
        assert_eq!(
            verify_block_sig(&secp, &key),
            Err(SignatureFault::NotBls(1))
        );
        let mut short = header.clone();
        short.block_sig.as_mut().expect("sig").data = Bytes(vec![1, 2, 3]);
        assert!(matches!(
            verify_block_sig(&short, &key),
            Err(SignatureFault::Malformed(_))
        ));
        let mut unsigned = header;
        unsigned.block_sig = None;
        assert_eq!(
            verify_block_sig(&unsigned, &key),
            Err(SignatureFault::Missing)
        );
    }

    #[test]
    fn the_signing_bytes_keep_block_sig_as_null_not_dropped() {
        let (header, _) = space_race();
        let bytes = signing_bytes(&header).expect("encodes");
        // A 16-element array (0x90) with a CBOR null (0xf6) where BlockSig was.
        assert_eq!(bytes[0], 0x90);
        let full = header.encode().expect("encodes");
        assert!(bytes.len() < full.len());
        assert!(bytes.contains(&0xf6));
    }

    #[test]
    fn only_bls_addresses_give_a_key() {
        assert!(bls_key_of("f01000").is_err());
        assert!(bls_key_of("t1abjxfbp274xpdqcpuaykwkfb43omjotacm2p3za").is_err());
        assert!(bls_key_of("\u{1b}[2J").is_err());
    }
}

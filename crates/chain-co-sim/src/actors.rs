//! The simulated storage provider's accounts: one miner actor with an owner, a worker and a
//! control address, each an ID address (`f0…`) with a key address (`f3…`) behind it.
//!
//! On chain a message may name its sender either way: lotus-miner sends from the worker's ID
//! address as `StateMinerInfo` gives it, a wallet from the key address. The message pools
//! count nonces per account, whichever form a message uses, as Lotus's pool does after
//! resolving to the key address. `StateMinerInfo`, `StateAccountKey` and `StateLookupID`
//! answer as Lotus's do for these accounts, and "actor not found" for any other.

use serde_json::{json, Value};

/// The simulated provider's miner actor.
pub const MINER: &str = "f01000";

/// (role, ID address, key address) of the provider's accounts.
pub const ACCOUNTS: [(&str, &str, &str); 3] = [
    (
        "owner",
        "f0100",
        "f3simowner7kq2mvxzyua4ljpckhwd5oi3tbgnesrf6ya",
    ),
    (
        "worker",
        "f0101",
        "f3simworker3nxq7gw5ahkceuyzmfjtsvobilr2d4pa",
    ),
    (
        "control",
        "f0102",
        "f3simcontrolq4zt6w2lmxbudkaiyvrnhjego5cfsia",
    ),
];

/// The key address of one of the provider's accounts named either way; any other address as
/// it is (the pool then counts it on its own, as a stranger's).
pub(crate) fn key_of(address: &str) -> &str {
    ACCOUNTS
        .iter()
        .find(|(_, id, key)| *id == address || *key == address)
        .map_or(address, |(_, _, key)| key)
}

fn not_found(address: &str) -> (i64, String) {
    (
        1,
        format!("resolution lookup failed ({address}): actor not found"),
    )
}

/// The state methods about the provider's accounts; `None` for any other method.
pub(crate) fn call(method: &str, params: &Value) -> Option<Result<Value, (i64, String)>> {
    let address = params.get(0).and_then(Value::as_str).unwrap_or("");
    let account = ACCOUNTS
        .iter()
        .find(|(_, id, key)| *id == address || *key == address);
    Some(match method {
        "Filecoin.StateMinerInfo" if address == MINER => Ok(miner_info()),
        "Filecoin.StateMinerInfo" => Err(not_found(address)),
        "Filecoin.StateAccountKey" => account
            .map(|(_, _, key)| json!(key))
            .ok_or_else(|| not_found(address)),
        "Filecoin.StateLookupID" => account
            .map(|(_, id, _)| json!(id))
            .ok_or_else(|| not_found(address)),
        _ => return None,
    })
}

/// `StateMinerInfo` as Lotus 1.3x gives it (ID addresses; the fields chain-co does not read
/// are there so that a reader of the whole reply meets what it would meet on mainnet).
fn miner_info() -> Value {
    let id = |role: &str| {
        ACCOUNTS
            .iter()
            .find(|(r, _, _)| *r == role)
            .map(|(_, id, _)| *id)
            .unwrap_or_default()
    };
    json!({
        "Owner": id("owner"),
        "Worker": id("worker"),
        "NewWorker": "<empty>",
        "ControlAddresses": [id("control")],
        "WorkerChangeEpoch": -1,
        "PeerId": "12D3KooWSimMinerPeer1111111111111111111111111111",
        "Multiaddrs": null,
        "WindowPoStProofType": 8,
        "SectorSize": 34359738368u64,
        "WindowPoStPartitionSectors": 2349,
        "ConsensusFaultElapsed": -1,
        "PendingOwnerAddress": null,
        "Beneficiary": id("owner"),
        "BeneficiaryTerm": { "Quota": "0", "UsedQuota": "0", "Expiration": 0 },
        "PendingBeneficiaryTerm": null
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_providers_accounts_resolve_both_ways_and_strangers_are_not_found() {
        let info = call("Filecoin.StateMinerInfo", &json!([MINER, []]))
            .expect("handled")
            .expect("info");
        assert_eq!(info["Worker"], "f0101");
        assert_eq!(info["ControlAddresses"], json!(["f0102"]));
        let key = call("Filecoin.StateAccountKey", &json!(["f0101", []]))
            .expect("handled")
            .expect("key");
        assert_eq!(key, json!(ACCOUNTS[1].2));
        let id = call("Filecoin.StateLookupID", &json!([ACCOUNTS[1].2, []]))
            .expect("handled")
            .expect("id");
        assert_eq!(id, "f0101");
        assert_eq!(key_of("f0101"), key_of(ACCOUNTS[1].2));
        assert_eq!(key_of("f3stranger"), "f3stranger");
        let err = call("Filecoin.StateMinerInfo", &json!(["f09999", []]))
            .expect("handled")
            .expect_err("not ours");
        assert!(err.1.contains("actor not found"), "{err:?}");
        assert!(call("Filecoin.ChainHead", &json!([])).is_none());
    }
}

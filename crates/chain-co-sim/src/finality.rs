//! The simulated network's F3: certificates that follow the chain a few epochs behind the
//! head, and a network-wide stall (as lotus #13208, #13359 and #13473 saw on mainnet).

use std::sync::Mutex;
use std::time::SystemTime;

use super::chain::{self, ChainClock};

/// F3 finalizes a few epochs behind the head (mainnet: typically 2–5).
pub const F3_LAG: u64 = 3;
/// The instance of the certificate that finalized epoch 0: instances count from here, one
/// an epoch.
const FIRST_INSTANCE: u64 = 1_000;
/// EC finality: 900 epochs deep.
pub const EC_FINALITY: u64 = 900;
/// The F3 network every simulated node follows unless an op says otherwise (mainnet's is
/// "filecoin").
pub const F3_NETWORK: &str = "simnet/f3";

/// F3 of the whole simulated network.
#[derive(Debug, Default)]
pub struct F3Network {
    stalled_at: Mutex<Option<u64>>,
}

impl F3Network {
    /// The epoch the network's latest certificate finalizes at `now` (a tipset, never a null
    /// round).
    pub fn finalized(&self, clock: &ChainClock, now: SystemTime, null_rounds: bool) -> u64 {
        let live = clock.height_at(now).saturating_sub(F3_LAG);
        let epoch = self
            .stalled_at
            .lock()
            .expect("f3 lock")
            .map_or(live, |s| s.min(live));
        chain::last_tipset_height(epoch, null_rounds)
    }

    /// The instance that certificate came from.
    pub fn instance(epoch: u64) -> u64 {
        FIRST_INSTANCE + epoch
    }

    /// Certificates stop where they are now (every node's finalized epoch stops).
    pub fn stall(&self, clock: &ChainClock, now: SystemTime, null_rounds: bool) {
        let at = self.finalized(clock, now, null_rounds);
        *self.stalled_at.lock().expect("f3 lock") = Some(at);
    }

    /// Certificates follow the chain again (they catch up at once).
    pub fn resume(&self) {
        *self.stalled_at.lock().expect("f3 lock") = None;
    }

    /// The F3 manifest a node gives (`F3GetManifest`): mainnet's shape and values
    /// (shared/fixtures/f3_mainnet_fixture.json, from ChainSafe/rust-f3), with this network's
    /// name and block delay.
    pub fn manifest(network: &str, block_delay_secs: u64) -> serde_json::Value {
        let period = block_delay_secs.saturating_mul(1_000_000_000);
        serde_json::json!({
            "Pause": false, "ProtocolVersion": 7, "InitialInstance": 0, "BootstrapEpoch": 0,
            "NetworkName": network, "ExplicitPower": null, "IgnoreECPower": false,
            "InitialPowerTable": {"/": chain::cid(0x907e_7ab1)},
            "CommitteeLookback": 10, "CatchUpAlignment": period / 2,
            "Gpbft": {"Delta": 6_000_000_000u64, "DeltaBackOffExponent": 2,
                "QualityDeltaMultiplier": 8, "MaxLookaheadRounds": 5, "ChainProposedLength": 20,
                "RebroadcastBackoffBase": 6_000_000_000u64, "RebroadcastBackoffExponent": 1.3,
                "RebroadcastBackoffSpread": 0.1, "RebroadcastBackoffMax": 60_000_000_000u64},
            "EC": {"Period": period, "Finality": EC_FINALITY, "DelayMultiplier": 2,
                "BaseDecisionBackoffTable": [1.3, 1.69, 2.2, 2.86, 3.71, 4.83, 6.27, 7.5],
                "HeadLookback": 4, "Finalize": true}
        })
    }

    pub fn is_stalled(&self) -> bool {
        self.stalled_at.lock().expect("f3 lock").is_some()
    }
}

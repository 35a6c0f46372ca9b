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

    pub fn is_stalled(&self) -> bool {
        self.stalled_at.lock().expect("f3 lock").is_some()
    }
}

//! chain-co keeps Filecoin storage providers on a healthy chain.
//!
//! A storage provider's miner talks to one Filecoin daemon (Lotus, Venus, Forest or Fuhon)
//! through nginx, usually over one websocket it holds for hours. chain-co runs next to nginx
//! and, every probe interval and at every pushed head:
//!
//! 1. [`probe`]s every daemon of the pool over JSON-RPC ([`probe::rpc`]) for its head, and
//!    keeps a ChainNotify subscription on each ([`probe::push`]); both share one WebSocket per
//!    node ([`probe::link`]);
//! 2. [`decide`]s: merges pushed heads into the round ([`decide::evaluate`]) and selects the
//!    best node ([`decide::select`]) — on the finalized chain, heaviest confirmed head, within
//!    a lag tolerance, rise/fall hysteresis, flap damping, a sticky primary — in a pipeline of
//!    pure, table-tested steps;
//! 3. [`apply`]s the decision to the target (nginx, HAProxy or SLB) through the publisher
//!    ([`apply::publish`]): reloads nginx only when the primary changes, and moves the old
//!    primary's sessions ([`apply::sessions`]);
//! 4. [`serve`]s what it found: a report ([`serve::report`]) that the status API, the metrics
//!    and the demo read; [`serve::daemon`] is the loop that wires the stages together.
//!
//! chain-co is never in the data path: if it stops, nginx keeps the last good upstream.
//! [`cli`] holds the commands that are not the loop (`check` evaluates the same way once,
//! printing instead of applying); [`config`] is the TOML file. The simulated daemon pool and
//! the test bed are a crate of their own (`chain-co-sim`), so this library never contains
//! them. `docs/ARCHITECTURE.md` describes the stages and invariants.
//!
//! Read the stages in that order to follow one probe from the socket to the nginx reload.

pub mod apply;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod decide;
pub mod duration;
pub mod errors;
pub mod files;
pub mod probe;
pub mod problems;
pub mod proof;
pub mod secret;
pub mod serve;
pub mod text;

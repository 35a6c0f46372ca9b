//! chain-co keeps Filecoin storage providers on a healthy chain.
//!
//! A storage provider's miner talks to one Filecoin daemon (Lotus, Venus, Forest or Fuhon)
//! through nginx, usually over one websocket it holds for hours. chain-co runs next to nginx
//! and, every probe interval and at every pushed head:
//!
//! 1. [`probe`]s every daemon of the pool over JSON-RPC ([`rpc`]) for its head, and keeps a
//!    ChainNotify subscription on each ([`push`]); both share one WebSocket per node
//!    ([`link`]);
//! 2. [`evaluate`]s: merges pushed heads into the round and [`select`]s the best node —
//!    heaviest head, within a lag tolerance, rise/fall hysteresis, flap damping, a sticky
//!    primary — in a pipeline of pure, table-tested steps;
//! 3. [`publish`]es the decision to the target ([`apply`]: nginx, HAProxy or SLB): reloads
//!    nginx only when the primary changes, and moves the old primary's sessions
//!    ([`sessions`]);
//! 4. writes a [`report`] that the status API ([`api`]), the metrics ([`metrics`]) and the
//!    demo read.
//!
//! chain-co is never in the data path: if it stops, nginx keeps the last good upstream.
//! [`daemon`] wires these together; [`check`] evaluates the same way once, printing instead of
//! applying; [`sim`] is a simulated daemon pool for tests and the demo; [`config`] is the TOML
//! file.
//!
//! Read the modules in that order to follow one probe from the socket to the nginx reload.

pub mod api;
pub mod apply;
pub mod backoff;
pub mod check;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod duration;
pub mod errors;
pub mod evaluate;
pub mod f3;
pub mod frames;
pub mod ha;
pub mod health;
pub mod history;
pub mod init;
pub mod link;
pub mod metrics;

pub mod overrides;
pub mod probe;
pub mod problems;
pub mod publish;
pub mod push;
pub mod report;
pub mod rpc;
pub mod secret;
pub mod select;
pub mod sessions;
pub mod sim;
pub mod testbed;
pub mod text;

//! chain-co keeps Filecoin storage providers on a healthy chain.
//!
//! A storage provider's miner talks to one Filecoin daemon (Lotus, Venus, Forest or Fuhon)
//! through nginx. chain-co runs next to nginx and, every probe interval:
//!
//! 1. [`probe`]s every daemon of the pool over JSON-RPC ([`rpc`]) for its head;
//! 2. [`select`]s the best one — heaviest head, within a lag tolerance, with rise/fall
//!    hysteresis and a sticky primary — in a pure function that is table-tested;
//! 3. [`apply`]s the choice: renders an nginx upstream (primary, healthy backups), swaps it in
//!    atomically, validates it with `nginx -t`, reloads nginx, or rolls back.
//!
//! chain-co is never in the data path: if it stops, nginx keeps the last good upstream.
//! [`daemon`] runs the loop; [`check`] is the same loop once, printing instead of applying;
//! [`sim`] is a simulated daemon pool for tests and the demo; [`config`] is the TOML file.
//!
//! Read the modules in that order to follow one probe from the socket to the nginx reload.

pub mod api;
pub mod apply;
pub mod check;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod errors;
pub mod ha;
pub mod metrics;

pub mod overrides;
pub mod probe;
pub mod push;
pub mod report;
pub mod rpc;
pub mod secret;
pub mod select;
pub mod sessions;
pub mod sim;
pub mod testbed;

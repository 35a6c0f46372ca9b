//! Decide: one probe round (and the heads pushed since) in, a decision out. Pure: no I/O and
//! no clock reads here but the decision clock's, which the caller reads.
//!
//! - [`select`]: the rules, a pipeline of named pure steps with typed reasons, table-tested;
//! - [`evaluate`]: a round plus pushed heads and the operator's marks, through `select`, the
//!   same for `run` and `check`;
//! - [`overrides`]: the operator's marks (drain, prefer) and their state file;
//! - [`clock`]: a decision clock that bridges system clock jumps.

pub mod clock;
pub mod evaluate;
pub mod overrides;
pub mod select;

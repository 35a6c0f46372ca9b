//! Serve: the loop and what it shows. [`daemon`] is `run`'s loop (probe, evaluate, publish,
//! report; hot reload); [`report`] is what one round found and did, which [`api`] (status API,
//! page, `/healthz`), [`metrics`] and [`history`] (the journal and the heads of the last hour)
//! read. None of the readers imports the loop.

pub mod api;
pub mod daemon;
pub mod history;
pub mod metrics;
pub mod report;

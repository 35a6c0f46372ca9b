//! The commands that are not the loop: [`check`] (the dry run), [`init`] (a config from
//! daemon addresses) and the API and daemon clients of [`client`] (`status`, `drain`,
//! `prefer`, `probe`). The demo goes with the binary's simulator.

pub mod check;
pub mod client;
pub mod init;
pub mod table;

//! ylem-runtime: runs Ylem data pipelines as supervised actor trees.

pub mod config;
pub mod messages;
pub mod store;
pub mod supervision;
pub mod tasks;
pub mod transport;

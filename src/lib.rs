//! ylem-runtime: runs Ylem data pipelines as supervised actor trees.

pub mod config;
pub mod messages;
pub mod pipeline;
pub mod schedule;
pub mod tasks;

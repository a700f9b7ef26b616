//! ylem-runtime: runs Ylem data pipelines as supervised actor trees.

pub mod actors;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dead_letter;
pub mod http;
pub mod load_balancing;
pub mod messages;
pub mod pipeline;
pub mod schedule;
pub mod statistics;
pub mod store;
pub mod supervision;
pub mod tasks;
pub mod transport;

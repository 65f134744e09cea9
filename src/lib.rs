//! Strata turns OS builds into layered OCI images whose layers stay stable from build
//! to build. The modules follow the data flow:
//! components → history → plan → diff, with `bench` replaying real streams.

pub mod bench;
pub mod build;
pub mod bytes;
pub mod cli;
pub mod components;
pub mod diff;
pub mod history;
pub mod image;
pub mod input;
pub mod layers;
pub mod operator;
pub mod output;
pub mod parallel;
pub mod plan;
pub mod source;

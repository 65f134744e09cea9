//! Cluster-level automation: an `EncapsulationStream` watches a source and makes one
//! `EncapsulationJob` per new build of it, keeps the stream's history and prunes old
//! jobs, as a CronJob does for Jobs.
//!
//! Data flow: `controller` reads the stream and its jobs, and asks `poll` for the
//! source's identity when `decide::poll_due` says so; `decide` is a pure function from
//! those to the new status and the job to create or delete.

pub mod controller;
pub mod crd;
pub mod decide;
pub mod poll;
pub mod probe;

#[cfg(test)]
mod tests;

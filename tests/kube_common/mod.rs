//! Kubernetes helpers for the operator tests and the controller benchmark: the test
//! control plane, the node agent, and the operator environment. Kept apart from
//! `common` so that test binaries without a cluster do not compile them.
#![allow(dead_code)]

pub mod agent;
pub mod cluster;
pub mod node_env;
pub mod operator_env;
pub mod supervisor;

//! The Kubernetes operator: the `EncapsulationJob` custom resource, and (to come) the
//! controller that runs `strata worker` pods and folds their reports into status.

pub mod crd;

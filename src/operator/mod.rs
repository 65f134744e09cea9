//! The Kubernetes operator: the `EncapsulationJob` custom resource, the controller that
//! runs `strata worker` pods for it, and the worker side of their contract.
//!
//! Data flow: `controller` watches jobs and pods and hands what it observed to
//! `reconcile::decide`, a pure function that returns the new status and the pods to
//! create or delete. `pod` builds worker pods, `report` is the worker ↔ controller
//! contract, `status` folds reports into status, and `worker` is what runs in the pod.

pub mod controller;
pub mod crd;
pub mod health;
pub mod lease;
pub mod metrics;
pub mod pod;
pub mod reconcile;
pub mod report;
pub mod retry;
pub mod status;
pub mod stream;
pub mod validate;
pub mod vocabulary;
pub mod worker;

use std::time::Duration;

/// Selects rustls' crypto provider for the Kubernetes client. Several providers are
/// compiled in through dependencies, so rustls cannot pick one by itself.
pub fn install_crypto_provider() {
    // An error means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How the controller runs workers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The image of worker pods, unless a job names its own.
    pub worker_image: String,
    /// The worker's command before `worker …` (the image's `strata`).
    pub worker_command: Vec<String>,
    /// Service account of worker pods, unless a job names its own.
    pub service_account: String,
    /// The wait after a first failed attempt; it doubles with each further failure.
    pub backoff_base: Duration,
    /// How long a worker pod may stay Pending before its attempt fails.
    pub pending_timeout: Duration,
    /// Registries (`host[:port]`) reached over plain HTTP or unverified TLS.
    pub insecure_registries: Vec<String>,
    /// `spec.planner.maxLayers` when a job leaves it out.
    pub default_max_layers: u32,
    /// `spec.retries` when a job leaves it out.
    pub default_retries: u32,
    /// What a job's spec may ask of its pod.
    pub policy: JobPolicy,
}

/// What a job's spec may ask of the pod it runs in, set by whoever installs the
/// controller: creating a job must not grant more than that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPolicy {
    /// Volume types (`persistentVolumeClaim`, `emptyDir`, …) `spec.podTemplate.volumes`
    /// may use.
    pub volume_types: Vec<String>,
    /// `spec.podTemplate.serviceAccountName` values a job may set (none by default).
    pub service_accounts: Vec<String>,
    /// `spec.workerImage` values a job may set (none by default).
    pub worker_images: Vec<String>,
    /// Node label keys `spec.podTemplate.nodeSelector` may name (none by default).
    pub node_labels: Vec<String>,
    /// Taint keys `spec.podTemplate.tolerations` may tolerate (none by default).
    pub toleration_keys: Vec<String>,
    /// Namespaces prepared for worker pods (their ServiceAccount and Role); empty
    /// means every namespace is.
    pub worker_namespaces: Vec<String>,
}

/// Volume types a job may use unless the controller is told otherwise: storage the
/// job's namespace already owns, nothing of the node's and no credentials.
pub const DEFAULT_VOLUME_TYPES: [&str; 4] = [
    "persistentVolumeClaim",
    "emptyDir",
    "configMap",
    "ephemeral",
];

impl Default for JobPolicy {
    fn default() -> Self {
        JobPolicy {
            volume_types: DEFAULT_VOLUME_TYPES.map(String::from).to_vec(),
            service_accounts: Vec::new(),
            worker_images: Vec::new(),
            node_labels: Vec::new(),
            toleration_keys: Vec::new(),
            worker_namespaces: Vec::new(),
        }
    }
}

impl Settings {
    /// The job's layer limit, or this installation's default.
    pub fn max_layers(&self, spec: &crd::EncapsulationJobSpec) -> u32 {
        spec.planner.max_layers.unwrap_or(self.default_max_layers)
    }

    /// The job's retries, or this installation's default.
    pub fn retries(&self, spec: &crd::EncapsulationJobSpec) -> u32 {
        spec.retries.unwrap_or(self.default_retries)
    }

    /// Whether `reference` (`docker://host/…`) names an insecure registry.
    pub fn is_insecure(&self, reference: &str) -> bool {
        crate::image::remote::registry_host(reference)
            .is_some_and(|host| self.insecure_registries.iter().any(|h| h == host))
    }
}

#[cfg(test)]
impl Settings {
    /// An installation for unit tests: workers run `strata` from `strata:test`, with
    /// `insecure` as the registries reached without TLS checks.
    pub(crate) fn for_tests(insecure: &[&str]) -> Settings {
        Settings {
            worker_image: "strata:test".into(),
            worker_command: vec!["strata".into()],
            service_account: "strata-worker".into(),
            backoff_base: std::time::Duration::from_secs(10),
            pending_timeout: std::time::Duration::from_secs(600),
            insecure_registries: insecure.iter().map(|h| h.to_string()).collect(),
            default_max_layers: 64,
            default_retries: 2,
            policy: Default::default(),
        }
    }
}

//! The Kubernetes operator: the `EncapsulationJob` custom resource, and (to come) the
//! controller that runs `strata worker` pods and folds their reports into status.

pub mod crd;

/// Selects rustls' crypto provider for the Kubernetes client. Several providers are
/// compiled in through dependencies, so rustls cannot pick one by itself.
pub fn install_crypto_provider() {
    // An error means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

//! `strata controller` and `strata worker`: argument handling around `operator`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use super::{ControllerArgs, LogFormat, WorkerArgs};
use crate::build::PlanInputs;
use crate::operator::{self, controller, health, lease, report::Step, worker, Settings};

pub const CONTROLLER_EXAMPLES: &str = "\
Examples:
  # Install the CRD, then run the controller against the current kubeconfig
  strata crd | kubectl apply --server-side -f -
  strata controller --namespace builds --worker-image registry.example.com/strata:0.1.0

  # A loopback registry for development
  strata controller --insecure-registry 127.0.0.1:5000 --backoff-base 1

Jobs of one stream run one at a time, oldest first. Probes: /healthz, /readyz;
Prometheus metrics on /metrics (see --health-addr).";

pub fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    if !(args.backoff_base.is_finite() && args.backoff_base >= 0.0) {
        bail!(
            "--backoff-base {}: must be a number of seconds",
            args.backoff_base
        );
    }
    if !(2..=crate::plan::REGISTRY_LAYER_LIMIT as u32).contains(&args.default_max_layers) {
        bail!(
            "--default-max-layers {}: must be between 2 and {}",
            args.default_max_layers,
            crate::plan::REGISTRY_LAYER_LIMIT
        );
    }
    if args.default_retries > 10 {
        bail!("--default-retries {}: at most 10", args.default_retries);
    }
    if args.lease_duration < 3 {
        bail!(
            "--lease-duration {}: must be at least 3 seconds",
            args.lease_duration
        );
    }
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let policy = job_policy(&args);
    let opts = controller::Options {
        settings: Settings {
            worker_image: args.worker_image,
            worker_command: vec![args.worker_command],
            service_account: args.worker_service_account,
            backoff_base: Duration::from_secs_f64(args.backoff_base),
            pending_timeout: Duration::from_secs(args.pending_timeout),
            insecure_registries: args.insecure_registry,
            default_max_layers: args.default_max_layers,
            default_retries: args.default_retries,
            policy,
        },
        namespaces: args.namespace,
        lease: lease::LeaseSettings {
            name: args.lease_name,
            namespace: args.lease_namespace.unwrap_or_else(|| "default".into()),
            identity,
            duration: Duration::from_secs(args.lease_duration),
        },
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        operator::install_crypto_provider();
        let client = kube::Client::try_default()
            .await
            .context("cannot configure the Kubernetes client (kubeconfig or in-cluster)")?;
        let health = Arc::new(health::Health::default());
        let bound = health::serve(args.health_addr, health.clone())
            .await
            .with_context(|| format!("--health-addr {}: cannot listen", args.health_addr))?;
        tracing::info!(%bound, "serving /healthz, /readyz and /metrics");
        Ok(controller::run(client, opts, health).await?)
    })
}

pub fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    worker::run(&task(args)?, &|line| eprintln!("strata worker: {line}"))?;
    Ok(())
}

/// The step a worker's command line asks for: the inverse of the arguments the
/// controller renders into the pod (`operator::pod`).
fn task(args: WorkerArgs) -> anyhow::Result<worker::Task> {
    let source = args.source.source()?;
    if args.step == Step::Build && args.output.is_none() {
        bail!("the build step needs --output");
    }
    Ok(worker::Task {
        step: args.step,
        namespace: args.namespace,
        job: args.job,
        job_uid: args.job_uid,
        attempt: args.attempt,
        plan_file: args.plan_file,
        termination_log: args.termination_log,
        inputs: PlanInputs {
            source,
            priors: args.prior,
            plan: args.planner.options(),
            stream: args.stream,
            allow_special_files: true,
            registry: args.registry.options(),
            components_map: Default::default(),
            source_date_epoch: None,
            fixed_plan: None,
            format: None,
        },
        output: args.output,
        compression: args.compression,
        pull: args.ostree_url.map(|url| worker::Pull {
            url,
            gpg_keys: args.ostree_gpg_keys,
        }),
    })
}

/// Logs to stderr: plain text (coloured only on a terminal, so `kubectl logs` shows
/// no escape codes), or one JSON object per line for log pipelines.
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => fmt.json().with_current_span(true).try_init(),
    };
}

/// The job policy of the controller's flags.
fn job_policy(args: &ControllerArgs) -> operator::JobPolicy {
    let mut policy = operator::JobPolicy::default();
    if !args.allow_volume_types.is_empty() {
        policy.volume_types = args.allow_volume_types.clone();
    }
    if args.allow_host_path {
        policy.volume_types.push("hostPath".into());
    }
    policy.service_accounts = args.allow_service_accounts.clone();
    policy.worker_images = args.allow_worker_images.clone();
    policy.node_labels = args.allow_node_labels.clone();
    policy.toleration_keys = args.allow_toleration_keys.clone();
    policy.worker_namespaces = args.worker_namespaces.clone();
    policy
}

#[cfg(test)]
mod tests {
    //! The worker's command line as the controller renders it into the pod, read back
    //! by this CLI: a flag one side spells and the other does not know fails here.

    use clap::Parser;
    use serde_json::json;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::image::ImageRef;
    use crate::operator::crd::EncapsulationJob;
    use crate::operator::pod::{worker_pod, Attempt};
    use crate::source::BuildSource;

    /// Each container's step, as the worker would run it.
    fn tasks(spec: serde_json::Value, priors: &[String]) -> Vec<worker::Task> {
        let job: EncapsulationJob = serde_json::from_value(json!({
            "apiVersion": "strata.dev/v1alpha1", "kind": "EncapsulationJob",
            "metadata": {"name": "nightly", "namespace": "builds", "uid": "4f1c"},
            "spec": spec,
        }))
        .unwrap();
        let settings = Settings::for_tests(&["registry.test:5000"]);
        let attempt = Attempt {
            number: 3,
            priors,
            settings: &settings,
        };
        let pod = worker_pod(&job, &attempt).spec.unwrap();
        let containers = pod.init_containers.into_iter().flatten();
        containers
            .chain(pod.containers)
            .map(|c| {
                let argv = c.command.unwrap();
                assert_eq!(argv[0], "strata");
                let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
                let Command::Worker(args) = cli.command else {
                    panic!("{argv:?} is not a worker command");
                };
                task(*args).unwrap()
            })
            .collect()
    }

    fn image(reference: &str) -> ImageRef {
        reference.parse().unwrap()
    }

    #[test]
    fn every_argument_the_controller_renders_reads_back_as_the_job_asked() {
        let priors = [
            "docker://registry.test:5000/os@sha256:aa".to_string(),
            "docker://quay.example/os@sha256:bb".to_string(),
        ];
        let spec = json!({
            "stream": "fedora/x86_64",
            // A path that looks like a flag stays a value.
            "source": {"rootfs": {"volume": "trees", "path": "--output=evil"}},
            "planner": {"maxLayers": 40, "repack": "Never"},
            "output": {"image": "docker://registry.test:5000/os:41", "compression": "zstd",
                       "pushSecretRef": {"name": "push"}},
        });
        let tasks = tasks(spec, &priors);
        let steps: Vec<Step> = tasks.iter().map(|t| t.step).collect();
        assert_eq!(steps, [Step::Plan, Step::Build]);
        for t in &tasks {
            assert_eq!(
                (&*t.namespace, &*t.job, &*t.job_uid),
                ("builds", "nightly", "4f1c")
            );
            assert_eq!(t.attempt, 3);
            assert_eq!(t.plan_file, std::path::Path::new("/work/plan.json"));
            assert_eq!(
                t.termination_log,
                std::path::Path::new("/dev/termination-log")
            );
            let inputs = &t.inputs;
            assert!(
                matches!(&inputs.source, BuildSource::Rootfs(p) if p == std::path::Path::new("/sources/trees/--output=evil")),
                "{:?}",
                inputs.source
            );
            assert_eq!(inputs.stream.as_deref(), Some("fedora/x86_64"));
            assert_eq!(inputs.priors, priors.each_ref().map(|p| image(p)));
            assert_eq!(inputs.plan.max_layers, 40);
            assert_eq!(inputs.plan.repack, crate::plan::RepackPolicy::Never);
            let registry = &inputs.registry;
            assert_eq!(
                registry.authfile.as_deref(),
                Some(std::path::Path::new("/var/run/strata/push-auth/auth.json"))
            );
            // Only the installer's insecure registry goes unverified.
            assert_eq!(registry.insecure_registries, ["registry.test:5000"]);
            assert!(!registry.insecure);
        }
        assert_eq!(tasks[0].output, None);
        assert_eq!(
            tasks[1].output,
            Some(image("docker://registry.test:5000/os:41"))
        );
        assert_eq!(tasks[1].compression, crate::layers::Compression::Zstd);
    }

    #[test]
    fn ostree_and_image_sources_read_back_with_the_controller_defaults() {
        let ostree = tasks(
            json!({
                "stream": "s", "mode": "PlanOnly",
                "source": {"ostree": {"volume": "repo", "repo": "srv/repo", "ref": "os/x86_64"}},
                "output": {"image": "docker://quay.example/os:1"},
            }),
            &[],
        );
        assert_eq!(ostree.len(), 1);
        let t = &ostree[0];
        assert!(
            matches!(&t.inputs.source, BuildSource::Ostree { repo, rev }
                if repo == std::path::Path::new("/sources/repo/srv/repo") && rev == "os/x86_64"),
            "{:?}",
            t.inputs.source
        );
        assert_eq!(t.pull, None, "a repository on a volume is read where it is");
        assert_eq!(t.inputs.plan.max_layers, 64);
        assert_eq!(t.inputs.plan.repack, crate::plan::RepackPolicy::Auto);

        let pulled = tasks(
            json!({
                "stream": "s",
                "source": {"ostree": {"repo": "https://ostree.example/repo", "commit": "ab12",
                    "gpgKeys": {"name": "keys", "key": "os.gpg"}}},
                "output": {"image": "docker://quay.example/os:1"},
            }),
            &[],
        );
        for t in &pulled {
            let pull = t
                .pull
                .as_ref()
                .expect("a repository named by URL is pulled");
            assert_eq!(pull.url, "https://ostree.example/repo");
            let keys = pull.gpg_keys.as_deref().unwrap();
            assert!(keys.starts_with("/var/run/strata/ostree-gpg"), "{keys:?}");
            assert!(
                matches!(&t.inputs.source, BuildSource::Ostree { repo, rev }
                    if repo.starts_with(crate::operator::pod::WORK_DIR) && rev == "ab12"),
                "both steps read the pull in the pod's work volume: {:?}",
                t.inputs.source
            );
        }
        assert_eq!(t.inputs.registry.authfile, None);
        assert!(t.inputs.registry.insecure_registries.is_empty());

        let from_image = tasks(
            json!({
                "stream": "s",
                "source": {"image": {"ref": "docker://registry.test:5000/src:1"}},
                "output": {"image": "docker://quay.example/os:1"},
            }),
            &[],
        );
        for t in &from_image {
            assert!(
                matches!(&t.inputs.source, BuildSource::Image(r) if *r == image("docker://registry.test:5000/src:1")),
                "{:?}",
                t.inputs.source
            );
            assert_eq!(
                t.inputs.registry.insecure_registries,
                ["registry.test:5000"]
            );
        }
        assert_eq!(from_image[1].compression, crate::layers::Compression::Gzip);
    }
}

//! `strata controller` and `strata worker`: argument handling around `operator`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use super::{ControllerArgs, LogFormat, WorkerArgs, WorkerStep};
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
    let source = args.source.source()?;
    let step = match args.step {
        WorkerStep::Plan => Step::Plan,
        WorkerStep::Build => Step::Build,
    };
    if step == Step::Build && args.output.is_none() {
        bail!("the build step needs --output");
    }
    let task = worker::Task {
        step,
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
    };
    worker::run(&task, &|line| eprintln!("strata worker: {line}"))?;
    Ok(())
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

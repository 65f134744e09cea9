//! The controller under load: 200 PlanOnly jobs across 20 streams on the real test
//! control plane (see tests/kube_common/operator_env.rs). Prints reconciles per second,
//! the p50 and p99 time from a worker's exit to the status update that shows its
//! report, and the controller's peak RSS.
//!
//! Run with `cargo bench --bench controller` (needs scripts/control-plane.sh build).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/kube_common/mod.rs"]
mod kube_common;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube_common::operator_env::{http_get, setup, wait_for};
use serde_json::json;
use strata::operator::report::Termination;

const JOBS: usize = 200;
const STREAMS: usize = 20;

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let Some(env) = setup().await else {
        eprintln!("controller benchmark skipped: no test control plane");
        return;
    };
    let reconciles_before = metric(env.health_port, "strata_reconciles_total");
    let started = Instant::now();
    for i in 0..JOBS {
        let stream = format!("bench-{}", i % STREAMS);
        let name = format!("bench-{i:03}");
        env.create("load", &name, &stream, "v1", json!({"mode": "PlanOnly"}))
            .await;
    }
    let jobs = env.jobs("load");
    let mut latencies = Vec::new();
    let pods: Api<Pod> = Api::namespaced(env.admin.clone(), "load");
    for i in 0..JOBS {
        let name = format!("bench-{i:03}");
        let job = wait_for(&jobs, &name, Duration::from_secs(1800), |j| {
            j.status
                .as_ref()
                .is_some_and(strata::operator::status::finished)
        })
        .await;
        latencies.push(report_latency(&pods, &job).await);
    }
    let wall = started.elapsed();
    let reconciles = metric(env.health_port, "strata_reconciles_total") - reconciles_before;
    let rss = env.controller_peak_rss_kib();
    latencies.sort_by(f64::total_cmp);
    let q = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!("controller benchmark: {JOBS} PlanOnly jobs across {STREAMS} streams");
    println!("  wall time                 {:.1} s", wall.as_secs_f64());
    println!(
        "  reconciles                {reconciles:.0} ({:.1} per second)",
        reconciles / wall.as_secs_f64()
    );
    println!("  worker exit → status p50  {:.0} ms", q(0.5) * 1000.0);
    println!("  worker exit → status p99  {:.0} ms", q(0.99) * 1000.0);
    println!("  controller peak RSS       {:.1} MiB", rss as f64 / 1024.0);
}

/// Seconds from the plan worker's exit (its termination message, to the nanosecond)
/// to the Planned condition's transition (set by the status write that showed it).
async fn report_latency(pods: &Api<Pod>, job: &strata::operator::crd::EncapsulationJob) -> f64 {
    let status = job.status.as_ref().unwrap();
    let planned = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Planned")
        .unwrap();
    let planned: jiff::Timestamp = planned.last_transition_time.parse().unwrap();
    let selector = format!(
        "strata.dev/job-uid={}",
        job.metadata.uid.as_deref().unwrap()
    );
    let pod = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .remove(0);
    let state = pod
        .status
        .unwrap()
        .container_statuses
        .unwrap()
        .remove(0)
        .state
        .unwrap();
    let message = state.terminated.unwrap().message.unwrap();
    let t: Termination = serde_json::from_str(&message).unwrap();
    let exited: jiff::Timestamp = t.finished.unwrap().parse().unwrap();
    planned.duration_since(exited).as_secs_f64()
}

fn metric(port: u16, name: &str) -> f64 {
    let body = http_get(port, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

//! The controller under load on the real node: 200 PlanOnly jobs across 20 streams,
//! run by the chart's controller pods and worker pods on a real kubelet (see
//! tests/kube_common/node_env.rs). Prints reconciles per second, the p50 and p99 time
//! from a worker's exit to the status update that shows its report (the kubelet's
//! status reporting included), and the leading replica's memory, read from its
//! container's cgroup.
//!
//! Run with `cargo bench --bench controller` as root (needs `scripts/setup.sh` and
//! `scripts/control-plane.sh build`).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/kube_common/mod.rs"]
mod kube_common;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube_common::node_env::{self, jobs, lease_holder, rootfs_spec, Node, JOBS};
use kube_common::operator_env::{create_job, finished, http_get_at, job_pods};
use serde_json::json;
use strata::operator::report::Termination;

const JOB_COUNT: usize = 200;
const STREAMS: usize = 20;
/// The chart's `metrics.port`.
const METRICS_PORT: u16 = 8080;

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let Some(node) = node_env::start().await else {
        eprintln!("controller benchmark skipped: no real node (scripts/control-plane.sh build)");
        return;
    };
    let leader = leader_address(&node).await;
    let reconciles_before = metric(&leader, "strata_reconciles_total");
    let started = Instant::now();
    eprintln!("controller benchmark: creating {JOB_COUNT} PlanOnly jobs");
    for i in 0..JOB_COUNT {
        let mut spec = rootfs_spec(&node, "v1", "unused");
        spec["stream"] = json!(format!("bench-{}", i % STREAMS));
        spec["mode"] = json!("PlanOnly");
        create_job(&jobs(&node), &format!("bench-{i:03}"), spec).await;
    }
    let (mut total, mut kubelet, mut controller) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..JOB_COUNT {
        let name = format!("bench-{i:03}");
        let job = finished(&jobs(&node), &name, Duration::from_secs(1800)).await;
        let (reported, shown) = report_latency(&node, &job).await;
        total.push(reported + shown);
        kubelet.push(reported);
        controller.push(shown);
        if (i + 1) % 50 == 0 {
            eprintln!("controller benchmark: {} of {JOB_COUNT} jobs done", i + 1);
        }
    }
    let wall = started.elapsed();
    let reconciles = metric(&leader, "strata_reconciles_total") - reconciles_before;
    let memory = node_env::leader_memory(&node).await;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!("controller benchmark: {JOB_COUNT} PlanOnly jobs across {STREAMS} streams, real node");
    println!("  wall time                 {:.1} s", wall.as_secs_f64());
    println!(
        "  reconciles                {reconciles:.0} ({:.1} per second)",
        reconciles / wall.as_secs_f64()
    );
    for (what, seconds) in [
        ("worker exit → status", &mut total),
        ("  worker exit → kubelet", &mut kubelet),
        ("  kubelet → status", &mut controller),
    ] {
        let (p50, p99) = quantiles(seconds);
        println!(
            "  {what:<24}p50 {:.0} ms, p99 {:.0} ms",
            p50 * 1000.0,
            p99 * 1000.0
        );
    }
    println!("  controller RSS (cgroup)   {:.1} MiB", mib(memory.rss));
    println!(
        "  controller peak (cgroup)  {:.1} MiB, page cache included",
        mib(memory.peak)
    );
}

/// The leading replica's pod IP, which the host reaches on the test bridge.
async fn leader_address(node: &Node) -> String {
    let leader = lease_holder(node).await.expect("a leader");
    let pod = Api::<Pod>::namespaced(node.admin.clone(), node_env::RELEASE_NAMESPACE)
        .get(&leader)
        .await
        .unwrap();
    pod.status
        .and_then(|s| s.pod_ip)
        .expect("the leader's pod IP")
}

/// Seconds from the plan worker's exit (its termination message, to the nanosecond)
/// to the kubelet's last status write of its pod (to the second), and from there to
/// the Planned condition's transition (set by the status write that showed it).
async fn report_latency(node: &Node, job: &strata::operator::crd::EncapsulationJob) -> (f64, f64) {
    let status = job.status.as_ref().unwrap();
    let planned = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Planned")
        .unwrap_or_else(|| panic!("not planned: {status:?}"));
    let planned: jiff::Timestamp = planned.last_transition_time.parse().unwrap();
    let pod = job_pods(&node.admin, JOBS, job).await.remove(0);
    let reported = pod
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.manager.as_deref() == Some("kubelet"))
        .filter_map(|f| f.time.as_ref())
        .map(|t| t.0)
        .max()
        .expect("the kubelet wrote the pod's status");
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
    (
        reported.duration_since(exited).as_secs_f64().max(0.0),
        planned.duration_since(reported).as_secs_f64(),
    )
}

/// The median and the 99th percentile.
fn quantiles(seconds: &mut [f64]) -> (f64, f64) {
    seconds.sort_by(f64::total_cmp);
    let q = |q: f64| seconds[((seconds.len() - 1) as f64 * q).round() as usize];
    (q(0.5), q(0.99))
}

fn metric(host: &str, name: &str) -> f64 {
    let body = http_get_at(host, METRICS_PORT, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

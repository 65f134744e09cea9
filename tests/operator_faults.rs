//! The operator through control-plane faults, on real parts: the apiserver taken away
//! for 10 s and for 60 s while a worker runs, etcd restarted under a job, and the
//! leading replica killed with a standby waiting. The controller runs under
//! restart-always, as its Deployment does, and its own exits are counted: each fault
//! may cost at most the one exit of a leader that could not renew its lease.
//!
//! Every job must end Succeeded in its first attempt with one pod: the worker and the
//! node keep what they have to report until the API server takes it, and the
//! controller finds its pods again from the job's status.
//!
//! The figures the README quotes come from here (`--nocapture` prints them).
//!
//! With no API server to reach at all, as during an outage or before the control
//! plane is up, the controller waits and retries with backoff instead of exiting (an
//! exit under restart-always becomes a crash loop that outlasts the outage), healthy
//! but not ready.

mod common;
mod kube_common;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube_common::operator_env::{expect, http_get, setup, wait_for, Env};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use strata::operator::crd::EncapsulationJob;

/// The chart's lease duration (`strata controller --lease-duration`'s default).
const LEASE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_rides_out_control_plane_faults() {
    let Some(env) = setup().await else { return };
    let short = apiserver_outage(&env, "away10", Duration::from_secs(10)).await;
    let long = apiserver_outage(&env, "away60", Duration::from_secs(60)).await;
    etcd_restart(&env).await;
    let takeover = leader_killed(&env).await;
    println!(
        "apiserver restarted → first reconcile: {:.1} s after 10 s away, {:.1} s after 60 s away; \
         leader killed → standby reconciles: {:.1} s (lease {} s)",
        short.as_secs_f64(),
        long.as_secs_f64(),
        takeover.as_secs_f64(),
        LEASE.as_secs()
    );
}

/// Waits (briefly) until `name`'s first pod exists: the worker is running.
async fn pod_created(env: &Env, name: &str) {
    let pods: Api<Pod> = Api::namespaced(env.admin.clone(), "e2e");
    let deadline = Instant::now() + Duration::from_secs(60);
    while pods.get_opt(&format!("{name}-a1")).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "{name}: no pod within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the controller has written anything into `name`'s status.
async fn first_reconcile(env: &Env, name: &str) -> EncapsulationJob {
    wait_for(&env.jobs("e2e"), name, Duration::from_secs(120), |j| {
        j.status.as_ref().is_some_and(|s| !s.conditions.is_empty())
    })
    .await
}

/// Succeeded, in one attempt, with one pod.
async fn succeeded_once(env: &Env, name: &str) {
    let job = env.finished("e2e", name, Duration::from_secs(240)).await;
    expect(&job, "Succeeded", "True", None);
    let status = job.status.as_ref().unwrap();
    assert_eq!(
        status.attempts,
        1,
        "{name}: attempts; status: {}\nthe controller said:\n{}",
        serde_json::to_string_pretty(status).unwrap(),
        env.controller_log()
    );
    assert_eq!(env.pods("e2e", &job).await.len(), 1, "{name}: one pod");
}

/// The apiserver goes away just after a job's pod was created, and comes back after
/// `outage`. Returns how long after its restart a job created as soon as it was ready
/// was first reconciled.
async fn apiserver_outage(env: &Env, name: &str, outage: Duration) -> Duration {
    let exits = env.controller_exits();
    env.create("e2e", name, name, "v1", json!({})).await;
    pod_created(env, name).await;
    env.cp.stop_apiserver();
    tokio::time::sleep(outage).await;
    // Clients reach it before it reports ready: count from its start.
    let back = Instant::now();
    env.cp.start_apiserver();
    let blind = format!("{name}-after");
    env.create("e2e", &blind, &blind, "v1", json!({"mode": "PlanOnly"}))
        .await;
    first_reconcile(env, &blind).await;
    let recovery = back.elapsed();
    succeeded_once(env, name).await;
    succeeded_once(env, &blind).await;
    at_most_one_exit(env, exits, &format!("{name} ({outage:?} away)"));
    println!("{name}: recovery {recovery:?}");
    recovery
}

/// etcd stops and starts again under a running job: the apiserver answers errors
/// meanwhile, which nothing may treat as final.
async fn etcd_restart(env: &Env) {
    let exits = env.controller_exits();
    env.create("e2e", "etcd", "etcd", "v2", json!({})).await;
    pod_created(env, "etcd").await;
    env.cp.restart_etcd();
    succeeded_once(env, "etcd").await;
    at_most_one_exit(env, exits, "etcd restarted");
}

/// The fault cost the controller at most the one exit of a leader that could not
/// renew its lease (counted from `before`).
fn at_most_one_exit(env: &Env, before: u32, fault: &str) {
    let exited = env.controller_exits() - before;
    println!("{fault}: {exited} controller exits");
    assert!(
        exited <= 1,
        "{fault}: {exited} controller exits:\n{}",
        env.controller_log()
    );
}

/// A standby waits while the leader leads; the leader is killed (SIGKILL, as a lost
/// node would); the standby takes over within one lease duration of the leader's last
/// renewal. Returns the time from the kill to the first reconcile of a job created
/// right after it.
async fn leader_killed(env: &Env) -> Duration {
    let log = env.scratch().join("standby-faults.log");
    let standby = env.start_standby(common::free_port("127.0.0.1"), &log);
    // Let the standby read the lease and settle into waiting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.kill_controller();
    let killed = Instant::now();
    env.create("e2e", "takeover", "takeover", "v1", json!({}))
        .await;
    first_reconcile(env, "takeover").await;
    let takeover = killed.elapsed();
    succeeded_once(env, "takeover").await;
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        takeover <= LEASE + Duration::from_secs(2),
        "takeover took {takeover:?}:\n{said}"
    );
    assert!(said.contains("leading"), "{said}");
    assert_eq!(standby.exits(), 0, "{said}");
    standby.kill();
    takeover
}

#[test]
fn the_controller_waits_for_an_unreachable_api_server() {
    let tmp = tempfile::tempdir().unwrap();
    let (api_port, health_port) = (
        common::free_port("127.0.0.1"),
        common::free_port("127.0.0.1"),
    );
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: \
             https://127.0.0.1:{api_port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  \
             user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: gone\n    user: \
             u\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let log = tmp.path().join("controller.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["controller", "--health-addr"])
        .arg(format!("127.0.0.1:{health_port}"))
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Waits of 1, 2, then 4 s each, less up to half at random: 3 to 8 tries in 8 s.
    std::thread::sleep(Duration::from_secs(8));
    let alive = child.try_wait().unwrap().is_none();
    let (healthz, readyz) = match alive {
        true => (
            http_get(health_port, "/healthz"),
            http_get(health_port, "/readyz"),
        ),
        false => Default::default(),
    };
    let _ = child.kill();
    let _ = child.wait();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        alive,
        "the controller exited without an API server:\n{said}"
    );
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    let retries = said.matches("cannot take the lease; retrying").count();
    assert!(
        (2..=8).contains(&retries),
        "{retries} retries in 8 s:\n{said}"
    );
}

use super::*;
use crate::operator::crd::{EncapsulationJob, OutputStatus};
use serde_json::json;

fn settings() -> Settings {
    Settings::for_tests(&["127.0.0.1:5000"])
}

fn job(name: &str, stream: &str, created: &str, extra: serde_json::Value) -> EncapsulationJob {
    let mut spec = json!({
        "source": {"image": {"ref": "docker://127.0.0.1:5000/src:1"}},
        "stream": stream,
        "output": {"image": format!("docker://127.0.0.1:5000/os:{name}")},
        "retries": 1,
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "strata.dev/v1alpha1", "kind": "EncapsulationJob",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                     "generation": 1, "creationTimestamp": created},
        "spec": spec,
    }))
    .unwrap()
}

fn at(t: &str) -> jiff::Timestamp {
    t.parse().unwrap()
}

fn decide_at(
    job: &EncapsulationJob,
    pods: &[Pod],
    stream: &[EncapsulationJob],
    now: &str,
) -> Outcome {
    decide(&Observed {
        job,
        pods,
        stream,
        reports: &Reports::default(),
        now: at(now),
        settings: &settings(),
    })
}

fn reason(o: &Outcome) -> String {
    condition(&o.status, ConditionType::Succeeded)
        .unwrap()
        .reason
        .clone()
}

fn created(o: &Outcome) -> Vec<Pod> {
    o.actions
        .iter()
        .filter_map(|a| match a {
            Action::Create(p) => Some((**p).clone()),
            Action::Delete(_) => None,
        })
        .collect()
}

/// The pod of `attempt` with the plan container ended by `code`.
fn pod(job: &EncapsulationJob, attempt: u32, phase: &str, plan_exit: Option<i32>) -> Pod {
    let mut p = worker_pod(
        job,
        &Attempt {
            number: attempt,
            priors: &[],
            settings: &settings(),
        },
    );
    p.metadata.uid = Some(format!("uid-{}", p.name_any()));
    let state = match plan_exit {
        Some(code) => {
            json!({"terminated": {"exitCode": code, "message": "{\"jobUid\":\"x\",\"attempt\":1,\"step\":\"plan\",\"error\":\"no such tree\"}"}})
        }
        None => json!({"running": {}}),
    };
    p.status = Some(
        serde_json::from_value(json!({
            "phase": phase,
            "initContainerStatuses": [{"name": "plan", "ready": false, "restartCount": 0,
                "image": "", "imageID": "", "state": state}],
        }))
        .unwrap(),
    );
    p
}

/// Status after the controller created attempt `n`'s pod and recorded its UID.
fn confirmed(attempts: u32) -> EncapsulationJobStatus {
    EncapsulationJobStatus {
        attempts,
        pod_uid: Some(format!("uid-a-a{attempts}")),
        ..Default::default()
    }
}

#[test]
fn a_new_job_starts_its_first_attempt() {
    let j = job("a", "s", "2026-01-01T00:00:00Z", json!({}));
    let o = decide_at(&j, &[], std::slice::from_ref(&j), "2026-01-01T00:00:01Z");
    let pods = created(&o);
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].name_any(), "a-a1");
    assert_eq!(o.status.attempts, 1);
    assert_eq!(reason(&o), "Running");
    let args = pods[0]
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .as_ref()
        .unwrap()[0]
        .command
        .clone()
        .unwrap();
    assert!(
        args.contains(&"--insecure-registry=127.0.0.1:5000".to_string()),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--tls-verify")),
        "{args:?}"
    );
}

#[test]
fn same_stream_jobs_wait_in_creation_order_and_other_streams_do_not() {
    let older = job("a", "s", "2026-01-01T00:00:00Z", json!({}));
    let newer = job("b", "s", "2026-01-01T00:00:05Z", json!({}));
    let other = job("c", "t", "2026-01-01T00:00:09Z", json!({}));
    let all = [older.clone(), newer.clone(), other.clone()];
    let o = decide_at(&newer, &[], &all, "2026-01-01T00:00:10Z");
    assert_eq!(reason(&o), "WaitingForStream");
    assert!(o.actions.is_empty());
    assert!(o.status.conditions[0].message.contains("job a"));
    // A blocker deleted unfinished wakes nobody: the waiting job looks again soon.
    assert_eq!(o.requeue, Some(Duration::from_secs(30)));
    assert_eq!(
        created(&decide_at(&older, &[], &all, "2026-01-01T00:00:10Z")).len(),
        1
    );
    assert_eq!(
        created(&decide_at(&other, &[], &all, "2026-01-01T00:00:10Z")).len(),
        1
    );
}

#[test]
fn the_next_job_plans_against_the_newest_succeeded_outputs_pinned() {
    let mut done = job("a", "s", "2026-01-01T00:00:00Z", json!({}));
    let mut status = EncapsulationJobStatus::default();
    set_condition(
        &mut status,
        ConditionType::Succeeded,
        Truth::True,
        Reason::Succeeded,
        "",
        "t",
        None,
    );
    status.output = Some(OutputStatus {
        image: "docker://127.0.0.1:5000/os:a".into(),
        digest: "sha256:aa".into(),
        size: 1,
    });
    done.status = Some(status);
    let next = job("b", "s", "2026-01-01T00:00:05Z", json!({}));
    let o = decide_at(&next, &[], &[done, next.clone()], "2026-01-01T00:01:00Z");
    let pod = &created(&o)[0];
    let args = pod.spec.as_ref().unwrap().containers[0]
        .command
        .clone()
        .unwrap();
    assert!(
        args.iter()
            .any(|a| a == "--prior=docker://127.0.0.1:5000/os@sha256:aa"),
        "{args:?}"
    );
}

#[test]
fn an_invalid_spec_fails_without_a_pod() {
    let j = job(
        "a",
        "s",
        "2026-01-01T00:00:00Z",
        json!({"output": {"image": "oci:/x"}}),
    );
    let o = decide_at(&j, &[], std::slice::from_ref(&j), "2026-01-01T00:00:01Z");
    assert!(o.actions.is_empty());
    assert_eq!(reason(&o), "InvalidSpec");
    assert!(finished(&o.status));
}

#[test]
fn a_job_outside_the_worker_namespaces_fails_without_a_pod() {
    let j = job("a", "s", "2026-01-01T00:00:00Z", json!({}));
    let mut settings = settings();
    settings.policy.worker_namespaces = vec!["builds".into()];
    let o = decide(&Observed {
        job: &j,
        pods: &[],
        stream: std::slice::from_ref(&j),
        reports: &Reports::default(),
        now: at("2026-01-01T00:00:01Z"),
        settings: &settings,
    });
    assert!(o.actions.is_empty());
    assert_eq!(reason(&o), "InvalidSpec");
    let message = &condition(&o.status, ConditionType::Succeeded)
        .unwrap()
        .message;
    assert!(
        message.contains("\"ns\" has no Strata worker account"),
        "{message}"
    );
}

#[test]
fn a_failed_attempt_backs_off_then_retries_then_gives_up() {
    let mut j = job("a", "s", "2026-01-01T00:00:00Z", json!({}));
    j.status = Some(confirmed(1));
    let p1 = pod(&j, 1, "Failed", Some(2));
    let o = decide_at(&j, std::slice::from_ref(&p1), &[], "2026-01-01T00:01:00Z");
    assert_eq!(reason(&o), "BackOff");
    assert_eq!(o.requeue, Some(Duration::from_secs(10)));
    let failure = o.status.failure.clone().unwrap();
    assert_eq!(failure.message, "no such tree");
    assert_eq!(
        failure.logs_command.as_deref(),
        Some("kubectl logs -n ns a-a1 -c plan")
    );

    j.status = Some(o.status);
    let o = decide_at(&j, std::slice::from_ref(&p1), &[], "2026-01-01T00:01:05Z");
    assert!(created(&o).is_empty(), "still backing off");
    assert_eq!(
        o.status.failure.as_ref().unwrap().time,
        failure.time,
        "recorded once"
    );
    let o = decide_at(&j, std::slice::from_ref(&p1), &[], "2026-01-01T00:01:11Z");
    assert_eq!(created(&o)[0].name_any(), "a-a2");
    assert_eq!(
        o.status.pod_uid, None,
        "a new attempt's pod is not confirmed yet"
    );

    j.status = Some(EncapsulationJobStatus {
        pod_uid: Some("uid-a-a2".into()),
        ..o.status
    });
    let p2 = pod(&j, 2, "Failed", Some(1));
    let o = decide_at(&j, &[p1, p2], &[], "2026-01-01T00:02:00Z");
    assert_eq!(reason(&o), "Failed");
    assert!(o.status.completion_time.is_some());
}

#[test]
fn an_oom_killed_step_says_so_and_names_the_limit_to_raise() {
    let mut j = job("a", "s", "2026-01-01T00:00:00Z", json!({}));
    j.status = Some(confirmed(1));
    let mut p1 = pod(&j, 1, "Failed", None);
    let statuses = &mut p1.status.as_mut().unwrap().init_container_statuses;
    statuses.as_mut().unwrap()[0].state = Some(
        serde_json::from_value(json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}))
            .unwrap(),
    );
    let o = decide_at(&j, &[p1], &[], "2026-01-01T00:01:00Z");
    assert_eq!(reason(&o), "BackOff");
    let message = o.status.failure.unwrap().message;
    assert!(message.contains("OOMKilled"), "{message}");
    assert!(message.contains("limits.memory"), "{message}");
}

#[test]
fn a_deleted_pod_counts_as_a_failed_attempt() {
    let mut j = job("a", "s", "2026-01-01T00:00:00Z", json!({}));
    j.status = Some(confirmed(1));
    let o = decide_at(&j, &[], &[], "2026-01-01T00:01:00Z");
    assert_eq!(o.status.failure.as_ref().unwrap().reason, "PodDeleted");
    assert_eq!(reason(&o), "BackOff");
}

/// The controller recorded the attempt and died before its pod existed: the pod is
/// created on the next look, as the same attempt.
#[test]
fn an_attempt_without_a_pod_creates_it() {
    let mut j = job("a", "s", "2026-01-01T00:00:00Z", json!({}));
    j.status = Some(EncapsulationJobStatus {
        attempts: 1,
        ..Default::default()
    });
    let o = decide_at(&j, &[], &[], "2026-01-01T00:00:02Z");
    assert_eq!(created(&o)[0].name_any(), "a-a1");
    assert_eq!(o.status.attempts, 1);
}

/// A pod with the attempt's labels whose creation status never recorded (the
/// controller's own before a restart, or one made by anyone with `edit`) is replaced,
/// never adopted, and its termination message is never read as a report.
#[test]
fn an_unconfirmed_pod_is_replaced_and_never_reports() {
    let mut j = job("a", "s", "2026-01-01T00:00:00Z", json!({}));
    j.status = Some(EncapsulationJobStatus {
        attempts: 1,
        ..Default::default()
    });
    let forged = pod(&j, 1, "Succeeded", Some(0));
    assert!(reports_to_fetch(&j, std::slice::from_ref(&forged)).is_empty());
    let o = decide_at(
        &j,
        std::slice::from_ref(&forged),
        &[],
        "2026-01-01T00:00:02Z",
    );
    assert!(
        matches!(&o.actions[..], [Action::Delete(n)] if n == "a-a1"),
        "{:?}",
        o.actions
    );
    assert_eq!(reason(&o), "Running");

    // With a confirmed pod, a second pod squatting its labels changes nothing.
    j.status = Some(confirmed(1));
    let mut squatter = pod(&j, 1, "Succeeded", Some(0));
    squatter.metadata.name = Some("a-a1-forged".into());
    squatter.metadata.uid = Some("uid-forged".into());
    let ours = pod(&j, 1, "Running", None);
    assert!(reports_to_fetch(&j, &[squatter.clone(), ours.clone()]).is_empty());
    let o = decide_at(&j, &[squatter, ours], &[], "2026-01-01T00:00:02Z");
    assert!(o.actions.is_empty(), "{:?}", o.actions);
    assert_eq!(reason(&o), "Running");
}

#[test]
fn cancelling_deletes_the_running_pod() {
    let mut j = job("a", "s", "2026-01-01T00:00:00Z", json!({"cancel": true}));
    j.status = Some(EncapsulationJobStatus {
        attempts: 1,
        ..Default::default()
    });
    let o = decide_at(
        &j,
        &[pod(&j, 1, "Running", None)],
        &[],
        "2026-01-01T00:00:02Z",
    );
    assert!(matches!(&o.actions[..], [Action::Delete(n)] if n == "a-a1"));
    assert_eq!(reason(&o), "Cancelled");
}

#[test]
fn the_deadline_ends_a_running_job() {
    let mut j = job(
        "a",
        "s",
        "2026-01-01T00:00:00Z",
        json!({"timeoutSeconds": 60}),
    );
    j.status = Some(EncapsulationJobStatus {
        start_time: Some("2026-01-01T00:00:00Z".into()),
        ..confirmed(1)
    });
    let running = [pod(&j, 1, "Running", None)];
    let o = decide_at(&j, &running, &[], "2026-01-01T00:00:30Z");
    assert_eq!(o.requeue, Some(Duration::from_secs(30)));
    let o = decide_at(&j, &running, &[], "2026-01-01T00:01:01Z");
    assert_eq!(reason(&o), "DeadlineExceeded");
    assert_eq!(o.actions.len(), 1);
}

#[test]
fn backoff_doubles_and_is_capped() {
    let base = Duration::from_secs(10);
    assert_eq!(backoff(base, 1), Duration::from_secs(10));
    assert_eq!(backoff(base, 3), Duration::from_secs(40));
    assert_eq!(backoff(base, 30), MAX_BACKOFF);
}

/// The worker flags the controller renders are the ones `strata worker` parses, and
/// no value is read as a flag, however it starts.
#[test]
fn rendered_worker_arguments_parse_back_to_the_spec() {
    use clap::Parser;
    let j = job(
        "a",
        "--output=docker://evil/os:1",
        "2026-01-01T00:00:00Z",
        json!({"output": {"image": "docker://127.0.0.1:5000/os:a"}}),
    );
    let priors = ["docker://127.0.0.1:5000/os:prev".to_string()];
    let pod = worker_pod(
        &j,
        &Attempt {
            number: 3,
            priors: &priors,
            settings: &settings(),
        },
    );
    let spec = pod.spec.unwrap();
    let containers = spec.init_containers.unwrap_or_default();
    for c in containers.iter().chain(&spec.containers) {
        // The worker command (`strata`), then its arguments.
        let args = c.command.clone().unwrap();
        let cli =
            crate::cli::Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let crate::cli::Command::Worker(w) = cli.command else {
            panic!("{}: not a worker command", c.name)
        };
        assert_eq!(w.stream.as_deref(), Some("--output=docker://evil/os:1"));
        assert_eq!(w.attempt, 3);
        assert_eq!(
            w.prior.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            priors
        );
        if let Some(out) = &w.output {
            assert_eq!(out.to_string(), "docker://127.0.0.1:5000/os:a");
        }
    }
}

/// A pod that cannot start (its image cannot be pulled) fails its attempt once the
/// pending timeout passes, with the kubelet's reason, instead of "Running" forever.
#[test]
fn a_pod_stuck_pending_fails_its_attempt() {
    let mut j = job("a", "s", "2026-01-01T00:00:00Z", json!({}));
    j.status = Some(confirmed(1));
    let mut p = pod(&j, 1, "Pending", None);
    p.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(
        "2026-01-01T00:00:00Z",
    )));
    p.status
        .as_mut()
        .unwrap()
        .init_container_statuses
        .as_mut()
        .unwrap()[0]
        .state = Some(
        serde_json::from_value(
            json!({"waiting": {"reason": "ErrImagePull", "message": "no such image"}}),
        )
        .unwrap(),
    );
    let o = decide_at(&j, std::slice::from_ref(&p), &[], "2026-01-01T00:05:00Z");
    assert_eq!(reason(&o), "Running");
    assert_eq!(o.requeue, Some(Duration::from_secs(300)));
    let o = decide_at(&j, std::slice::from_ref(&p), &[], "2026-01-01T00:10:01Z");
    let failure = o.status.failure.unwrap();
    assert_eq!(failure.reason, "PodPending");
    assert!(
        failure.message.contains("plan ErrImagePull: no such image"),
        "{}",
        failure.message
    );
}

/// A pod the API server refuses for good fails its attempt as `PodCreateFailed`; the
/// last attempt fails the job.
#[test]
fn a_refused_pod_fails_its_attempt() {
    let mut j = job("a", "s", "2026-01-01T00:00:00Z", json!({"retries": 0}));
    j.status = Some(EncapsulationJobStatus {
        attempts: 1,
        ..Default::default()
    });
    let o = create_failed(
        &Observed {
            job: &j,
            pods: &[],
            stream: &[],
            reports: &Reports::default(),
            now: at("2026-01-01T00:00:01Z"),
            settings: &settings(),
        },
        "serviceaccounts \"strata-worker\" not found".into(),
    );
    assert_eq!(o.status.failure.as_ref().unwrap().reason, "PodCreateFailed");
    assert_eq!(reason(&o), "Failed");
    assert!(o.actions.is_empty());
}

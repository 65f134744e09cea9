//! Unit tests of the stream reconciler: what it creates, records, prunes and waits for.

use std::time::Duration;

use kube::ResourceExt;
use serde_json::json;

use super::crd::{EncapsulationStream, EncapsulationStreamStatus};
use super::decide::*;
use crate::operator::crd::EncapsulationJob;

const UID: &str = "0c8e5a3e-0000-4000-8000-000000000001";

fn stream(extra: serde_json::Value) -> EncapsulationStream {
    let mut value = json!({
        "apiVersion": "strata.dev/v1alpha1", "kind": "EncapsulationStream",
        "metadata": {"name": "fcos", "namespace": "os", "uid": UID, "generation": 1},
        "spec": {
            "source": {"image": {"ref": "docker://quay.example/fcos:stable"}},
            "pollIntervalSeconds": 60,
            "output": {"repository": "docker://registry.example/os/fcos", "tag": "{version}-{n}"},
        },
    });
    merge(&mut value, extra);
    serde_json::from_value(value).unwrap()
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn identity(n: u8) -> Identity {
    let digest = format!("sha256:{}", format!("{n:02x}").repeat(32));
    Identity {
        reference: format!("docker://quay.example/fcos@{digest}"),
        digest,
        version: Some(format!("41.{n}")),
    }
}

fn at(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

/// One reconcile: decide, and when it asks for a job, create it (as the controller
/// does) and record it. Returns the stream with the new status and the jobs.
fn step(
    s: &EncapsulationStream,
    jobs: &mut Vec<EncapsulationJob>,
    poll: Option<Result<Identity, String>>,
    now: jiff::Timestamp,
) -> (EncapsulationStream, Outcome) {
    let mut outcome = decide(&Observed {
        stream: s,
        jobs,
        poll,
        now,
    });
    if let Some(build) = &outcome.create {
        let mut job = build.job.clone();
        job.metadata.uid = Some(format!("job-{}", jobs.len()));
        jobs.push(job);
        record(&mut outcome.status, build, now);
    }
    jobs.retain(|j| !outcome.delete.contains(&j.name_any()));
    let mut next = s.clone();
    next.status = Some(outcome.status.clone());
    (next, outcome)
}

fn finish(job: &mut EncapsulationJob, reason: &str, download: u64) {
    job.status = Some(
        serde_json::from_value(json!({
            "conditions": [{"type": "Succeeded", "status": if reason == "Succeeded" {"True"} else {"False"},
                "reason": reason, "message": "", "lastTransitionTime": at(5).to_string()}],
            "completionTime": at(5).to_string(),
            "output": {"image": "docker://registry.example/os/fcos:41.1-1", "digest": "sha256:aa", "size": 10},
            "diff": [{"image": "x", "reusedLayers": 3, "addedLayers": 1, "removedLayers": 1,
                "downloadBytes": download, "reusedPercent": 75.0}],
        }))
        .unwrap(),
    );
}

fn status(s: &EncapsulationStream) -> &EncapsulationStreamStatus {
    s.status.as_ref().unwrap()
}

fn condition<'a>(s: &'a EncapsulationStream, type_: &str) -> (&'a str, &'a str) {
    let c = status(s)
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap();
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn a_new_source_makes_one_pinned_job_owned_by_the_stream() {
    let s = stream(json!({}));
    assert!(poll_due(&s, at(0)), "a new stream reads its source");
    let mut jobs = Vec::new();
    let (s, out) = step(&s, &mut jobs, Some(Ok(identity(1))), at(0));
    let job = &jobs[0];
    assert_eq!(
        job.spec.source.image.as_ref().unwrap().reference,
        identity(1).reference
    );
    assert_eq!(
        job.spec.output.image,
        "docker://registry.example/os/fcos:41.1-1"
    );
    assert_eq!(job.spec.stream, "fcos");
    assert_eq!(job.namespace().as_deref(), Some("os"));
    assert_eq!(job.labels()[STREAM_UID_LABEL], UID);
    assert!(controlled_by(job, &s));
    let st = status(&s);
    assert_eq!(st.active.as_deref(), Some(job.name_any().as_str()));
    assert_eq!(
        st.last_source_digest.as_deref(),
        Some(identity(1).digest.as_str())
    );
    assert_eq!((st.builds, st.history.len()), (1, 1));
    assert_eq!(condition(&s, "Ready"), ("True", "SourceRead"));
    assert_eq!(condition(&s, "Building"), ("True", "JobRunning"));
    assert_eq!(condition(&s, "Suspended"), ("False", "Active"));
    assert_eq!(out.requeue, Some(Duration::from_secs(60)));
}

#[test]
fn the_same_source_again_makes_nothing_and_waits_an_interval() {
    let mut jobs = Vec::new();
    let (s, _) = step(&stream(json!({})), &mut jobs, Some(Ok(identity(1))), at(0));
    finish(&mut jobs[0], "Succeeded", 100);
    assert!(!poll_due(&s, at(30)), "the interval has not passed");
    let (s, _) = step(&s, &mut jobs, None, at(30));
    // The job ended: the next poll is now.
    assert!(poll_due(&s, at(31)));
    let (s, out) = step(&s, &mut jobs, Some(Ok(identity(1))), at(31));
    assert!(out.create.is_none());
    assert_eq!(jobs.len(), 1);
    let entry = &status(&s).history[0];
    assert_eq!(entry.result, "Succeeded");
    assert_eq!(
        entry.output.as_deref(),
        Some("docker://registry.example/os/fcos@sha256:aa")
    );
    assert_eq!(
        (entry.download_bytes, entry.reused_percent),
        (Some(100), Some(75.0))
    );
    assert_eq!(condition(&s, "Building"), ("False", "Idle"));
    assert!(!poll_due(&s, at(60)) && poll_due(&s, at(91)));
}

#[test]
fn a_new_source_waits_for_the_running_job_and_a_failed_one_blocks_nothing() {
    let mut jobs = Vec::new();
    let (s, _) = step(&stream(json!({})), &mut jobs, Some(Ok(identity(1))), at(0));
    let (s, out) = step(&s, &mut jobs, Some(Ok(identity(2))), at(60));
    assert!(
        out.create.is_none(),
        "one job at a time, so it plans against the last"
    );
    finish(&mut jobs[0], "Failed", 0);
    let (s, _) = step(&s, &mut jobs, None, at(70));
    assert!(poll_due(&s, at(70)));
    let (s, out) = step(&s, &mut jobs, Some(Ok(identity(2))), at(70));
    let created = out.create.expect("the next source builds after a failure");
    assert_eq!(
        created.job.spec.output.image,
        "docker://registry.example/os/fcos:41.2-2"
    );
    let results: Vec<_> = status(&s)
        .history
        .iter()
        .map(|e| e.result.as_str())
        .collect();
    assert_eq!(results, ["Running", "Failed"]);
}

#[test]
fn a_restart_before_recording_makes_the_same_job() {
    let s = stream(json!({}));
    let o = |now| {
        decide(&Observed {
            stream: &s,
            jobs: &[],
            poll: Some(Ok(identity(1))),
            now,
        })
    };
    let (a, b) = (o(at(0)).create.unwrap(), o(at(5)).create.unwrap());
    assert_eq!(a.job.name_any(), b.job.name_any());
    assert_eq!(a.job.spec, b.job.spec);
    assert!(a.job.name_any().len() <= 63);
}

#[test]
fn build_now_rebuilds_an_unchanged_source_once() {
    let mut jobs = Vec::new();
    let (mut s, _) = step(&stream(json!({})), &mut jobs, Some(Ok(identity(1))), at(0));
    finish(&mut jobs[0], "Succeeded", 1);
    s.annotations_mut()
        .insert(BUILD_NOW_ANNOTATION.into(), "ci-run-7".into());
    let (s, _) = step(&s, &mut jobs, None, at(1));
    assert!(poll_due(&s, at(2)), "build-now is answered without waiting");
    let (s, out) = step(&s, &mut jobs, Some(Ok(identity(1))), at(2));
    let created = out.create.expect("build-now builds the same source");
    assert_ne!(created.job.name_any(), jobs[0].name_any());
    assert_eq!(status(&s).build_now.as_deref(), Some("ci-run-7"));
    let answered: Vec<_> = status(&s)
        .history
        .iter()
        .map(|b| b.build_now.as_deref())
        .collect();
    assert_eq!(
        answered,
        [Some("ci-run-7"), None],
        "a pipeline finds its build"
    );
    finish(&mut jobs[1], "Succeeded", 1);
    let (s, _) = step(&s, &mut jobs, None, at(3));
    let (_, out) = step(&s, &mut jobs, Some(Ok(identity(1))), at(4));
    assert!(out.create.is_none(), "one build per build-now value");
}

#[test]
fn suspend_starts_nothing_and_leaves_the_running_job() {
    let mut jobs = Vec::new();
    let (mut s, _) = step(&stream(json!({})), &mut jobs, Some(Ok(identity(1))), at(0));
    s.spec.suspend = true;
    s.metadata.generation = Some(2);
    assert!(!poll_due(&s, at(1000)), "a suspended stream reads nothing");
    let (s, out) = step(&s, &mut jobs, Some(Ok(identity(2))), at(1000));
    assert!(out.create.is_none() && out.delete.is_empty() && out.requeue.is_none());
    assert_eq!(condition(&s, "Suspended"), ("True", "Suspended"));
    assert_eq!(condition(&s, "Building"), ("True", "JobRunning"));
}

#[test]
fn a_failing_source_backs_off_then_recovers() {
    let s = stream(json!({"spec": {"pollIntervalSeconds": 300}}));
    let mut jobs = Vec::new();
    let mut waits = Vec::new();
    let mut s = s;
    let mut now = at(0);
    for _ in 0..7 {
        let (next, out) = step(&s, &mut jobs, Some(Err("registry down".into())), now);
        waits.push(out.requeue.unwrap().as_secs());
        now += jiff::SignedDuration::from_secs(out.requeue.unwrap().as_secs() as i64);
        s = next;
    }
    assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
    assert_eq!(condition(&s, "Ready"), ("False", "SourceUnavailable"));
    assert!(status(&s)
        .conditions
        .iter()
        .any(|c| c.message.contains("registry down")));
    assert!(jobs.is_empty());
    let (s, out) = step(&s, &mut jobs, Some(Ok(identity(1))), now);
    assert!(out.create.is_some());
    assert_eq!(
        (status(&s).poll_failures, condition(&s, "Ready")),
        (0, ("True", "SourceRead"))
    );
}

#[test]
fn history_limits_delete_old_jobs_the_stream_controls_only() {
    let s = stream(
        json!({"spec": {"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1,
        "jobTemplate": {"priorFromStream": 2}}}),
    );
    let mut jobs = Vec::new();
    let mut s = s;
    for (n, result) in [
        (1, "Succeeded"),
        (2, "Failed"),
        (3, "Succeeded"),
        (4, "Failed"),
        (5, "Succeeded"),
    ] {
        let (next, _) = step(&s, &mut jobs, Some(Ok(identity(n))), at(n as i64 * 100));
        finish(jobs.last_mut().unwrap(), result, 1);
        s = next;
    }
    // A job someone else labelled as the stream's is neither history nor pruned.
    let mut forged = jobs[0].clone();
    forged.metadata.name = Some("forged".into());
    forged.metadata.owner_references = None;
    jobs.push(forged);
    let (s, out) = step(&s, &mut jobs, None, at(1000));
    // Succeeded ones kept: at least priorFromStream (2), the newest.
    let kept: Vec<String> = jobs.iter().map(|j| j.name_any()).collect();
    let history = &status(&s).history;
    // The second failure went as soon as the fourth build failed; now the oldest success.
    assert_eq!(out.delete, [history[4].job.clone()]);
    assert_eq!(
        kept,
        [
            history[2].job.clone(),
            history[1].job.clone(),
            history[0].job.clone(),
            "forged".into()
        ]
    );
    assert_eq!(history.len(), 5, "history outlives the jobs");
}

#[test]
fn a_job_the_stream_does_not_control_is_lost_not_trusted() {
    let mut jobs = Vec::new();
    let (s, _) = step(&stream(json!({})), &mut jobs, Some(Ok(identity(1))), at(0));
    jobs[0].metadata.owner_references = None;
    finish(&mut jobs[0], "Succeeded", 1);
    let (s, _) = step(&s, &mut jobs, None, at(10));
    let entry = &status(&s).history[0];
    assert_eq!(entry.result, JOB_LOST);
    assert_eq!(
        entry.output, None,
        "a squatter's output never enters history"
    );
}

#[test]
fn tags_are_filled_and_made_valid() {
    let id = identity(7);
    let t = |template: &str| render_tag(template, &id, 12, at(0));
    assert_eq!(t("{version}.{n}").unwrap(), "41.7.12");
    assert_eq!(t("{date}").unwrap(), "20270115");
    assert_eq!(t("{shortDigest}").unwrap(), "070707070707");
    assert_eq!(t("v {version}+build/{n}").unwrap(), "v-41.7-build-12");
    assert_eq!(t(".{n}").unwrap(), "_12");
    assert!(t("{nope}")
        .unwrap_err()
        .contains("unknown placeholder {nope}"));
    assert!(t("{n").unwrap_err().contains("without its '}'"));
    assert!(t("").is_err());
    assert_eq!(t(&"x".repeat(300)).unwrap().len(), 128);
    let unversioned = Identity {
        version: None,
        ..id
    };
    let err = render_tag("{version}", &unversioned, 1, at(0)).unwrap_err();
    assert!(err.contains("org.opencontainers.image.version"), "{err}");
}

#[test]
fn a_source_without_a_version_for_the_template_is_an_invalid_spec_not_a_job() {
    let mut jobs = Vec::new();
    let id = Identity {
        version: None,
        ..identity(1)
    };
    let (s, out) = step(&stream(json!({})), &mut jobs, Some(Ok(id)), at(0));
    assert!(out.create.is_none());
    assert_eq!(condition(&s, "Ready"), ("False", "InvalidSpec"));
}

#[test]
fn bad_specs_and_pins_are_named() {
    let cases = [
        (
            json!({"spec": {"output": {"repository": "docker://registry.example/os:tag"}}}),
            "spec.output.repository",
        ),
        (
            json!({"spec": {"output": {"repository": "oci:/tmp/x"}}}),
            "spec.output.repository",
        ),
        (
            json!({"spec": {"source": {"image": {"ref": "oci:/srv/img"}}}}),
            "spec.source.image.ref",
        ),
        (
            json!({"spec": {"output": {"tag": "{when}"}}}),
            "spec.output.tag",
        ),
        (
            json!({"metadata": {"annotations": {SOURCE_DIGEST_ANNOTATION: "sha256:zz"}}}),
            SOURCE_DIGEST_ANNOTATION,
        ),
    ];
    for (extra, named) in cases {
        let s = stream(extra);
        let err = check(&s).unwrap_err();
        assert!(err.contains(named), "{err}");
        assert!(!poll_due(&s, at(0)));
        let (s, out) = step(&s, &mut Vec::new(), None, at(0));
        assert!(out.create.is_none() && out.requeue.is_none());
        assert_eq!(condition(&s, "Ready"), ("False", "InvalidSpec"));
    }
}

#[test]
fn a_pinned_digest_is_read_instead_of_the_tag() {
    let digest = identity(3).digest;
    let s = stream(json!({"metadata": {"annotations": {SOURCE_DIGEST_ANNOTATION: digest}}}));
    assert_eq!(
        poll_target(&s).unwrap(),
        Target::Image(format!("docker://quay.example/fcos@{digest}"))
    );
    let mut jobs = Vec::new();
    let (mut s, _) = step(&s, &mut jobs, Some(Ok(identity(3))), at(0));
    finish(&mut jobs[0], "Succeeded", 1);
    let (next, _) = step(&s, &mut jobs, None, at(1));
    s = next;
    s.annotations_mut()
        .insert(SOURCE_DIGEST_ANNOTATION.into(), identity(4).digest);
    assert!(poll_due(&s, at(2)), "a new pin is read at once");
}

fn ostree_stream() -> EncapsulationStream {
    stream(json!({"spec": {"source": {"image": null, "ostree": {
        "url": "https://ostree.example/repo", "ref": "fcos/x86_64/stable",
        "gpgKeys": {"name": "fcos-keys", "key": "fcos.gpg"}}}}}))
}

#[test]
fn an_ostree_ref_builds_its_commit_with_the_streams_keys() {
    let s = ostree_stream();
    assert_eq!(
        poll_target(&s).unwrap(),
        Target::Ostree {
            url: "https://ostree.example/repo".into(),
            rev: "fcos/x86_64/stable".into(),
            gpg_keys: s.spec.source.ostree.as_ref().unwrap().gpg_keys.clone(),
        }
    );
    let commit = "ab".repeat(32);
    let id = Identity {
        digest: commit.clone(),
        reference: format!("https://ostree.example/repo commit {commit}"),
        version: Some("41.20261204.3.0".into()),
    };
    let mut jobs = Vec::new();
    let (s, _) = step(&s, &mut jobs, Some(Ok(id)), at(0));
    let source = jobs[0].spec.source.ostree.as_ref().expect("an ostree job");
    assert_eq!(source.repo, "https://ostree.example/repo");
    assert_eq!(
        (source.commit.as_deref(), source.reference.as_deref()),
        (Some(commit.as_str()), None)
    );
    assert_eq!(source.gpg_keys.as_ref().unwrap().name, "fcos-keys");
    assert_eq!(
        jobs[0].spec.output.image,
        "docker://registry.example/os/fcos:41.20261204.3.0-1"
    );
    let ready = status(&s)
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains("fcos/x86_64/stable is abab"),
        "{}",
        ready.message
    );

    let mut pinned = ostree_stream();
    pinned
        .annotations_mut()
        .insert(SOURCE_DIGEST_ANNOTATION.into(), "cd".repeat(32));
    assert!(
        matches!(poll_target(&pinned).unwrap(), Target::Ostree { rev, .. } if rev == "cd".repeat(32))
    );
}

#[test]
fn bad_ostree_sources_are_named() {
    let cases = [
        (
            json!({"url": "file:///srv/repo", "ref": "os"}),
            "spec.source.ostree.url",
        ),
        (
            json!({"url": "https://x/repo", "ref": "--upgrade"}),
            "spec.source.ostree.ref",
        ),
        (
            json!({"url": "https://x/repo", "ref": ""}),
            "spec.source.ostree.ref",
        ),
    ];
    for (ostree, named) in cases {
        let s = stream(json!({"spec": {"source": {"image": null, "ostree": ostree}}}));
        let err = check(&s).unwrap_err();
        assert!(err.contains(named), "{err}");
    }
    let both = stream(json!({"spec": {"source": {"ostree": {"url": "https://x/r", "ref": "os"}}}}));
    assert!(check(&both).unwrap_err().contains("exactly one"));
    let mut pinned = ostree_stream();
    pinned
        .annotations_mut()
        .insert(SOURCE_DIGEST_ANNOTATION.into(), "sha256:ab".into());
    assert!(check(&pinned)
        .unwrap_err()
        .contains("not a commit checksum"));
}

fn tree_stream() -> EncapsulationStream {
    stream(json!({"spec": {
        "source": {"image": null, "rootfs": {"volume": "trees", "path": "fcos", "generationFile": "GENERATION"}},
        "jobTemplate": {"podTemplate": {"volumes": [
            {"name": "trees", "persistentVolumeClaim": {"claimName": "trees", "readOnly": true}}]}},
    }}))
}

#[test]
fn a_tree_is_probed_by_an_unprivileged_reader_pod_and_built_from_its_volume() {
    use super::probe::{pod_name, probe_pod, reported};
    let s = tree_stream();
    let Target::Rootfs(tree) = poll_target(&s).unwrap() else {
        panic!("a tree target")
    };
    let template = template_spec(&s).pod_template.unwrap();
    let volume = &template.volumes.unwrap()[0];
    let settings = crate::operator::Settings::for_tests(&[]);
    let mut pod = probe_pod(&s, &tree, volume, "strata-worker", &settings);
    let spec = pod.spec.clone().unwrap();
    let c = &spec.containers[0];
    let command = c.command.clone().unwrap();
    assert_eq!(command[..2], ["strata", "probe"]);
    assert!(
        command.contains(&"--volume=/sources/trees".to_string()),
        "{command:?}"
    );
    assert!(
        command.contains(&"--file=fcos/GENERATION".to_string()),
        "{command:?}"
    );
    assert_eq!(c.volume_mounts.as_ref().unwrap()[0].read_only, Some(true));
    let security = c.security_context.clone().unwrap();
    assert_eq!(
        security.capabilities.unwrap().add,
        Some(vec!["DAC_OVERRIDE".to_string()])
    );
    assert_eq!(
        spec.automount_service_account_token,
        Some(false),
        "a probe needs no API access"
    );
    assert_eq!(pod.metadata.name.as_deref(), Some(pod_name(&s).as_str()));
    assert_eq!(pod.labels()[STREAM_UID_LABEL], UID);

    assert!(reported(&s, &pod).is_none(), "not finished yet");
    let finish = |pod: &mut k8s_openapi::api::core::v1::Pod, code: i32, message: &str| {
        pod.status = serde_json::from_value(json!({"containerStatuses": [{
            "name": "probe", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "message": message}}}]}))
        .unwrap();
    };
    let digest = format!("sha256:{}", "1".repeat(64));
    finish(
        &mut pod,
        0,
        &format!(r#"{{"digest": "{digest}", "version": "41.1"}}"#),
    );
    let id = reported(&s, &pod).unwrap().unwrap();
    assert_eq!(
        (id.digest.as_str(), id.version.as_deref()),
        (digest.as_str(), Some("41.1"))
    );
    assert!(id.reference.contains("fcos/GENERATION on volume trees"));
    let mut jobs = Vec::new();
    step(&s, &mut jobs, reported(&s, &pod), at(0));
    let source = jobs[0].spec.source.rootfs.clone().expect("a rootfs job");
    assert_eq!(
        (source.volume.as_str(), source.path.as_str()),
        ("trees", "fcos")
    );
    finish(&mut pod, 1, "fcos/GENERATION: No such file or directory");
    let err = reported(&s, &pod).unwrap().unwrap_err();
    assert!(err.contains("No such file"), "{err}");
    finish(&mut pod, 0, "garbage");
    assert!(reported(&s, &pod)
        .unwrap()
        .unwrap_err()
        .contains("reported no generation"));
}

#[test]
fn bad_trees_are_named() {
    let with = |rootfs: serde_json::Value| {
        let mut s = tree_stream();
        s.spec.source.rootfs = Some(serde_json::from_value(rootfs).unwrap());
        check(&s).unwrap_err()
    };
    let err = with(json!({"volume": "other", "path": "fcos", "generationFile": "G"}));
    assert!(err.contains("spec.source.rootfs.volume"), "{err}");
    let err = with(json!({"volume": "trees", "path": "../etc", "generationFile": "G"}));
    assert!(err.contains("spec.source.rootfs.path"), "{err}");
    let err = with(json!({"volume": "trees", "path": "fcos", "generationFile": "/etc/shadow"}));
    assert!(err.contains("spec.source.rootfs.generationFile"), "{err}");
    let mut pinned = tree_stream();
    pinned
        .annotations_mut()
        .insert(SOURCE_DIGEST_ANNOTATION.into(), identity(1).digest);
    assert!(check(&pinned).unwrap_err().contains("cannot be pinned"));
}

//! The stream controller: the I/O around `decide`. It reads each stream's jobs and,
//! when a poll is due, its source; creates the job `decide` asks for, prunes old jobs
//! with their report ConfigMaps, and writes status with server-side apply.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use super::crd::{EncapsulationStream, StreamRootfs};
use super::decide::{self, NewBuild, Observed, Target, STREAM_UID_LABEL};
use super::{poll, probe};
use crate::image::remote::RegistryOptions;
use crate::operator::controller::{apply_status, kube_err, publish_changes, ControllerError};
use crate::operator::crd::{Condition, ConfigMapKey, EncapsulationJob};
use crate::operator::report;
use crate::operator::vocabulary::{StreamReason, Truth};
use crate::operator::Settings;

/// How long one read of a source may take before the poll counts as failed.
const POLL_TIMEOUT: Duration = Duration::from_secs(120);

struct Context {
    client: Client,
    settings: Settings,
    recorder: Recorder,
}

/// One controller over the streams of `namespace` (all when `None`) and their jobs.
pub(crate) async fn watch(
    client: Client,
    namespace: Option<&str>,
    settings: Settings,
    recorder: Recorder,
) {
    let (streams, jobs, pods): (Api<EncapsulationStream>, Api<EncapsulationJob>, Api<Pod>) =
        match namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
    let ctx = Arc::new(Context {
        client,
        settings,
        recorder,
    });
    Controller::new(streams, watcher::Config::default())
        .owns(jobs, watcher::Config::default().labels(STREAM_UID_LABEL))
        // Probe pods: a finished probe is read at once.
        .owns(pods, watcher::Config::default().labels(STREAM_UID_LABEL))
        .shutdown_on_signal()
        .run(reconcile_stream, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "stream reconcile");
            }
        })
        .await;
}

fn error_policy(
    stream: Arc<EncapsulationStream>,
    error: &ControllerError,
    _: Arc<Context>,
) -> Requeue {
    tracing::warn!(
        namespace = %stream.namespace().unwrap_or_default(),
        stream = %stream.name_any(),
        error = %crate::error_chain(error),
        "stream reconcile failed; retrying"
    );
    Requeue::requeue(Duration::from_secs(5))
}

async fn reconcile_stream(
    stream: Arc<EncapsulationStream>,
    ctx: Arc<Context>,
) -> Result<Requeue, ControllerError> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "reconcile",
        namespace = %stream.namespace().unwrap_or_default(),
        stream = %stream.name_any()
    );
    reconcile_one(stream, ctx).instrument(span).await
}

async fn reconcile_one(
    stream: Arc<EncapsulationStream>,
    ctx: Arc<Context>,
) -> Result<Requeue, ControllerError> {
    let ns = stream.namespace().unwrap_or_default();
    let name = stream.name_any();
    // The watch cache may lag behind this controller's last status write, and a
    // decision from a stale status could build one source twice.
    let streams: Api<EncapsulationStream> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(stream) = streams
        .get_opt(&name)
        .await
        .map_err(kube_err(format!("reading stream {ns}/{name}")))?
        .filter(|fresh| fresh.uid() == stream.uid())
    else {
        return Ok(Requeue::await_change());
    };
    let jobs_api: Api<EncapsulationJob> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!("{STREAM_UID_LABEL}={}", stream.uid().unwrap_or_default());
    let jobs = jobs_api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(kube_err(format!("listing the jobs of stream {ns}/{name}")))?
        .items;
    let now = jiff::Timestamp::now();
    let poll = match decide::poll_due(&stream, now) {
        true => read_source(&ctx, &stream).await,
        false => None,
    };
    let mut outcome = decide::decide(&Observed {
        stream: &stream,
        jobs: &jobs,
        poll,
        now,
    });
    if let Some(build) = &outcome.create {
        match create_job(&jobs_api, &stream, build).await? {
            Ok(()) => decide::record(&mut outcome.status, build, now),
            Err(why) => decide::refused(&mut outcome.status, &build.job.name_any(), &why, now),
        }
    }
    let old = stream.status.clone().unwrap_or_default();
    if old != outcome.status {
        apply_status(&ctx.client, &stream, &outcome.status).await?;
        let reference = stream.object_ref(&());
        let (old, new) = (&old.conditions, &outcome.status.conditions);
        publish_changes(&ctx.recorder, &reference, old, new, warning).await;
    }
    for job in jobs
        .iter()
        .filter(|j| outcome.delete.contains(&j.name_any()))
    {
        delete_job(&ctx.client, job).await?;
    }
    Ok(match outcome.requeue {
        Some(after) => Requeue::requeue(after),
        None => Requeue::await_change(),
    })
}

fn warning(c: &Condition) -> bool {
    let bad = [
        StreamReason::SourceUnavailable,
        StreamReason::InvalidSpec,
        StreamReason::JobRefused,
    ];
    Truth::False.is(&c.status) && bad.iter().any(|r| r.as_str() == c.reason)
}

/// Reads the source: `None` while a probe pod reads a tree's generation file.
async fn read_source(
    ctx: &Context,
    stream: &EncapsulationStream,
) -> Option<Result<decide::Identity, String>> {
    match decide::poll_target(stream) {
        Err(problem) => Some(Err(problem)),
        Ok(Target::Rootfs(tree)) => probe(ctx, stream, &tree).await,
        Ok(target) => Some(read_remote(ctx, stream, target).await),
    }
}

/// Reads a registry or ostree source off the async threads: skopeo's proxy and
/// libostree block.
async fn read_remote(
    ctx: &Context,
    stream: &EncapsulationStream,
    target: Target,
) -> Result<decide::Identity, String> {
    let read: Box<dyn FnOnce() -> Result<decide::Identity, String> + Send> = match target {
        Target::Image(reference) => {
            let opts = RegistryOptions {
                insecure_registries: ctx.settings.insecure_registries.clone(),
                ..Default::default()
            };
            Box::new(move || poll::identity(&reference, &opts))
        }
        Target::Ostree { url, rev, gpg_keys } => {
            let cache = poll_cache(stream)?;
            let keys = match gpg_keys {
                Some(k) => Some(write_keys(ctx, stream, &k, &cache).await?),
                None => None,
            };
            let repo = cache.join("repo");
            Box::new(move || poll::ostree_identity(&url, &rev, keys.as_deref(), &repo))
        }
        Target::Rootfs(_) => unreachable!("a tree is read by a probe pod"),
    };
    match tokio::time::timeout(POLL_TIMEOUT, tokio::task::spawn_blocking(read)).await {
        Ok(Ok(found)) => found,
        Ok(Err(panicked)) => Err(format!("reading the source failed: {panicked}")),
        Err(_) => Err(format!(
            "reading the source took more than {}s",
            POLL_TIMEOUT.as_secs()
        )),
    }
}

/// Reads a tree's generation file through the stream's probe pod: starts one, waits
/// for it (`None`), then takes what it reported and deletes it. The pod mounts the job
/// template's volume, so the job policy must admit the template first.
async fn probe(
    ctx: &Context,
    stream: &EncapsulationStream,
    tree: &StreamRootfs,
) -> Option<Result<decide::Identity, String>> {
    let ns = stream.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let name = probe::pod_name(stream);
    let existing = match pods.get_opt(&name).await {
        Ok(found) => found,
        Err(e) => return Some(Err(format!("reading the probe pod {ns}/{name}: {e}"))),
    };
    let Some(pod) = existing else {
        return start_probe(ctx, stream, tree, &pods).await.err().map(Err);
    };
    let ours = pod
        .owner_references()
        .iter()
        .any(|r| Some(&r.uid) == stream.uid().as_ref());
    if !ours {
        return Some(Err(format!(
            "a pod named {name} exists that this stream did not make"
        )));
    }
    let age = pod
        .creation_timestamp()
        .map(|t| jiff::Timestamp::now().duration_since(t.0).as_secs())
        .unwrap_or(0);
    let found = match probe::reported(stream, &pod) {
        Some(found) => found,
        None if age < POLL_TIMEOUT.as_secs() as i64 => return None,
        None => Err(format!(
            "the probe pod {name} did not finish within {}s",
            POLL_TIMEOUT.as_secs()
        )),
    };
    if let Err(e) = pods.delete(&name, &DeleteParams::background()).await {
        tracing::warn!(error = %e, pod = %name, "cannot delete the probe pod");
    }
    Some(found)
}

async fn start_probe(
    ctx: &Context,
    stream: &EncapsulationStream,
    tree: &StreamRootfs,
    pods: &Api<Pod>,
) -> Result<(), String> {
    let spec = decide::template_spec(stream);
    crate::operator::validate::validate(&spec, &ctx.settings.policy)
        .map_err(|e| format!("spec.jobTemplate: {}", e.message))?;
    let template = spec.pod_template.unwrap_or_default();
    let volume = template
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name == tree.volume)
        .ok_or_else(|| {
            format!(
                "no volume {:?} in spec.jobTemplate.podTemplate",
                tree.volume
            )
        })?;
    let account = template
        .service_account_name
        .unwrap_or_else(|| ctx.settings.service_account.clone());
    let pod = probe::probe_pod(stream, tree, &volume, &account, &ctx.settings);
    match pods.create(&PostParams::default(), &pod).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(format!("creating the probe pod: {e}")),
    }
}

/// The stream's own directory for polling an ostree repository: commit objects only,
/// a few KiB each.
fn poll_cache(stream: &EncapsulationStream) -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir()
        .join("strata-streams")
        .join(stream.uid().unwrap_or_default());
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot make the poll cache {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Writes the stream's GPG keys from their ConfigMap to a file libostree reads.
async fn write_keys(
    ctx: &Context,
    stream: &EncapsulationStream,
    keys: &ConfigMapKey,
    cache: &std::path::Path,
) -> Result<std::path::PathBuf, String> {
    let ns = stream.namespace().unwrap_or_default();
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let map = maps
        .get_opt(&keys.name)
        .await
        .map_err(|e| format!("reading ConfigMap {ns}/{}: {e}", keys.name))?
        .ok_or_else(|| {
            format!(
                "spec.source.ostree.gpgKeys: there is no ConfigMap {ns}/{}",
                keys.name
            )
        })?;
    let text = map
        .data
        .as_ref()
        .and_then(|d| d.get(&keys.key))
        .map(|t| t.as_bytes().to_vec());
    let binary = map
        .binary_data
        .as_ref()
        .and_then(|d| d.get(&keys.key))
        .map(|b| b.0.clone());
    let bytes = text.or(binary).ok_or_else(|| {
        format!(
            "spec.source.ostree.gpgKeys: ConfigMap {ns}/{} has no key {}",
            keys.name, keys.key
        )
    })?;
    let path = cache.join("keys.gpg");
    crate::output::write_atomic(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Creates the build's job. One that exists already is the same build only if this
/// stream controls it and its spec is the one wanted (a controller that stopped
/// before recording it); any other is refused, never adopted. The inner error is
/// the API server's refusal, which retrying cannot mend.
async fn create_job(
    api: &Api<EncapsulationJob>,
    stream: &EncapsulationStream,
    build: &NewBuild,
) -> Result<Result<(), String>, ControllerError> {
    let name = build.job.name_any();
    match api.create(&PostParams::default(), &build.job).await {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api
                .get(&name)
                .await
                .map_err(kube_err(format!("reading job {name}")))?;
            let ours = decide::controlled_by(&existing, stream) && existing.spec == build.job.spec;
            Ok(match ours {
                true => Ok(()),
                false => Err(format!(
                    "a job named {name} exists that this stream did not make"
                )),
            })
        }
        Err(e) => {
            let e = kube_err(format!("creating job {name}"))(e);
            match e.is_permanent() {
                true => Ok(Err(crate::error_chain(&e))),
                false => Err(e),
            }
        }
    }
}

/// Deletes a pruned job and its report ConfigMap: a cluster's garbage collector would
/// delete the ConfigMap too, but only where one runs. The ConfigMap goes only if the
/// job owns it, and only the one read (a UID precondition).
async fn delete_job(client: &Client, job: &EncapsulationJob) -> Result<(), ControllerError> {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let jobs: Api<EncapsulationJob> = Api::namespaced(client.clone(), &ns);
    let uid = job.uid().unwrap_or_default();
    let only_this = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    ignore_gone(jobs.delete(&name, &only_this).await.map(|_| ()))
        .map_err(kube_err(format!("deleting job {ns}/{name}")))?;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let map_name = report::report_name(&name);
    let map = maps
        .get_opt(&map_name)
        .await
        .map_err(kube_err(format!("reading ConfigMap {ns}/{map_name}")))?;
    let Some(map) = map.filter(|m| m.owner_references().iter().any(|r| r.uid == uid)) else {
        return Ok(());
    };
    let only_this = DeleteParams {
        preconditions: Some(Preconditions {
            uid: map.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    ignore_gone(maps.delete(&map_name, &only_this).await.map(|_| ()))
        .map_err(kube_err(format!("deleting ConfigMap {ns}/{map_name}")))?;
    tracing::info!(job = %name, "pruned a job past the stream's history limits");
    Ok(())
}

/// A 404 or 409 (gone, or replaced by a namesake) means there is nothing of ours to
/// delete.
fn ignore_gone(result: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        other => other,
    }
}

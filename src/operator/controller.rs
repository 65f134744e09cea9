//! `strata controller`: the I/O around `reconcile::decide`. It watches jobs and their
//! pods, gathers what `decide` needs (pods and reports straight from the API server,
//! stream peers from the watch cache), carries out the actions, publishes an Event per
//! transition and writes status with server-side apply.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use super::crd::{Condition, EncapsulationJob, EncapsulationJobStatus};
use super::health::Health;
use super::lease::{self, LeaseSettings};
use super::reconcile::{self, Action, Observed, Reports};
use super::report::{self, ReportError, Step, Termination};
use super::status::{condition, finished};
use super::vocabulary::{ConditionType, Reason, Truth};
use super::Settings;

/// The field manager of the controller's status writes.
pub const MANAGER: &str = "strata-controller";

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How workers are run.
    pub settings: Settings,
    /// Watch these namespaces only; all when empty.
    pub namespaces: Vec<String>,
    /// The leader election.
    pub lease: LeaseSettings,
}

/// The controller's errors: a reconcile's (retried), or why the controller stopped
/// before a shutdown signal.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// An API request of a reconcile failed.
    #[error("{what}: {source}")]
    Kube {
        /// What the request was for.
        what: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// Leadership ended; the process exits and comes back as a standby.
    #[error(transparent)]
    LeaseLost(#[from] lease::LeaseLost),
    /// The task renewing the lease died.
    #[error("the lease task ended")]
    LeaseTask(#[from] tokio::task::JoinError),
}

impl ControllerError {
    /// The API server refused the request for what it is (invalid, forbidden, a
    /// missing reference), not for a passing reason: retrying it cannot succeed.
    pub(crate) fn is_permanent(&self) -> bool {
        match self {
            ControllerError::Kube {
                source: kube::Error::Api(e),
                ..
            } => matches!(e.code, 400 | 403 | 404 | 422),
            _ => false,
        }
    }
}

pub(crate) fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ControllerError {
    let what = what.into();
    move |source| ControllerError::Kube { what, source }
}

struct Context {
    client: Client,
    settings: Settings,
    jobs: Store<EncapsulationJob>,
    health: Arc<Health>,
    recorder: Recorder,
}

/// Runs until a shutdown signal, or until leadership is lost.
pub async fn run(
    client: Client,
    opts: Options,
    health: Arc<Health>,
) -> Result<(), ControllerError> {
    // A standby replica is ready too: it is healthy and reaches the API server, and
    // readiness that waited for leadership would stall every rollout.
    let ready = || {
        health
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed)
    };
    lease::acquire(&client, &opts.lease, ready).await;
    let lost = tokio::spawn(lease::hold(client.clone(), opts.lease.clone()));
    let scopes: Vec<Option<&str>> = match opts.namespaces.as_slice() {
        [] => vec![None],
        some => some.iter().map(|n| Some(n.as_str())).collect(),
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: Some(opts.lease.identity.clone()),
        },
    );
    let jobs = scopes.iter().map(|ns| {
        watch(
            client.clone(),
            *ns,
            opts.settings.clone(),
            health.clone(),
            recorder.clone(),
        )
    });
    let streams = scopes.iter().map(|ns| {
        super::stream::controller::watch(
            client.clone(),
            *ns,
            opts.settings.clone(),
            recorder.clone(),
        )
    });
    let run = futures::future::join(
        futures::future::join_all(jobs),
        futures::future::join_all(streams),
    );
    health
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::select! {
        _ = run => Ok(()),
        why = lost => Err(why.map_or_else(ControllerError::from, ControllerError::from)),
    }
}

/// One controller over the jobs of `namespace` (all when `None`) and their pods.
async fn watch(
    client: Client,
    namespace: Option<&str>,
    settings: Settings,
    health: Arc<Health>,
    recorder: Recorder,
) {
    let (jobs, pods): (Api<EncapsulationJob>, Api<Pod>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let controller = Controller::new(jobs.clone(), watcher::Config::default());
    let store = controller.store();
    let ctx = Arc::new(Context {
        client,
        settings,
        jobs: store.clone(),
        health,
        recorder,
    });
    let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=strata");
    controller
        .owns(pods, managed)
        .watches(jobs, watcher::Config::default(), move |changed| {
            waiting_peers(&store, &changed)
        })
        .shutdown_on_signal()
        .run(reconcile_job, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile");
            }
        })
        .await;
}

/// When a job finishes, the unfinished jobs of its stream may now be free to start.
/// Only then: a stream of n queued jobs would otherwise reconcile every peer on each of
/// every job's status writes, O(n²). A blocker that is deleted unfinished frees its
/// peers at their next re-check instead ([`reconcile`]'s `WAIT_RECHECK`), since the
/// watch cannot tell a deletion from an update here.
fn waiting_peers(
    store: &Store<EncapsulationJob>,
    changed: &EncapsulationJob,
) -> Vec<ObjectRef<EncapsulationJob>> {
    if !changed.status.as_ref().is_some_and(finished) {
        return Vec::new();
    }
    store
        .state()
        .into_iter()
        .filter(|j| j.namespace() == changed.namespace() && j.spec.stream == changed.spec.stream)
        .filter(|j| j.uid() != changed.uid())
        .filter(|j| !j.status.as_ref().is_some_and(finished))
        .map(|j| ObjectRef::from_obj(&*j))
        .collect()
}

fn error_policy(job: Arc<EncapsulationJob>, error: &ControllerError, ctx: Arc<Context>) -> Requeue {
    tracing::warn!(
        namespace = %job.namespace().unwrap_or_default(),
        job = %job.name_any(),
        error = %crate::error_chain(error),
        "reconcile failed; retrying"
    );
    ctx.health.metrics.reconcile_errors.inc();
    Requeue::requeue(Duration::from_secs(5))
}

/// Reconciles one job, its namespace and name on every line logged meanwhile.
async fn reconcile_job(
    job: Arc<EncapsulationJob>,
    ctx: Arc<Context>,
) -> Result<Requeue, ControllerError> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "reconcile",
        namespace = %job.namespace().unwrap_or_default(),
        job = %job.name_any()
    );
    reconcile_one(job, ctx).instrument(span).await
}

async fn reconcile_one(
    job: Arc<EncapsulationJob>,
    ctx: Arc<Context>,
) -> Result<Requeue, ControllerError> {
    let started = Instant::now();
    let metrics = &ctx.health.metrics;
    metrics.reconciles.inc();
    if job.status.as_ref().is_some_and(finished) {
        return Ok(Requeue::await_change());
    }
    let ns = job.namespace().unwrap_or_default();
    // The watch cache may lag behind this controller's own last status write; deciding
    // from a stale status would forget what that write recorded.
    let jobs_api: Api<EncapsulationJob> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(job) = jobs_api
        .get_opt(&job.name_any())
        .await
        .map_err(kube_err(format!("reading job {ns}/{}", job.name_any())))?
        .filter(|fresh| fresh.uid() == job.uid())
    else {
        return Ok(Requeue::await_change()); // deleted meanwhile
    };
    if job.status.as_ref().is_some_and(finished) {
        return Ok(Requeue::await_change());
    }
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!(
        "{}={}",
        report::JOB_UID_LABEL,
        job.uid().unwrap_or_default()
    );
    let pods = pods_api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(kube_err(format!(
            "listing the pods of {ns}/{}",
            job.name_any()
        )))?
        .items;
    let stream: Vec<EncapsulationJob> = ctx
        .jobs
        .state()
        .iter()
        .filter(|j| j.namespace() == job.namespace() && j.spec.stream == job.spec.stream)
        .map(|j| (**j).clone())
        .collect();
    let reports = fetch_reports(&ctx.client, &job, &pods).await?;
    let observed = Observed {
        job: &job,
        pods: &pods,
        stream: &stream,
        reports: &reports,
        now: jiff::Timestamp::now(),
        settings: &ctx.settings,
    };
    let outcome = reconcile::decide(&observed);
    // Status first: an attempt is recorded (and its deadline runs) before its pod
    // exists, and the pod counts only once its UID is recorded after the create.
    let old = job.status.clone().unwrap_or_default();
    if old != outcome.status {
        write_status(&ctx.client, &job, &outcome.status).await?;
        publish_transitions(&ctx, &job, &old, &outcome.status).await;
        record_metrics(&ctx, &old, &outcome);
    }
    if let Some(refused) = carry_out(&ctx, &pods_api, &job, &outcome).await? {
        // What the job asked for cannot be created: retrying the same pod would never
        // end, so the attempt fails.
        let mut written = job.clone();
        written.status = Some(outcome.status.clone());
        let failed = reconcile::create_failed(
            &Observed {
                job: &written,
                ..observed
            },
            refused,
        );
        write_status(&ctx.client, &job, &failed.status).await?;
        publish_transitions(&ctx, &job, &outcome.status, &failed.status).await;
        record_metrics(&ctx, &outcome.status, &failed);
        return Ok(Requeue::requeue(Duration::from_secs(1)));
    }
    metrics.reconcile_duration.observe(started.elapsed());
    Ok(match outcome.requeue {
        Some(after) => Requeue::requeue(after),
        None => Requeue::await_change(),
    })
}

/// Carries out the actions, recording each created pod's UID in status. Returns why
/// the API server refused a pod for good, if it did.
async fn carry_out(
    ctx: &Context,
    pods: &Api<Pod>,
    job: &EncapsulationJob,
    outcome: &reconcile::Outcome,
) -> Result<Option<String>, ControllerError> {
    if outcome
        .actions
        .iter()
        .any(|a| matches!(a, Action::Create(_)))
    {
        create_report_map(&ctx.client, job).await?;
    }
    for action in &outcome.actions {
        match act(pods, action, ctx).await {
            Ok(Some(uid)) => {
                let mut status = outcome.status.clone();
                status.pod_uid = Some(uid);
                write_status(&ctx.client, job, &status).await?;
            }
            Ok(None) => {}
            Err(refused) if refused.is_permanent() => {
                return Ok(Some(crate::error_chain(&refused)))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Creates the job's report ConfigMap (once), so that its workers need no `create`.
/// One that exists already is left as it is: the controller only ever trusts a report
/// its own pod's termination message vouches for.
async fn create_report_map(client: &Client, job: &EncapsulationJob) -> Result<(), ControllerError> {
    let ns = job.namespace().unwrap_or_default();
    let cm = report::report_map(&ns, &job.name_any(), &job.uid().unwrap_or_default());
    let api = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    match api.create(&PostParams::default(), &cm).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(kube_err(format!(
            "creating the report ConfigMap {ns}/{}",
            cm.metadata.name.unwrap_or_default()
        ))(e)),
    }
}

/// Reads the reports the current attempt's pod vouched for.
async fn fetch_reports(
    client: &Client,
    job: &EncapsulationJob,
    pods: &[Pod],
) -> Result<Reports, ControllerError> {
    let mut reports = Reports::default();
    let wanted = reconcile::reports_to_fetch(job, pods);
    if wanted.is_empty() {
        return Ok(reports);
    }
    let ns = job.namespace().unwrap_or_default();
    let name = report::report_name(&job.name_any());
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get_opt(&name)
        .await
        .map_err(kube_err(format!(
            "reading the report ConfigMap {ns}/{name}"
        )))?;
    for (step, termination) in wanted {
        let read = termination.and_then(|t| report_bytes(cm.as_ref(), &name, step, &t));
        match step {
            Step::Plan => {
                reports.plan = Some(read.and_then(|(b, d)| report::decode(&name, &b, &d)));
            }
            Step::Build => {
                reports.build = Some(read.and_then(|(b, d)| report::decode(&name, &b, &d)));
            }
        }
    }
    Ok(reports)
}

/// A step's report bytes and the digest its termination message vouched for.
fn report_bytes(
    cm: Option<&ConfigMap>,
    name: &str,
    step: Step,
    t: &Termination,
) -> Result<(Vec<u8>, String), ReportError> {
    let digest = t
        .report_sha256
        .clone()
        .ok_or(ReportError::NoDigest { step: step.name() })?;
    let cm = cm.ok_or_else(|| ReportError::Missing(name.into()))?;
    let bytes = cm
        .binary_data
        .as_ref()
        .and_then(|d| d.get(step.key()))
        .ok_or_else(|| ReportError::MissingKey {
            name: name.into(),
            key: step.key(),
        })?;
    Ok((bytes.0.clone(), digest))
}

/// Carries out one action; the UID of a pod it created. A pod that already exists is
/// not adopted (the next reconcile replaces it), and deleting one that is gone means
/// an earlier reconcile did it.
async fn act(
    pods: &Api<Pod>,
    action: &Action,
    ctx: &Context,
) -> Result<Option<String>, ControllerError> {
    match action {
        Action::Create(pod) => match pods.create(&PostParams::default(), pod).await {
            Ok(created) => {
                ctx.health.metrics.pods_created.inc();
                Ok(created.metadata.uid)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(e) => Err(kube_err(format!("creating pod {}", pod.name_any()))(e)),
        },
        Action::Delete(name) => match pods.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(kube_err(format!("deleting pod {name}"))(e)),
        },
    }
}

async fn write_status(
    client: &Client,
    job: &EncapsulationJob,
    status: &EncapsulationJobStatus,
) -> Result<(), ControllerError> {
    apply_status(client, job, status).await
}

/// Writes `obj`'s status with server-side apply, as the controller's field manager.
pub(crate) async fn apply_status<K>(
    client: &Client,
    obj: &K,
    status: &impl serde::Serialize,
) -> Result<(), ControllerError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(kube_err(format!(
        "writing the status of {} {ns}/{}",
        K::kind(&()),
        obj.name_any()
    )))?;
    Ok(())
}

/// One Event per condition whose status or reason changed.
async fn publish_transitions(
    ctx: &Context,
    job: &EncapsulationJob,
    old: &EncapsulationJobStatus,
    new: &EncapsulationJobStatus,
) {
    let reference = job.object_ref(&());
    let warning =
        |c: &Condition| Truth::False.is(&c.status) || c.reason == Reason::BackOff.as_str();
    publish_changes(
        &ctx.recorder,
        &reference,
        &old.conditions,
        &new.conditions,
        warning,
    )
    .await;
}

/// One Event on `reference` per condition whose status or reason changed, a warning
/// where `warning` says so.
pub(crate) async fn publish_changes(
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    old: &[Condition],
    new: &[Condition],
    warning: impl Fn(&Condition) -> bool,
) {
    for c in new {
        let before = old.iter().find(|o| o.type_ == c.type_);
        if before.is_some_and(|b| b.status == c.status && b.reason == c.reason) {
            continue;
        }
        let event = Event {
            type_: if warning(c) {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: c.reason.clone(),
            note: Some(c.message.chars().take(1000).collect()),
            action: c.type_.clone(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, reference).await {
            let name = reference.name.as_deref().unwrap_or_default();
            tracing::warn!(error = %e, object = %name, "cannot publish an event");
        }
    }
}

fn record_metrics(ctx: &Context, old: &EncapsulationJobStatus, outcome: &reconcile::Outcome) {
    let metrics = &ctx.health.metrics;
    let now = jiff::Timestamp::now();
    for exited in &outcome.reported {
        let latency = now.duration_since(*exited);
        metrics
            .report_latency
            .observe(latency.try_into().unwrap_or_default());
    }
    let new = &outcome.status;
    if finished(new) && !finished(old) {
        let reason = condition(new, ConditionType::Succeeded).map_or("", |c| c.reason.as_str());
        match Reason::parse(reason) {
            Some(reason) => metrics.job_finished(reason),
            None => tracing::warn!(reason, "a job ended with a reason metrics do not know"),
        }
        let parse =
            |t: &Option<String>| t.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok());
        if let (Some(start), Some(end)) = (parse(&new.start_time), parse(&new.completion_time)) {
            let took = end.duration_since(start);
            metrics
                .job_duration
                .observe(took.try_into().unwrap_or_default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector::store::Writer;
    use serde_json::json;

    fn job(name: &str, succeeded: Option<&str>) -> EncapsulationJob {
        let conditions: Vec<serde_json::Value> = succeeded
            .map(|status| {
                json!({"type": "Succeeded", "status": status, "reason": "R", "message": "",
                       "lastTransitionTime": "2026-01-01T00:00:00Z"})
            })
            .into_iter()
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "strata.dev/v1alpha1", "kind": "EncapsulationJob",
            "metadata": {"name": name, "namespace": "ns", "uid": name},
            "spec": {"source": {"image": {"ref": "docker://r/s:1"}}, "stream": "s",
                     "output": {"image": "docker://r/o:1"}},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn only_a_finished_job_wakes_its_waiting_peers() {
        let mut writer = Writer::<EncapsulationJob>::default();
        let (running, done) = (job("a", Some("Unknown")), job("a", Some("True")));
        for j in [running.clone(), job("b", None), job("c", Some("False"))] {
            writer.apply_watcher_event(&watcher::Event::Apply(j));
        }
        let store = writer.as_reader();
        assert!(waiting_peers(&store, &running).is_empty());
        let woken: Vec<String> = waiting_peers(&store, &done)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(woken, ["b"], "the unfinished peer, not the finished one");
    }
}

//! The controller's decisions, as a pure function of what it observed: the job, its
//! pods, the other jobs of its stream, the verified worker reports and the time. It
//! returns the status to write and the pods to create or delete; `controller` does the
//! I/O. Everything it needs to resume after a restart is in the API server: the pods
//! (deterministic names, one per attempt) and the status.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;

use crate::image::ImageRef;
use crate::report::{BuildReport, PlanReport};

use super::crd::{EncapsulationJob, EncapsulationJobStatus, Failure, Mode, ReportRef};
use super::pod::{worker_pod, Attempt};
use super::report::{self, ReportError, Step, Termination};
use super::status::{self, condition, finished, set_condition, succeeded};
use super::validate::{validate, worker_namespace};
use super::vocabulary::{ConditionType, Reason, Truth};
use super::Settings;

/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// A waiting or running job is looked at again this often even without events.
const RESYNC: Duration = Duration::from_secs(300);
/// How often a job waiting for its stream looks again: a peer that finishes wakes it
/// at once, but one deleted unfinished does not.
const WAIT_RECHECK: Duration = Duration::from_secs(30);
/// How soon to look again after deleting an unconfirmed pod.
const UNCONFIRMED_RECHECK: Duration = Duration::from_secs(2);

/// What the controller saw, gathered before deciding.
pub struct Observed<'a> {
    /// The job reconciled.
    pub job: &'a EncapsulationJob,
    /// The job's pods, of any attempt, read from the API server (not a cache).
    pub pods: &'a [Pod],
    /// The jobs of the job's namespace and stream, the job included.
    pub stream: &'a [EncapsulationJob],
    /// The current attempt's reports whose pods vouched for them, fetched by step.
    pub reports: &'a Reports,
    /// The time of the observation, which deadlines and back-offs are measured from.
    pub now: jiff::Timestamp,
    /// How the installation runs workers.
    pub settings: &'a Settings,
}

/// Reports of the current attempt, each as read and verified (or why not).
#[derive(Debug, Default)]
pub struct Reports {
    /// The plan step's, once it has exited.
    pub plan: Option<Result<PlanReport, ReportError>>,
    /// The build step's, once it has exited.
    pub build: Option<Result<BuildReport, ReportError>>,
}

/// Something to do in the cluster.
#[derive(Debug, Clone)]
pub enum Action {
    /// Create this pod; "already exists" means an earlier reconcile did.
    Create(Box<Pod>),
    /// Delete the named pod of the job.
    Delete(String),
}

/// The decision.
#[derive(Debug)]
pub struct Outcome {
    /// The job's status as it should now be.
    pub status: EncapsulationJobStatus,
    /// What to do in the cluster, in order.
    pub actions: Vec<Action>,
    /// Look again after this long, events or not.
    pub requeue: Option<Duration>,
    /// When the workers whose reports were folded in just now exited.
    pub reported: Vec<jiff::Timestamp>,
}

/// The attempt in progress, as status records it: status is written before an
/// attempt's pod is created, and pod labels are anyone's to set.
pub fn current_attempt(job: &EncapsulationJob) -> u32 {
    job.status.as_ref().map_or(0, |s| s.attempts)
}

fn attempt_of(pod: &Pod) -> Option<u32> {
    pod.labels().get(report::ATTEMPT_LABEL)?.parse().ok()
}

/// The current attempt's pod, as far as the controller can trust it.
enum PodOf<'a> {
    /// The pod the controller created: its UID is the one status recorded.
    Ours(&'a Pod),
    /// No creation was confirmed for the attempt (a restart between the create and
    /// the status write, or a create still to come); these pods carry its labels.
    Unconfirmed(Vec<&'a Pod>),
    /// The confirmed pod is gone.
    Gone,
}

fn pod_of<'a>(job: &EncapsulationJob, pods: &'a [Pod], attempt: u32) -> PodOf<'a> {
    let labelled = || pods.iter().filter(move |p| attempt_of(p) == Some(attempt));
    match job.status.as_ref().and_then(|s| s.pod_uid.as_deref()) {
        None => PodOf::Unconfirmed(labelled().collect()),
        Some(uid) => pods
            .iter()
            .find(|p| p.metadata.uid.as_deref() == Some(uid))
            .map_or(PodOf::Gone, PodOf::Ours),
    }
}

/// The termination messages of the current attempt's finished, successful steps:
/// the reports the controller must fetch before deciding.
pub fn reports_to_fetch(
    job: &EncapsulationJob,
    pods: &[Pod],
) -> Vec<(Step, Result<Termination, ReportError>)> {
    let attempt = current_attempt(job);
    let PodOf::Ours(pod) = pod_of(job, pods, attempt) else {
        return Vec::new();
    };
    let uid = job.uid().unwrap_or_default();
    [Step::Plan, Step::Build]
        .into_iter()
        .filter_map(|step| {
            let ended = terminated(pod, step)?;
            (ended.code == 0).then(|| {
                let message = ended.message.as_deref().unwrap_or("");
                (step, report::parse_termination(message, &uid, attempt))
            })
        })
        .collect()
}

/// A step's container once it has ended, as the kubelet reports it.
struct Ended {
    code: i32,
    /// The kubelet's word for how it ended (`OOMKilled`, `Error`, `Completed`).
    reason: Option<String>,
    /// The termination message the worker wrote.
    message: Option<String>,
    finished_at: Option<jiff::Timestamp>,
}

impl Ended {
    /// Why the step failed, in the worker's words when it left any.
    fn failure(&self, step: Step) -> String {
        if self.reason.as_deref() == Some("OOMKilled") {
            return format!(
                "the {} step was killed for exceeding its memory limit (OOMKilled, exit code \
                 {}); raise spec.podTemplate.resources.limits.memory",
                step.name(),
                self.code
            );
        }
        worker_error(self.message.as_deref())
            .unwrap_or_else(|| format!("the {} step exited with code {}", step.name(), self.code))
    }
}

fn terminated(pod: &Pod, step: Step) -> Option<Ended> {
    let status = pod.status.as_ref()?;
    let all: Vec<&ContainerStatus> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .collect();
    let t = all
        .into_iter()
        .find(|c| c.name == step.name())?
        .state
        .as_ref()?
        .terminated
        .as_ref()?;
    Some(Ended {
        code: t.exit_code,
        reason: t.reason.clone(),
        message: t.message.clone(),
        finished_at: t.finished_at.as_ref().map(|f| f.0),
    })
}

/// Decides what to do next for the observed job.
pub fn decide(o: &Observed) -> Outcome {
    let mut d = Decider::new(o);
    d.out.status.observed_generation = d.generation;
    if !finished(&d.out.status) {
        d.step();
    }
    d.out
}

struct Decider<'a> {
    o: &'a Observed<'a>,
    now: String,
    generation: Option<i64>,
    out: Outcome,
}

impl<'a> Decider<'a> {
    fn new(o: &'a Observed<'a>) -> Self {
        Decider {
            o,
            now: o.now.to_string(),
            generation: o.job.metadata.generation,
            out: Outcome {
                status: o.job.status.clone().unwrap_or_default(),
                actions: Vec::new(),
                requeue: None,
                reported: Vec::new(),
            },
        }
    }

    fn step(&mut self) {
        let spec = &self.o.job.spec;
        let namespace = self.o.job.namespace().unwrap_or_default();
        let policy = &self.o.settings.policy;
        let checked = validate(spec, policy).and_then(|()| worker_namespace(&namespace, policy));
        if let Err(invalid) = checked {
            return self.finish(Truth::False, invalid.reason, invalid.message);
        }
        if spec.cancel {
            self.delete_running();
            return self.finish(Truth::False, Reason::Cancelled, "cancelled by spec.cancel");
        }
        if let Some(left) = self.time_left() {
            if left.is_zero() {
                self.delete_running();
                let secs = spec.timeout_seconds.unwrap_or_default();
                return self.finish(
                    Truth::False,
                    Reason::DeadlineExceeded,
                    format!("the job ran longer than spec.timeoutSeconds ({secs}s)"),
                );
            }
            self.requeue(left);
        }
        let attempt = current_attempt(self.o.job);
        if attempt == 0 {
            match self.blocker() {
                Some(name) => {
                    let message = format!(
                        "waiting for job {name} of stream {:?} to finish",
                        spec.stream
                    );
                    self.running(Reason::WaitingForStream, message);
                    self.requeue(WAIT_RECHECK);
                }
                None => self.start(1),
            }
            return;
        }
        self.progress(attempt);
    }

    /// Time until the deadline, if the job has one and has started.
    fn time_left(&self) -> Option<Duration> {
        let timeout = self.o.job.spec.timeout_seconds?;
        let start: jiff::Timestamp = self.out.status.start_time.as_deref()?.parse().ok()?;
        let deadline = start + jiff::SignedDuration::from_secs(timeout);
        Some(
            deadline
                .duration_since(self.o.now)
                .try_into()
                .unwrap_or(Duration::ZERO),
        )
    }

    /// An unfinished job of the stream that must run first: an older one, or one that
    /// has already started. Jobs of a stream run one at a time, oldest first.
    fn blocker(&self) -> Option<String> {
        let me = self.o.job;
        let key = |j: &EncapsulationJob| (j.creation_timestamp().map(|t| t.0), j.name_any());
        self.o
            .stream
            .iter()
            .filter(|j| j.uid() != me.uid() && j.spec.stream == me.spec.stream)
            .filter(|j| !j.status.as_ref().is_some_and(finished))
            .find(|j| key(j) < key(me) || j.status.as_ref().is_some_and(|s| s.attempts > 0))
            .map(|j| j.name_any())
    }

    /// The images to plan against: the spec's, or the newest succeeded outputs of
    /// the stream, pinned to their digests.
    fn priors(&self) -> Vec<String> {
        let spec = &self.o.job.spec;
        if !spec.prior_builds.is_empty() {
            return spec.prior_builds.clone();
        }
        let mut done: Vec<&EncapsulationJob> = self
            .o
            .stream
            .iter()
            .filter(|j| j.uid() != self.o.job.uid() && j.spec.stream == spec.stream)
            .filter(|j| j.status.as_ref().is_some_and(succeeded))
            .filter(|j| j.status.as_ref().is_some_and(|s| s.output.is_some()))
            .collect();
        done.sort_by_key(|j| {
            let s = j.status.as_ref();
            std::cmp::Reverse((
                s.and_then(|s| s.completion_time.clone()),
                j.creation_timestamp().map(|t| t.0),
            ))
        });
        done.iter()
            .take(spec.prior_from_stream as usize)
            .filter_map(|j| j.status.as_ref()?.output.as_ref())
            .map(|out| match out.image.parse::<ImageRef>() {
                Ok(r) => r.pinned(&out.digest).unwrap_or(r).to_string(),
                Err(_) => out.image.clone(),
            })
            .collect()
    }

    fn start(&mut self, attempt: u32) {
        let priors = self.priors();
        let pod = worker_pod(
            self.o.job,
            &Attempt {
                number: attempt,
                priors: &priors,
                settings: self.o.settings,
            },
        );
        let name = pod.name_any();
        self.out.actions.push(Action::Create(Box::new(pod)));
        let status = &mut self.out.status;
        status.attempts = attempt;
        status.pod_uid = None;
        status.start_time.get_or_insert_with(|| self.now.clone());
        if !status.pod_names.contains(&name) {
            status.pod_names.push(name);
        }
        let total = self.max_attempts();
        let prior_note = match priors.len() {
            0 => "no prior builds".to_string(),
            n => format!("{n} prior build(s)"),
        };
        self.running(
            Reason::Running,
            format!("attempt {attempt} of {total}: planning against {prior_note}"),
        );
    }

    fn progress(&mut self, attempt: u32) {
        let pod = match pod_of(self.o.job, self.o.pods, attempt) {
            PodOf::Ours(pod) => pod,
            PodOf::Unconfirmed(strays) => return self.replace_unconfirmed(attempt, &strays),
            PodOf::Gone => {
                let name = report::pod_name(&self.o.job.name_any(), attempt);
                return self.attempt_failed(
                    attempt,
                    Reason::PodDeleted,
                    format!("pod {name} was deleted before it finished"),
                    Some(name),
                    None,
                );
            }
        };
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some() && !terminal(pod) {
            return self.attempt_failed(
                attempt,
                Reason::PodDeleted,
                format!("pod {name} is being deleted before it finished"),
                Some(name),
                None,
            );
        }
        if !self.step_done(attempt, pod, Step::Plan) {
            return;
        }
        if self.o.job.spec.mode == Mode::PlanOnly {
            return self.finish(Truth::True, Reason::Succeeded, "planned (PlanOnly)");
        }
        if self.step_done(attempt, pod, Step::Build) {
            let message = self
                .out
                .status
                .output
                .as_ref()
                .map_or_else(String::new, |o| format!("{} {}", o.image, o.digest));
            self.finish(Truth::True, Reason::Succeeded, message);
        }
    }

    /// Creates the attempt's pod once no unconfirmed pod holds its labels. A pod whose
    /// creation status never recorded is never adopted: it may be the controller's
    /// own from before a restart, or a forgery, and only a pod the controller saw
    /// created may report.
    fn replace_unconfirmed(&mut self, attempt: u32, strays: &[&Pod]) {
        if strays.is_empty() {
            return self.start(attempt);
        }
        let names: Vec<String> = strays.iter().map(|p| p.name_any()).collect();
        self.out
            .actions
            .extend(names.iter().cloned().map(Action::Delete));
        let total = self.max_attempts();
        self.running(
            Reason::Running,
            format!(
                "attempt {attempt} of {total}: replacing pod {} (its creation was never \
                 confirmed)",
                names.join(", ")
            ),
        );
        self.requeue(UNCONFIRMED_RECHECK);
    }

    /// Folds a step's outcome in; true once the step has ended well.
    fn step_done(&mut self, attempt: u32, pod: &Pod, step: Step) -> bool {
        let name = pod.name_any();
        let Some(ended) = terminated(pod, step) else {
            if pod_failed(pod) {
                let why = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.reason.clone().or(s.message.clone()))
                    .unwrap_or_else(|| "the pod failed".into());
                let reason = if why == Reason::Evicted.as_str() {
                    Reason::Evicted
                } else {
                    Reason::PodFailed
                };
                self.attempt_failed(attempt, reason, why, Some(name), Some(step));
            } else if let Some(why) = self.stuck_pending(pod) {
                self.attempt_failed(attempt, Reason::PodPending, why, Some(name), None);
            } else {
                let doing = match step {
                    Step::Plan => "planning",
                    Step::Build => "building",
                };
                let total = self.max_attempts();
                self.running(
                    Reason::Running,
                    format!("attempt {attempt} of {total}: {doing}"),
                );
            }
            return false;
        };
        if ended.code != 0 {
            let why = ended.failure(step);
            self.attempt_failed(attempt, Reason::WorkerFailed, why, Some(name), Some(step));
            return false;
        }
        match self.fold(step) {
            Ok(newly) => {
                if newly {
                    self.out
                        .reported
                        .extend(exit_time(ended.message.as_deref()).or(ended.finished_at));
                }
                true
            }
            Err(e) => {
                let why = format!("the {} report was refused: {e}", step.name());
                self.attempt_failed(attempt, Reason::ReportRejected, why, Some(name), Some(step));
                false
            }
        }
    }

    /// Why the pod is still Pending past the pending timeout, or `None`.
    fn stuck_pending(&mut self, pod: &Pod) -> Option<String> {
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        if phase != "Pending" {
            return None;
        }
        let created = pod.metadata.creation_timestamp.as_ref()?.0;
        let timeout = self.o.settings.pending_timeout;
        let pending: Duration = self
            .o
            .now
            .duration_since(created)
            .try_into()
            .unwrap_or_default();
        if pending < timeout {
            self.requeue(timeout - pending);
            return None;
        }
        Some(format!(
            "the pod stayed Pending for over {}s: {}",
            timeout.as_secs(),
            pending_reasons(pod)
        ))
    }

    /// Folds a verified report into status; true when its condition just turned True.
    fn fold(&mut self, step: Step) -> Result<bool, ReportError> {
        let reports = self.o.reports;
        let missing = || ReportError::Missing(report::report_name(&self.o.job.name_any()));
        let (type_, reason, message) = match step {
            Step::Plan => {
                let r = reports
                    .plan
                    .as_ref()
                    .ok_or_else(missing)?
                    .as_ref()
                    .map_err(Clone::clone)?;
                let plan = status::plan_status(&r.plan);
                let message = format!("{} layers; {}", plan.layer_count, plan.repack_reason);
                self.out.status.plan = Some(plan);
                (ConditionType::Planned, Reason::Planned, message)
            }
            Step::Build => {
                let r = reports
                    .build
                    .as_ref()
                    .ok_or_else(missing)?
                    .as_ref()
                    .map_err(Clone::clone)?;
                status::fold_build(&mut self.out.status, r);
                let message = format!("{} layers written", r.image.layers);
                (ConditionType::Built, Reason::Built, message)
            }
        };
        self.out.status.report_ref = Some(ReportRef {
            name: report::report_name(&self.o.job.name_any()),
            key: step.key().into(),
        });
        let was = condition(&self.out.status, type_).is_some_and(|c| Truth::True.is(&c.status));
        self.set(type_, Truth::True, reason, message);
        Ok(!was)
    }

    /// Records attempt `n`'s failure (once), then retries or gives up.
    fn attempt_failed(
        &mut self,
        n: u32,
        reason: Reason,
        message: String,
        pod: Option<String>,
        step: Option<Step>,
    ) {
        let namespace = self.o.job.namespace().unwrap_or_default();
        let recorded = self.out.status.failure.as_ref().and_then(|f| f.attempt) == Some(n);
        if !recorded {
            let logs_command = pod.as_ref().map(|p| match step {
                Some(s) => format!("kubectl logs -n {namespace} {p} -c {}", s.name()),
                None => format!("kubectl logs -n {namespace} {p} --all-containers"),
            });
            self.out.status.failure = Some(Failure {
                reason: reason.as_str().into(),
                message,
                pod,
                container: step.map(|s| s.name().to_string()),
                logs_command,
                attempt: Some(n),
                time: Some(self.now.clone()),
            });
        }
        self.retry_or_fail(n);
    }

    fn retry_or_fail(&mut self, n: u32) {
        let failure = self.out.status.failure.clone().unwrap_or_default();
        if n >= self.max_attempts() {
            let message = format!("attempt {n} of {n} failed: {}", failure.message);
            return self.finish(Truth::False, Reason::Failed, message);
        }
        let wait = backoff(self.o.settings.backoff_base, n);
        let since: jiff::Timestamp = failure
            .time
            .as_deref()
            .and_then(|t| t.parse().ok())
            .unwrap_or(self.o.now);
        let elapsed: Duration = self
            .o
            .now
            .duration_since(since)
            .try_into()
            .unwrap_or_default();
        match wait.checked_sub(elapsed).filter(|left| !left.is_zero()) {
            None => self.start(n + 1),
            Some(left) => {
                let message = format!(
                    "attempt {n} failed ({}); attempt {} starts in {}s",
                    failure.message,
                    n + 1,
                    left.as_secs().max(1)
                );
                self.running(Reason::BackOff, message);
                self.requeue(left);
            }
        }
    }

    /// The first attempt and its retries.
    fn max_attempts(&self) -> u32 {
        self.o.settings.retries(&self.o.job.spec) + 1
    }

    fn delete_running(&mut self) {
        let running = self.o.pods.iter().filter(|p| !terminal(p));
        let names: Vec<String> = running.map(|p| p.name_any()).collect();
        self.out
            .actions
            .extend(names.into_iter().map(Action::Delete));
    }

    fn running(&mut self, reason: Reason, message: String) {
        self.set(ConditionType::Succeeded, Truth::Unknown, reason, message);
    }

    fn finish(&mut self, truth: Truth, reason: Reason, message: impl Into<String>) {
        self.set(ConditionType::Succeeded, truth, reason, message);
        self.out.status.completion_time = Some(self.now.clone());
        self.out.requeue = None;
    }

    fn set(
        &mut self,
        type_: ConditionType,
        truth: Truth,
        reason: Reason,
        message: impl Into<String>,
    ) {
        set_condition(
            &mut self.out.status,
            type_,
            truth,
            reason,
            message,
            &self.now,
            self.generation,
        );
    }

    fn requeue(&mut self, after: Duration) {
        let after = after.min(RESYNC);
        self.out.requeue = Some(self.out.requeue.map_or(after, |r| r.min(after)));
    }
}

/// What keeps a pod Pending, as the scheduler and the kubelet put it.
fn pending_reasons(pod: &Pod) -> String {
    let Some(status) = pod.status.as_ref() else {
        return "no node has taken it".into();
    };
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .filter(|c| c.type_ == "PodScheduled" && Truth::False.is(&c.status))
        .map(|c| {
            let reason = c.reason.as_deref().unwrap_or("Unschedulable");
            format!("{reason}: {}", c.message.as_deref().unwrap_or(""))
        });
    let waiting = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .filter_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            let reason = w.reason.as_deref().unwrap_or("Waiting");
            Some(format!(
                "{} {reason}: {}",
                c.name,
                w.message.as_deref().unwrap_or("")
            ))
        });
    let all: Vec<String> = unscheduled.chain(waiting).collect();
    match all.is_empty() {
        true => "no node has started it".into(),
        false => all.join("; "),
    }
}

/// The decision after the API server refused to create the current attempt's pod
/// (`message` says why): the attempt failed as `PodCreateFailed`, and it is retried
/// or the job fails, as for any failed attempt.
pub fn create_failed(o: &Observed, message: String) -> Outcome {
    let mut d = Decider::new(o);
    let attempt = current_attempt(o.job);
    d.attempt_failed(attempt, Reason::PodCreateFailed, message, None, None);
    // The retry's pod is created by the next reconcile, after the status is written.
    d.out.actions.clear();
    d.out
}

/// The wait before attempt `n + 1`: base × 2^(n−1), capped.
pub fn backoff(base: Duration, n: u32) -> Duration {
    base.saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn pod_failed(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
}

/// When the worker says it exited (finer than the pod status's whole seconds).
fn exit_time(message: Option<&str>) -> Option<jiff::Timestamp> {
    let t: Termination = serde_json::from_str(message?).ok()?;
    t.finished?.parse().ok()
}

/// The worker's own account of a failure, or the log tail the kubelet put there.
fn worker_error(message: Option<&str>) -> Option<String> {
    let message = message?.trim();
    if message.is_empty() {
        return None;
    }
    match serde_json::from_str::<Termination>(message) {
        Ok(t) => t.error,
        Err(_) => Some(message.to_string()),
    }
}

#[cfg(test)]
mod tests;

//! The words a job's and a stream's status speak: condition types, their truth values
//! and reasons.
//! One enum each, so the reconciler, Events and metrics read and write the same
//! spellings and a new reason cannot be counted under a stale one.

/// A condition of an `EncapsulationJob`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionType {
    /// The plan step's report was verified and folded in.
    Planned,
    /// The build step's report was verified and folded in.
    Built,
    /// The job as a whole: Unknown while it runs, then True or False for good.
    Succeeded,
}

impl ConditionType {
    /// The spelling in `status.conditions[].type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionType::Planned => "Planned",
            ConditionType::Built => "Built",
            ConditionType::Succeeded => "Succeeded",
        }
    }
}

/// True, False or Unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// Not yet known.
    Unknown,
}

impl Truth {
    /// The spelling in `status.conditions[].status`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Truth::True => "True",
            Truth::False => "False",
            Truth::Unknown => "Unknown",
        }
    }

    /// Whether a condition's `status` field says this.
    pub fn is(self, status: &str) -> bool {
        status == self.as_str()
    }
}

/// Why a condition is what it is, or why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    // The job runs (Succeeded is Unknown).
    /// An attempt's pod is running a step, or is being replaced.
    Running,
    /// An earlier job of the stream has not finished.
    WaitingForStream,
    /// An attempt failed; the next one starts after a wait.
    BackOff,

    // The job ended (Succeeded is True or False): the metrics' outcomes.
    /// Every step ended well.
    Succeeded,
    /// The last attempt failed.
    Failed,
    /// `spec.cancel` was set.
    Cancelled,
    /// The job ran longer than `spec.timeoutSeconds`.
    DeadlineExceeded,
    /// The spec breaks a rule of its own or of the controller's policy.
    InvalidSpec,

    // A step ended well (Planned or Built is True).
    /// The plan report was folded in.
    Planned,
    /// The build report was folded in.
    Built,

    // Why one attempt failed (`status.failure.reason`).
    /// The attempt's pod went before it finished.
    PodDeleted,
    /// The pod failed without a step's exit code.
    PodFailed,
    /// The kubelet evicted the pod.
    Evicted,
    /// The pod stayed Pending past the pending timeout.
    PodPending,
    /// A step exited non-zero.
    WorkerFailed,
    /// A step's report did not verify.
    ReportRejected,
    /// The API server refused to create the pod.
    PodCreateFailed,
}

impl Reason {
    /// The reasons a job ends with, in the order metrics list them.
    pub const ENDINGS: [Reason; 5] = [
        Reason::Succeeded,
        Reason::Failed,
        Reason::Cancelled,
        Reason::DeadlineExceeded,
        Reason::InvalidSpec,
    ];

    /// Every reason, for parsing what status holds.
    const ALL: [Reason; 17] = [
        Reason::Running,
        Reason::WaitingForStream,
        Reason::BackOff,
        Reason::Succeeded,
        Reason::Failed,
        Reason::Cancelled,
        Reason::DeadlineExceeded,
        Reason::InvalidSpec,
        Reason::Planned,
        Reason::Built,
        Reason::PodDeleted,
        Reason::PodFailed,
        Reason::Evicted,
        Reason::PodPending,
        Reason::WorkerFailed,
        Reason::ReportRejected,
        Reason::PodCreateFailed,
    ];

    /// The spelling in status and in Events.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Running => "Running",
            Reason::WaitingForStream => "WaitingForStream",
            Reason::BackOff => "BackOff",
            Reason::Succeeded => "Succeeded",
            Reason::Failed => "Failed",
            Reason::Cancelled => "Cancelled",
            Reason::DeadlineExceeded => "DeadlineExceeded",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::Planned => "Planned",
            Reason::Built => "Built",
            Reason::PodDeleted => "PodDeleted",
            Reason::PodFailed => "PodFailed",
            Reason::Evicted => "Evicted",
            Reason::PodPending => "PodPending",
            Reason::WorkerFailed => "WorkerFailed",
            Reason::ReportRejected => "ReportRejected",
            Reason::PodCreateFailed => "PodCreateFailed",
        }
    }

    /// The reason a status field spells, if it is one of ours.
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A condition of an `EncapsulationStream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCondition {
    /// The source was read on the last poll, and the spec is valid.
    Ready,
    /// One of the stream's jobs is running.
    Building,
    /// `spec.suspend` holds new jobs back.
    Suspended,
}

impl StreamCondition {
    /// The spelling in `status.conditions[].type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StreamCondition::Ready => "Ready",
            StreamCondition::Building => "Building",
            StreamCondition::Suspended => "Suspended",
        }
    }
}

/// Why a stream's condition is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamReason {
    /// The source was read.
    SourceRead,
    /// The source could not be read; the next poll backs off.
    SourceUnavailable,
    /// The spec breaks a rule of its own.
    InvalidSpec,
    /// A job runs.
    JobRunning,
    /// No job runs.
    Idle,
    /// The API server refused the job the stream made.
    JobRefused,
    /// `spec.suspend` is set.
    SuspendedBySpec,
    /// `spec.suspend` is not set.
    Active,
}

impl StreamReason {
    /// The spelling in status and in Events.
    pub const fn as_str(self) -> &'static str {
        match self {
            StreamReason::SourceRead => "SourceRead",
            StreamReason::SourceUnavailable => "SourceUnavailable",
            StreamReason::InvalidSpec => "InvalidSpec",
            StreamReason::JobRunning => "JobRunning",
            StreamReason::Idle => "Idle",
            StreamReason::JobRefused => "JobRefused",
            StreamReason::SuspendedBySpec => "Suspended",
            StreamReason::Active => "Active",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_parses_back_and_spellings_are_unique() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
        let mut spellings: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        spellings.sort_unstable();
        spellings.dedup();
        assert_eq!(spellings.len(), Reason::ALL.len());
        assert_eq!(Reason::parse("SomethingElse"), None);
    }

    #[test]
    fn endings_are_the_reasons_a_finished_job_has() {
        assert!(Reason::ENDINGS.iter().all(|r| Reason::ALL.contains(r)));
        assert!(!Reason::ENDINGS.contains(&Reason::BackOff));
    }
}

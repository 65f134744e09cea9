//! Status: conditions that change their transition time only on a real transition, and
//! the bounded summaries folded in from worker reports.

use crate::plan::Action;
use crate::plan::Plan;
use crate::report::BuildReport;

use super::crd::{
    Condition, DecisionCounts, DecisionStatus, DiffStatus, EncapsulationJobStatus, LayerStatus,
    OutputStatus, PlanStatus,
};
use super::vocabulary::{ConditionType, Reason, Truth};

/// How many non-"kept" decisions status lists; the report ConfigMap has all of them.
pub const FIRST_DECISIONS: usize = 20;

/// Sets a condition. Its `lastTransitionTime` moves only when its status changes.
pub fn set_condition(
    status: &mut EncapsulationJobStatus,
    type_: ConditionType,
    truth: Truth,
    reason: Reason,
    message: impl Into<String>,
    now: &str,
    generation: Option<i64>,
) {
    let (type_, reason) = (type_.as_str(), reason.as_str());
    let set = Setting {
        truth,
        reason,
        now,
        generation,
    };
    set.apply(&mut status.conditions, type_, message.into());
}

/// A condition's new status, reason and time, for any resource's condition list.
pub struct Setting<'a> {
    /// The new status.
    pub truth: Truth,
    /// The new reason.
    pub reason: &'a str,
    /// Now (RFC 3339): the transition time if the status changes.
    pub now: &'a str,
    /// The spec generation the condition is set for.
    pub generation: Option<i64>,
}

impl Setting<'_> {
    /// Sets condition `type_` in `conditions`. Its `lastTransitionTime` moves only
    /// when its status changes.
    pub fn apply(&self, conditions: &mut Vec<Condition>, type_: &str, message: String) {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if !self.truth.is(&c.status) {
                    c.last_transition_time = self.now.to_string();
                }
                c.status = self.truth.as_str().into();
                c.reason = self.reason.into();
                c.message = message;
                c.observed_generation = self.generation;
            }
            None => conditions.push(Condition {
                type_: type_.into(),
                status: self.truth.as_str().into(),
                reason: self.reason.into(),
                message,
                last_transition_time: self.now.to_string(),
                observed_generation: self.generation,
            }),
        }
    }
}

/// A condition by type.
pub fn condition(status: &EncapsulationJobStatus, type_: ConditionType) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// Whether the job has ended, one way or the other.
pub fn finished(status: &EncapsulationJobStatus) -> bool {
    condition(status, ConditionType::Succeeded).is_some_and(|c| !Truth::Unknown.is(&c.status))
}

/// Whether the job ended well.
pub fn succeeded(status: &EncapsulationJobStatus) -> bool {
    condition(status, ConditionType::Succeeded).is_some_and(|c| Truth::True.is(&c.status))
}

/// The bounded summary of a plan.
pub fn plan_status(plan: &Plan) -> PlanStatus {
    let mut decisions = DecisionCounts::default();
    for d in &plan.decisions {
        let counter = match d.action {
            Action::Kept => &mut decisions.kept,
            Action::Updated => &mut decisions.updated,
            Action::Placed => &mut decisions.placed,
            Action::Moved => &mut decisions.moved,
            Action::Removed => &mut decisions.removed,
        };
        *counter += 1;
    }
    PlanStatus {
        layer_count: plan.layers.len() as u32,
        layers: plan
            .layers
            .iter()
            .map(|l| LayerStatus {
                index: l.index as u32,
                components: l.components.len() as u32,
                size: l.size,
                change_probability: format!("{:.4}", l.change_probability),
                digest: None,
            })
            .collect(),
        decisions,
        first_decisions: plan
            .decisions
            .iter()
            .filter(|d| d.action != Action::Kept)
            .take(FIRST_DECISIONS)
            .map(|d| DecisionStatus {
                component: d.component.clone(),
                action: serde_json::to_value(d.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                layer: d.layer.map(|l| l as u32),
                reason: d.reason.clone(),
            })
            .collect(),
        repack_reason: plan.repack.reason.clone(),
    }
}

/// Folds a build report into status: layer digests, diffs and the output.
pub fn fold_build(status: &mut EncapsulationJobStatus, report: &BuildReport) {
    let plan = status.plan.get_or_insert_with(|| plan_status(&report.plan));
    for (layer, digest) in plan.layers.iter_mut().zip(&report.image.layer_digests) {
        layer.digest = Some(digest.clone());
    }
    status.diff = report
        .diffs
        .iter()
        .map(|d| DiffStatus {
            image: d.old.clone(),
            reused_layers: d.reused.len() as u32,
            added_layers: d.added.len() as u32,
            removed_layers: d.removed.len() as u32,
            download_bytes: d.download_bytes,
            reused_percent: (d.reused_percent * 10.0).round() / 10.0,
        })
        .collect();
    status.output = Some(OutputStatus {
        image: report.image.reference.clone(),
        digest: report.image.manifest_digest.clone(),
        size: report.image.size,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_a_real_transition() {
        let mut s = EncapsulationJobStatus::default();
        set_condition(
            &mut s,
            ConditionType::Succeeded,
            Truth::Unknown,
            Reason::WaitingForStream,
            "a",
            "t1",
            Some(1),
        );
        set_condition(
            &mut s,
            ConditionType::Succeeded,
            Truth::Unknown,
            Reason::Running,
            "b",
            "t2",
            Some(1),
        );
        let c = condition(&s, ConditionType::Succeeded).unwrap();
        assert_eq!(
            (c.reason.as_str(), c.last_transition_time.as_str()),
            ("Running", "t1")
        );
        assert!(!finished(&s));
        set_condition(
            &mut s,
            ConditionType::Succeeded,
            Truth::True,
            Reason::Succeeded,
            "c",
            "t3",
            Some(1),
        );
        assert_eq!(
            condition(&s, ConditionType::Succeeded)
                .unwrap()
                .last_transition_time,
            "t3"
        );
        assert!(finished(&s) && succeeded(&s));
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// Status lives in etcd next to the object (1.5 MiB limit); the full report goes to
    /// a ConfigMap (1 MiB). Both must hold a 5,000-component image with room to spare.
    #[test]
    fn a_5000_component_plan_fits_status_and_its_configmap() {
        let (build, priors) = crate::bench::synthetic::stream(5000, 20, 64);
        let plan = crate::plan::plan(&build, &priors, &Default::default()).unwrap();
        let status = EncapsulationJobStatus {
            plan: Some(plan_status(&plan)),
            ..Default::default()
        };
        let status_bytes = serde_json::to_vec(&status).unwrap().len();
        assert!(status_bytes < 64 * 1024, "status is {status_bytes} bytes");
        let report = crate::report::PlanReport {
            schema: crate::report::PLAN_REPORT_SCHEMA.into(),
            plan,
            priors: Vec::new(),
            warnings: Vec::new(),
        };
        let (gz, _) = crate::operator::report::encode(&report);
        assert!(
            gz.len() < 900_000,
            "the report is {} bytes gzipped",
            gz.len()
        );
    }
}

//! The controller's Prometheus metrics, kept with `prometheus-client` and served in
//! the Prometheus text format. Labels carry outcomes only, never object names, so the
//! series count stays fixed however many jobs run.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::vocabulary::Reason;

/// Upper bounds (seconds) of the histogram buckets.
const BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// How a job ended: the one label jobs are counted by.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// A histogram of durations, in seconds.
#[derive(Debug, Clone)]
pub struct Durations(Histogram);

impl Default for Durations {
    fn default() -> Self {
        Durations(Histogram::new(BUCKETS))
    }
}

impl Durations {
    /// Counts one duration.
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

/// The controller's metrics, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconciles that failed and were retried.
    pub reconcile_errors: Counter,
    /// Worker pods created.
    pub pods_created: Counter,
    finished: Family<Outcome, Counter>,
    /// From a job's start to its end.
    pub job_duration: Durations,
    /// From a worker's exit to the status that shows its report.
    pub report_latency: Durations,
    /// One reconcile, start to end.
    pub reconcile_duration: Durations,
}

impl Default for Metrics {
    fn default() -> Self {
        let finished = Family::<Outcome, Counter>::default();
        // Every ending shows from the start, at zero, so a rate over it is defined.
        for reason in Reason::ENDINGS {
            drop(finished.get_or_create(&Outcome {
                outcome: reason.as_str(),
            }));
        }
        let m = Metrics {
            registry: Registry::with_prefix("strata"),
            reconciles: Counter::default(),
            reconcile_errors: Counter::default(),
            pods_created: Counter::default(),
            finished,
            job_duration: Durations::default(),
            report_latency: Durations::default(),
            reconcile_duration: Durations::default(),
        };
        m.registered()
    }
}

impl Metrics {
    /// `self` with every metric in its registry (the registry holds handles to the
    /// same values).
    fn registered(mut self) -> Self {
        let r = &mut self.registry;
        r.register("reconciles", "Reconciles run", self.reconciles.clone());
        r.register(
            "reconcile_errors",
            "Reconciles that failed and were retried",
            self.reconcile_errors.clone(),
        );
        r.register(
            "worker_pods_created",
            "Worker pods created",
            self.pods_created.clone(),
        );
        r.register(
            "jobs_finished",
            "Jobs finished, by outcome",
            self.finished.clone(),
        );
        for (name, help, h) in [
            (
                "job_duration_seconds",
                "Time from a job's start to its end",
                &self.job_duration,
            ),
            (
                "report_latency_seconds",
                "Time from a worker's exit to the status update showing its report",
                &self.report_latency,
            ),
            (
                "reconcile_duration_seconds",
                "Time one reconcile takes",
                &self.reconcile_duration,
            ),
        ] {
            r.register(name, help, h.0.clone());
        }
        self
    }

    /// Counts a finished job. A reason no job ends with is not counted: the series
    /// stay the fixed set of [`Reason::ENDINGS`].
    pub fn job_finished(&self, reason: Reason) {
        if Reason::ENDINGS.contains(&reason) {
            self.finished
                .get_or_create(&Outcome {
                    outcome: reason.as_str(),
                })
                .inc();
        } else {
            tracing::warn!(reason = reason.as_str(), "not a job's ending");
        }
    }

    /// The exposition text ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_fixed_series_and_buckets() {
        let m = Metrics::default();
        m.job_finished(Reason::Succeeded);
        m.job_finished(Reason::InvalidSpec);
        m.job_finished(Reason::BackOff);
        for ms in [10, 20, 30, 40, 1000] {
            m.report_latency.observe(Duration::from_millis(ms));
        }
        let text = m.render();
        assert!(text.contains("strata_jobs_finished_total{outcome=\"Succeeded\"} 1"));
        assert!(text.contains("strata_jobs_finished_total{outcome=\"InvalidSpec\"} 1"));
        assert!(text.contains("strata_jobs_finished_total{outcome=\"DeadlineExceeded\"} 0"));
        assert!(!text.contains("BackOff"));
        assert!(text.contains("strata_report_latency_seconds_count 5"));
        assert!(text.contains("strata_report_latency_seconds_bucket{le=\"0.05\"} 4"));
    }
}

//! Prometheus metrics in the text exposition format. Labels carry outcomes only, never
//! object names, so the series count stays fixed however many jobs run.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::vocabulary::Reason;

/// Upper bounds (seconds) of the histogram buckets.
const BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// A histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    inner: Mutex<HistogramData>,
}

#[derive(Debug, Default, Clone)]
struct HistogramData {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let mut h = self.inner.lock().expect("metrics lock");
        for (bound, count) in BUCKETS.iter().zip(h.counts.iter_mut()) {
            if secs <= *bound {
                *count += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let h = self.inner.lock().expect("metrics lock").clone();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", h.sum, h.count);
    }
}

/// The controller's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub reconciles: AtomicU64,
    pub reconcile_errors: AtomicU64,
    pub pods_created: AtomicU64,
    finished: [AtomicU64; Reason::ENDINGS.len()],
    /// From a job's start to its end.
    pub job_duration: Histogram,
    /// From a worker's exit to the status that shows its report.
    pub report_latency: Histogram,
    pub reconcile_duration: Histogram,
}

impl Metrics {
    /// Counts a finished job. A reason no job ends with is not counted: the series
    /// stay the fixed set of [`Reason::ENDINGS`].
    pub fn job_finished(&self, reason: Reason) {
        match Reason::ENDINGS.iter().position(|o| *o == reason) {
            Some(i) => {
                self.finished[i].fetch_add(1, Ordering::Relaxed);
            }
            None => tracing::warn!(reason = reason.as_str(), "not a job's ending"),
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        counter(
            &mut out,
            "strata_reconciles_total",
            "Reconciles run.",
            &self.reconciles,
        );
        counter(
            &mut out,
            "strata_reconcile_errors_total",
            "Reconciles that failed and were retried.",
            &self.reconcile_errors,
        );
        counter(
            &mut out,
            "strata_worker_pods_created_total",
            "Worker pods created.",
            &self.pods_created,
        );
        let name = "strata_jobs_finished_total";
        let _ = writeln!(
            out,
            "# HELP {name} Jobs finished, by outcome.\n# TYPE {name} counter"
        );
        for (outcome, v) in Reason::ENDINGS.iter().zip(&self.finished) {
            let _ = writeln!(
                out,
                "{name}{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                v.load(Ordering::Relaxed)
            );
        }
        self.job_duration.render(
            &mut out,
            "strata_job_duration_seconds",
            "Time from a job's start to its end.",
        );
        self.report_latency.render(
            &mut out,
            "strata_report_latency_seconds",
            "Time from a worker's exit to the status update showing its report.",
        );
        self.reconcile_duration.render(
            &mut out,
            "strata_reconcile_duration_seconds",
            "Time one reconcile takes.",
        );
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
        assert!(text.contains("strata_jobs_finished_total{outcome=\"UnsupportedSource\"} 0"));
        assert!(!text.contains("BackOff"));
        assert!(text.contains("strata_report_latency_seconds_count 5"));
        assert!(text.contains("strata_report_latency_seconds_bucket{le=\"0.05\"} 4"));
    }
}

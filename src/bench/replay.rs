//! Replays a stream: each build is laid out knowing only the builds before it, and
//! every update is measured as a client would download it.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::baselines::Strategy;
use crate::components::Build;
use crate::layout::download::diff_layouts;
use crate::layout::Layout;

/// How a replay runs.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Transitions left out of the figures while history is learnt.
    pub warmup: usize,
    /// At most this many prior builds are handed to each plan, newest first.
    pub history_depth: usize,
}

/// One update, build `build - 1` → `build`.
#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    /// The build updated to.
    pub build: usize,
    /// Compressed bytes of the layers a client of the previous build lacks.
    pub download_bytes: u64,
    /// Compressed bytes of the components that changed: no layout does better.
    pub lower_bound_bytes: u64,
    /// Compressed bytes of the whole image.
    pub total_bytes: u64,
    /// Layers of the new image.
    pub layers: usize,
    /// Of them, the ones a client already has.
    pub reused_layers: usize,
}

/// A replay's figures for one strategy.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayResult {
    /// The strategy's name.
    pub strategy: String,
    /// Builds replayed.
    pub builds: usize,
    /// Transitions left out of the figures at the start.
    pub warmup: usize,
    /// Every transition, the warm-up included.
    pub transitions: Vec<Transition>,
    /// Over the transitions after the warm-up.
    pub mean_download_bytes: f64,
    /// Over the transitions after the warm-up.
    pub median_download_bytes: f64,
    /// Over the transitions after the warm-up.
    pub mean_lower_bound_bytes: f64,
    /// Mean download ÷ mean lower bound.
    pub ratio_to_lower_bound: f64,
    /// Time to lay out one build, on average.
    pub mean_plan_ms: f64,
    /// The longest one.
    pub max_plan_ms: f64,
}

/// Replays `history` through `strategy`; `progress` is called after every build.
pub fn replay(
    history: &[Build],
    strategy: &mut dyn Strategy,
    opts: &ReplayOptions,
    mut progress: impl FnMut(usize),
) -> ReplayResult {
    let mut layouts: Vec<Layout> = Vec::with_capacity(history.len());
    let mut times: Vec<Duration> = Vec::with_capacity(history.len());
    let mut transitions = Vec::new();
    for (k, build) in history.iter().enumerate() {
        let priors: Vec<Layout> = layouts
            .iter()
            .rev()
            .take(opts.history_depth)
            .cloned()
            .collect();
        let started = Instant::now();
        let mut layout = strategy.layout(build, &priors);
        times.push(started.elapsed());
        layout.date = build.date.clone();
        if let Some(prev) = layouts.last() {
            let d = diff_layouts(prev, &layout);
            transitions.push(Transition {
                build: k,
                download_bytes: d.download_bytes,
                lower_bound_bytes: d.lower_bound_bytes,
                total_bytes: d.total_bytes,
                layers: layout.layers.len(),
                reused_layers: d.reused_layers,
            });
        }
        layouts.push(layout);
        progress(k + 1);
    }
    summarise(
        &strategy.name().to_string(),
        history.len(),
        transitions,
        &times,
        opts.warmup,
    )
}

fn summarise(
    strategy: &str,
    builds: usize,
    transitions: Vec<Transition>,
    times: &[Duration],
    warmup: usize,
) -> ReplayResult {
    let measured = transitions.get(warmup..).unwrap_or_default();
    let n = measured.len().max(1) as f64;
    let mean = |f: fn(&Transition) -> u64| measured.iter().map(|t| f(t) as f64).sum::<f64>() / n;
    let mean_download = mean(|t| t.download_bytes);
    let mean_lower = mean(|t| t.lower_bound_bytes);
    let mut downloads: Vec<f64> = measured.iter().map(|t| t.download_bytes as f64).collect();
    let ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
    ReplayResult {
        strategy: strategy.to_string(),
        builds,
        warmup,
        mean_download_bytes: mean_download,
        median_download_bytes: super::median(&mut downloads),
        mean_lower_bound_bytes: mean_lower,
        ratio_to_lower_bound: if mean_lower > 0.0 {
            mean_download / mean_lower
        } else {
            f64::NAN
        },
        mean_plan_ms: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
        max_plan_ms: ms.iter().copied().fold(0.0, f64::max),
        transitions,
    }
}

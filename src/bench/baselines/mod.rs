//! Layout strategies to replay: Strata's planner, and baselines re-implemented from
//! the published descriptions of the tools it competes with (`shared/notes/peers.md`).
//!
//! The baselines get no changelogs from the bench data, so their "changelog" change
//! counts are the version changes seen in the builds before, which is what a changelog
//! entry records.

use std::collections::HashMap;

use crate::components::Build;
use crate::layout::{Layout, LayoutComponent, LayoutLayer};
use crate::plan::{self, PlanOptions};

mod chunkah;
mod ostree_ext;
mod single;

use chunkah::Chunkah;
use ostree_ext::OstreeExt;
use single::{LargestFirst, Single};

/// Lays out one build given the layouts of the builds before it, newest first.
pub trait Strategy {
    /// Which strategy this is, for the figures.
    fn name(&self) -> StrategyName;
    /// The layout of `build`.
    fn layout(&mut self, build: &Build, priors: &[Layout]) -> Layout;
}

/// The strategies a replay can measure: Strata's planner and the baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum StrategyName {
    /// Strata's planner.
    Strata,
    /// Everything in one layer.
    Single,
    /// The N − 1 largest components alone, the rest in one layer.
    LargestFirst,
    /// rpm-ostree / bootc chunking, packed afresh every build.
    OstreeExt,
    /// rpm-ostree / bootc chunking, frozen after the warm-up as a running stream does.
    OstreeExtPrior,
    /// chunkah's stateless size and stability packing.
    Chunkah,
}

impl StrategyName {
    /// Every strategy, in table order.
    pub fn all() -> &'static [StrategyName] {
        <Self as clap::ValueEnum>::value_variants()
    }

    /// The strategy for `opts.max_layers` layers. `ostree-ext-prior` packs afresh for
    /// its first `freeze_after` builds and then freezes its layout, as a stream's
    /// maintainers do once it runs (freezing build 0's plan, made with no history,
    /// would be its worst case).
    pub fn build(self, opts: &PlanOptions, freeze_after: usize) -> Box<dyn Strategy> {
        let n = opts.max_layers;
        match self {
            Self::Strata => Box::new(Strata(opts.clone())),
            Self::Single => Box::new(Single),
            Self::LargestFirst => Box::new(LargestFirst(n)),
            Self::OstreeExt => Box::new(OstreeExt::new(n, None)),
            Self::OstreeExtPrior => Box::new(OstreeExt::new(n, Some(freeze_after))),
            Self::Chunkah => Box::new(Chunkah(n)),
        }
    }
}

/// The name the figures and `--strategy` use.
impl std::fmt::Display for StrategyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = clap::ValueEnum::to_possible_value(self).expect("no strategy is hidden");
        f.write_str(value.get_name())
    }
}

/// The layout of `build` with `groups` (component indices) as its layers, in order.
fn layout_of(build: &Build, groups: Vec<Vec<usize>>) -> Layout {
    Layout {
        origin: String::new(),
        date: build.date.clone(),
        generation: None,
        layers: groups
            .into_iter()
            .map(|g| {
                let components: Vec<LayoutComponent> = g
                    .iter()
                    .map(|&i| {
                        let c = &build.components[i];
                        LayoutComponent {
                            name: c.name.clone(),
                            version: Some(c.version.clone()),
                            size: c.size,
                            source: c.source.clone(),
                        }
                    })
                    .collect();
                LayoutLayer::planned(components)
            })
            .collect(),
    }
}

struct Strata(PlanOptions);

impl Strategy for Strata {
    fn name(&self) -> StrategyName {
        StrategyName::Strata
    }
    fn layout(&mut self, build: &Build, priors: &[Layout]) -> Layout {
        plan::plan(build, priors, &self.0)
            .expect("replay options are validated before the replay starts")
            .layout()
    }
}

fn sorted_by_size(build: &Build, mut idx: Vec<usize>) -> Vec<usize> {
    let c = &build.components;
    idx.sort_by(|&a, &b| c[b].size.cmp(&c[a].size).then(c[a].name.cmp(&c[b].name)));
    idx
}

/// Days on which each component's version changed within the year before `build`,
/// seen from the priors (newest first).
fn change_days(build: &Build, priors: &[Layout]) -> HashMap<String, Vec<i64>> {
    let now = build.timestamp();
    let mut snapshots: Vec<(Option<i64>, HashMap<&str, &str>)> = vec![(
        now,
        build
            .components
            .iter()
            .map(|c| (c.name.as_str(), c.version.as_str()))
            .collect(),
    )];
    for p in priors {
        let versions = p
            .layers
            .iter()
            .flat_map(|l| &l.components)
            .filter_map(|c| Some((c.name.as_str(), c.version.as_deref()?)))
            .collect();
        snapshots.push((p.timestamp(), versions));
    }
    let mut days: HashMap<String, Vec<i64>> = HashMap::new();
    for pair in snapshots.windows(2) {
        let ((t_new, new), (_, old)) = (&pair[0], &pair[1]);
        let in_year = match (now, t_new) {
            (Some(now), Some(t)) => now - t < 365 * 86_400,
            _ => true,
        };
        if !in_year {
            break;
        }
        for (name, v) in new {
            if old.get(name).is_some_and(|o| o != v) {
                days.entry(name.to_string())
                    .or_default()
                    .push(t_new.unwrap_or(0) / 86_400);
            }
        }
    }
    days
}

fn median_and_mad(values: &[f64]) -> (f64, f64) {
    let m = super::median(&mut values.to_vec());
    let mad = super::median(&mut values.iter().map(|v| (v - m).abs()).collect::<Vec<_>>());
    (m, mad)
}

fn mean_and_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Which of three bands `v` falls in around `mean` ± `k`·σ: 0 high, 1 middle, 2 low.
fn band(v: f64, (mean, sd): (f64, f64), k: f64) -> usize {
    if v > mean + k * sd {
        0
    } else if v < mean - k * sd {
        2
    } else {
        1
    }
}

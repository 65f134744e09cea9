//! rpm-ostree's and bootc's chunking (ostree-ext), re-implemented from its published
//! description.

use std::collections::BTreeMap;

use super::{band, change_days, layout_of, mean_and_sd, median_and_mad, sorted_by_size};
use super::{Strategy, StrategyName};
use crate::components::{Build, ComponentKind};
use crate::layout::Layout;

/// rpm-ostree / bootc chunking (ostree-ext): a fresh size-and-frequency packing every
/// build, or from build `freeze_after` on, the prior layout frozen and new packages
/// appended to its last layer.
pub(super) struct OstreeExt {
    layers: usize,
    freeze_after: Option<usize>,
    /// Layouts made so far.
    built: usize,
}

impl OstreeExt {
    pub(super) fn new(layers: usize, freeze_after: Option<usize>) -> Self {
        OstreeExt {
            layers,
            freeze_after,
            built: 0,
        }
    }
}

impl Strategy for OstreeExt {
    fn name(&self) -> StrategyName {
        if self.freeze_after.is_some() {
            StrategyName::OstreeExtPrior
        } else {
            StrategyName::OstreeExt
        }
    }
    fn layout(&mut self, build: &Build, priors: &[Layout]) -> Layout {
        let frozen_now = self.freeze_after.is_some_and(|k| self.built >= k.max(1));
        self.built += 1;
        match priors.first().filter(|_| frozen_now) {
            Some(prior) => frozen(build, prior),
            None => layout_of(build, ostree_ext_fresh(build, priors, self.layers)),
        }
    }
}

fn frozen(build: &Build, prior: &Layout) -> Layout {
    let old = prior.by_name();
    let mut groups = vec![Vec::new(); prior.layers.len().max(1)];
    let last = groups.len() - 1;
    for (i, c) in build.components.iter().enumerate() {
        let layer = old.get(c.name.as_str()).map_or(last, |(l, _)| *l);
        groups[layer].push(i);
    }
    layout_of(build, groups)
}

fn ostree_ext_fresh(build: &Build, priors: &[Layout], layers: usize) -> Vec<Vec<usize>> {
    let n = build.components.len();
    // Layer 0 holds the commit and directory metadata, the last is reserved for new packages.
    let chunk_layers = layers.saturating_sub(2).max(1);
    if n < chunk_layers {
        let mut groups: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
        groups.push(Vec::new());
        return groups;
    }
    let (generated, packages): (Vec<usize>, Vec<usize>) =
        (0..n).partition(|&i| build.components[i].kind == ComponentKind::Generated);
    let budget = chunk_layers - usize::from(!generated.is_empty());
    let freq: Vec<f64> = {
        let days = change_days(build, priors);
        (0..n)
            .map(|i| {
                days.get(&build.components[i].name)
                    .map_or(0.0, |d| d.len() as f64)
            })
            .collect()
    };
    let sizes: Vec<f64> = packages
        .iter()
        .map(|&i| build.components[i].size as f64)
        .collect();
    let (median, mad) = median_and_mad(&sizes);
    let large_cut = median + 2.0 * mad;
    let small_cut = 0.5 * (median - 2.0 * mad).abs();
    let large_limit = (0.6 * budget as f64) as usize;
    let by_size = sorted_by_size(build, packages);
    let size_of = |i: usize| build.components[i].size as f64;
    let large: Vec<usize> = by_size
        .iter()
        .copied()
        .filter(|&i| size_of(i) >= large_cut)
        .take(large_limit)
        .collect();
    let rest: Vec<usize> = by_size
        .iter()
        .copied()
        .filter(|i| !large.contains(i))
        .collect();
    let (small, medium): (Vec<usize>, Vec<usize>) =
        rest.iter().partition(|&&i| size_of(i) <= small_cut);

    let mut groups: Vec<Vec<usize>> = Vec::new();
    if !generated.is_empty() {
        groups.push(generated);
    }
    groups.extend(large.iter().map(|&i| vec![i]));
    let medium_limit = budget
        .saturating_sub(large.len() + usize::from(!small.is_empty()))
        .max(1);
    groups.extend(medium_bins(build, &medium, &freq, medium_limit));
    if !small.is_empty() {
        groups.push(small);
    }
    groups.push(Vec::new());
    groups
}

/// Medium packages: nine frequency × size buckets, cut into equal-count bins, with
/// neighbouring bins merged until `limit` remain.
fn medium_bins(build: &Build, medium: &[usize], freq: &[f64], limit: usize) -> Vec<Vec<usize>> {
    if medium.is_empty() {
        return Vec::new();
    }
    let f: Vec<f64> = medium.iter().map(|&i| freq[i]).collect();
    let s: Vec<f64> = medium
        .iter()
        .map(|&i| build.components[i].size as f64)
        .collect();
    let (fs, ss) = (mean_and_sd(&f), mean_and_sd(&s));
    let mut buckets: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    for (k, &i) in medium.iter().enumerate() {
        buckets
            .entry((band(f[k], fs, 2.0), band(s[k], ss, 2.0)))
            .or_default()
            .push(i);
    }
    let per = medium.len().div_ceil(limit).max(1);
    let mut bins: Vec<Vec<usize>> = buckets
        .into_values()
        .flat_map(|b| b.chunks(per).map(<[usize]>::to_vec).collect::<Vec<_>>())
        .collect();
    let size = |b: &Vec<usize>| b.iter().map(|&i| build.components[i].size).sum::<u64>();
    while bins.len() > limit {
        let k = (0..bins.len() - 1)
            .min_by_key(|&k| size(&bins[k]) + size(&bins[k + 1]))
            .expect("more than one bin");
        let next = bins.remove(k + 1);
        bins[k].extend(next);
    }
    bins
}

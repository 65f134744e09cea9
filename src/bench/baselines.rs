//! Layout strategies to replay: Strata's planner, and baselines re-implemented from
//! the published descriptions of the tools it competes with (`shared/notes/peers.md`).
//!
//! The baselines get no changelogs from the bench data, so their "changelog" change
//! counts are the version changes seen in the builds before, which is what a changelog
//! entry records.

use std::collections::{BTreeMap, HashMap};

use crate::components::{Build, ComponentKind};
use crate::layout::{Layout, LayoutComponent, LayoutLayer};
use crate::plan::{self, PlanOptions};

/// Lays out one build given the layouts of the builds before it, newest first.
pub trait Strategy {
    fn name(&self) -> &str;
    fn layout(&mut self, build: &Build, priors: &[Layout]) -> Layout;
}

/// Every strategy name `--strategy` accepts, `all` aside.
pub const STRATEGIES: [&str; 6] = [
    "strata",
    "single",
    "largest-first",
    "ostree-ext",
    "ostree-ext-prior",
    "chunkah",
];

/// Builds the named strategy for `opts.max_layers` layers. `ostree-ext-prior` packs
/// afresh for its first `freeze_after` builds and then freezes its layout, as a
/// stream's maintainers do once it runs (freezing build 0's plan, made with no
/// history, would be its worst case).
pub fn strategy(name: &str, opts: &PlanOptions, freeze_after: usize) -> Option<Box<dyn Strategy>> {
    let n = opts.max_layers;
    Some(match name {
        "strata" => Box::new(Strata(opts.clone())),
        "single" => Box::new(Single),
        "largest-first" => Box::new(LargestFirst(n)),
        "ostree-ext" => Box::new(OstreeExt {
            layers: n,
            freeze_after: None,
            built: 0,
        }),
        "ostree-ext-prior" => Box::new(OstreeExt {
            layers: n,
            freeze_after: Some(freeze_after),
            built: 0,
        }),
        "chunkah" => Box::new(Chunkah(n)),
        _ => return None,
    })
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
                LayoutLayer {
                    size: components.iter().map(|c| c.size).sum(),
                    components,
                    blob_size: None,
                    digest: None,
                    commit_layer: false,
                    superseded: Vec::new(),
                    patch_layer: false,
                }
            })
            .collect(),
    }
}

struct Strata(PlanOptions);

impl Strategy for Strata {
    fn name(&self) -> &str {
        "strata"
    }
    fn layout(&mut self, build: &Build, priors: &[Layout]) -> Layout {
        plan::plan(build, priors, &self.0)
            .expect("replay options are validated before the replay starts")
            .layout()
    }
}

/// Everything in one layer.
struct Single;

impl Strategy for Single {
    fn name(&self) -> &str {
        "single"
    }
    fn layout(&mut self, build: &Build, _: &[Layout]) -> Layout {
        layout_of(build, vec![(0..build.components.len()).collect()])
    }
}

/// The N − 1 largest components alone, the rest in one layer.
struct LargestFirst(usize);

impl Strategy for LargestFirst {
    fn name(&self) -> &str {
        "largest-first"
    }
    fn layout(&mut self, build: &Build, _: &[Layout]) -> Layout {
        let by_size = sorted_by_size(build, (0..build.components.len()).collect());
        let alone = by_size.len().min(self.0 - 1);
        let mut groups: Vec<Vec<usize>> = by_size[..alone].iter().map(|&i| vec![i]).collect();
        groups.push(by_size[alone..].to_vec());
        layout_of(build, groups)
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

/// rpm-ostree / bootc chunking (ostree-ext): a fresh size-and-frequency packing every
/// build, or from build `freeze_after` on, the prior layout frozen and new packages
/// appended to its last layer.
struct OstreeExt {
    layers: usize,
    freeze_after: Option<usize>,
    /// Layouts made so far.
    built: usize,
}

impl Strategy for OstreeExt {
    fn name(&self) -> &str {
        if self.freeze_after.is_some() {
            "ostree-ext-prior"
        } else {
            "ostree-ext"
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

/// chunkah: source-package components, the big ones alone, the rest spread over three
/// stability tiers by a hash of the name.
struct Chunkah(usize);

impl Strategy for Chunkah {
    fn name(&self) -> &str {
        "chunkah"
    }
    fn layout(&mut self, build: &Build, priors: &[Layout]) -> Layout {
        let days = change_days(build, priors);
        let mut units: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, c) in build.components.iter().enumerate() {
            units.entry(c.unit_key()).or_default().push(i);
        }
        let units: Vec<(&str, Vec<usize>)> = units.into_iter().collect();
        let size = |m: &[usize]| m.iter().map(|&i| build.components[i].size).sum::<u64>();
        let stability: Vec<f64> = units
            .iter()
            .map(|(_, m)| {
                let mut d: Vec<i64> = m
                    .iter()
                    .flat_map(|&i| {
                        days.get(&build.components[i].name)
                            .cloned()
                            .unwrap_or_default()
                    })
                    .collect();
                d.sort_unstable();
                d.dedup();
                (-7.0 * d.len() as f64 / 365.0).exp()
            })
            .collect();
        let sizes: Vec<f64> = units.iter().map(|(_, m)| size(m) as f64).collect();
        let (median, mad) = median_and_mad(&sizes);
        let mut big: Vec<usize> = (0..units.len())
            .filter(|&u| sizes[u] >= median + 1.5 * mad)
            .collect();
        big.sort_by(|&a, &b| sizes[b].total_cmp(&sizes[a]).then(a.cmp(&b)));
        big.truncate((0.8 * self.0 as f64) as usize);
        let mut groups: Vec<Vec<usize>> = big.iter().map(|&u| units[u].1.clone()).collect();
        let rest: Vec<usize> = (0..units.len()).filter(|u| !big.contains(u)).collect();
        let tiers = tiers(
            &rest,
            &stability,
            self.0.saturating_sub(groups.len()).max(1),
        );
        for (members, count) in tiers {
            let mut bins = vec![Vec::new(); count];
            for u in members {
                bins[(fnv1a(units[u].0) % count as u64) as usize].extend(&units[u].1);
            }
            groups.extend(bins.into_iter().filter(|b| !b.is_empty()));
        }
        layout_of(build, groups)
    }
}

/// Splits units into high/mid/low stability tiers and shares `layers` among them in
/// proportion to their counts.
fn tiers(units: &[usize], stability: &[f64], layers: usize) -> Vec<(Vec<usize>, usize)> {
    let s: Vec<f64> = units.iter().map(|&u| stability[u]).collect();
    let stats = mean_and_sd(&s);
    let mut tiers = vec![Vec::new(); 3];
    for (k, &u) in units.iter().enumerate() {
        tiers[band(s[k], stats, 1.0)].push(u);
    }
    tiers.retain(|t| !t.is_empty());
    let total = units.len().max(1) as f64;
    let mut counts: Vec<usize> = tiers
        .iter()
        .map(|t| ((layers as f64 * t.len() as f64 / total).round() as usize).max(1))
        .collect();
    while counts.iter().sum::<usize>() > layers.max(tiers.len()) {
        let k = (0..counts.len())
            .max_by_key(|&k| counts[k])
            .expect("a tier");
        counts[k] -= 1;
    }
    tiers.into_iter().zip(counts).collect()
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

//! chunkah's stateless packing, re-implemented from its published description.

use std::collections::BTreeMap;

use super::{band, change_days, layout_of, mean_and_sd, median_and_mad, Strategy, StrategyName};
use crate::components::Build;
use crate::layout::Layout;

/// chunkah: source-package components, the big ones alone, the rest spread over three
/// stability tiers by a hash of the name.
pub(super) struct Chunkah(pub(super) usize);

impl Strategy for Chunkah {
    fn name(&self) -> StrategyName {
        StrategyName::Chunkah
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

//! History: how likely each component is to change in the next build, learnt from
//! what earlier builds of its stream looked like.
//!
//! [`estimate`] turns a stream's layouts (see [`crate::layout`]) plus the new build's
//! own metadata into change probabilities. It knows nothing of how layers are chosen.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::components::{Build, ComponentKind};
use crate::layout::Layout;

/// Where a change probability came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "basis")]
pub enum Basis {
    /// Learnt from the stream's builds (blended with the cold-start guess).
    History {
        /// Updates seen in which the component was present before and after.
        transitions: u32,
        /// How many of them changed it.
        changes: u32,
    },
    /// From changelog dates only.
    Changelog {
        /// Distinct days with a changelog entry in the year before the build.
        changes_last_year: u32,
    },
    /// Set by an `update_interval_days` hint.
    Hint,
    /// Generated content with no history: assumed to change every build.
    Generated,
    /// No information: the stream's base rate.
    Default,
}

/// A component's probability of changing in the next build, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The probability, in `[0.01, 1]`.
    pub p: f64,
    /// What it rests on.
    pub basis: Basis,
}

/// Weight halves for every this many builds of age (when builds are undated).
const HALF_LIFE_BUILDS: f64 = 16.0;
/// Weight halves for every this many days of age (when builds are dated).
const HALF_LIFE_DAYS: f64 = 180.0;
/// How many transitions the cold-start guess counts for against observed history.
pub const PRIOR_WEIGHT: f64 = 4.0;
/// The assumed build interval when dates are missing.
const DEFAULT_INTERVAL_DAYS: f64 = 7.0;
/// Change probability with no information at all.
const DEFAULT_P: f64 = 0.2;
/// A transition in which more than this share of units changed is a mass rebuild
/// (a distribution rebase): every layer changes whatever the layout, so it teaches
/// nothing about which components belong together and is left out of the rates.
const MASS_CHANGE_FRACTION: f64 = 0.5;
/// Probabilities never go below this: nothing is certain never to change.
const MIN_P: f64 = 0.01;
const SECONDS_PER_DAY: f64 = 86_400.0;

/// One build as the estimator sees it: a fingerprint of every unit's content.
struct Snapshot {
    time: Option<i64>,
    units: HashMap<String, Option<u64>>,
}

/// Estimates, for each component of `build` (same order), the probability that it
/// changes in the next build. `priors` are newest first.
///
/// Components are pooled by source package: siblings change together, and a renamed
/// package inherits its source's history.
pub fn estimate(build: &Build, priors: &[Layout]) -> Vec<Estimate> {
    let unit_of: HashMap<&str, &str> = build
        .components
        .iter()
        .map(|c| (c.name.as_str(), c.unit_key()))
        .collect();
    let snapshots = snapshots(build, priors, &unit_of);
    let weights = transition_weights(&snapshots);
    let interval = mean_interval_days(&snapshots, &weights);
    let observed = observe_units(&snapshots, &weights);
    let base = base_rate(&observed);
    let context = Context {
        base,
        interval_days: interval,
        changelog_until: build.timestamp().or_else(|| {
            build
                .components
                .iter()
                .flat_map(|c| c.changelog.iter().copied())
                .max()
        }),
    };

    let mut units: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in build.components.iter().enumerate() {
        units.entry(c.unit_key()).or_default().push(i);
    }
    let mut out = vec![
        Estimate {
            p: DEFAULT_P,
            basis: Basis::Default
        };
        build.components.len()
    ];
    for (unit, members) in units {
        let est = unit_estimate(build, &members, observed.get(unit), &context);
        for i in members {
            out[i] = est;
        }
    }
    out
}

/// What every unit's estimate shares.
struct Context {
    /// The stream's pooled change rate.
    base: f64,
    interval_days: f64,
    /// Changelog entries count within the year before this time.
    changelog_until: Option<i64>,
}

/// Observed weighted changes of one unit.
#[derive(Debug, Clone, Copy, Default)]
struct Observed {
    weight: f64,
    changed_weight: f64,
    transitions: u32,
    changes: u32,
}

fn snapshots(build: &Build, priors: &[Layout], unit_of: &HashMap<&str, &str>) -> Vec<Snapshot> {
    let current = fingerprint(
        build
            .components
            .iter()
            .map(|c| (c.unit_key(), c.name.as_str(), Some(c.version.as_str()))),
    );
    let mut out = vec![Snapshot {
        time: build.timestamp(),
        units: current,
    }];
    for prior in priors {
        let members = prior.layers.iter().flat_map(|l| &l.components).map(|c| {
            let unit = c
                .source
                .as_deref()
                .or_else(|| unit_of.get(c.name.as_str()).copied())
                .unwrap_or(&c.name);
            (unit, c.name.as_str(), c.version.as_deref())
        });
        out.push(Snapshot {
            time: prior.timestamp(),
            units: fingerprint(members),
        });
    }
    out
}

/// Fingerprints each unit's sorted `(name, version)` set; `None` if a version is unknown.
fn fingerprint<'a>(
    members: impl Iterator<Item = (&'a str, &'a str, Option<&'a str>)>,
) -> HashMap<String, Option<u64>> {
    let mut grouped: BTreeMap<&str, Vec<(&str, Option<&str>)>> = BTreeMap::new();
    for (unit, name, version) in members {
        grouped.entry(unit).or_default().push((name, version));
    }
    grouped
        .into_iter()
        .map(|(unit, mut pairs)| {
            pairs.sort_unstable();
            let known = pairs.iter().all(|(_, v)| v.is_some());
            let mut h = DefaultHasher::new();
            pairs.hash(&mut h);
            (unit.to_string(), known.then(|| h.finish()))
        })
        .collect()
}

/// The weight of each transition `snapshots[t + 1] → snapshots[t]`, newest first.
fn transition_weights(snapshots: &[Snapshot]) -> Vec<f64> {
    let newest = snapshots[0].time;
    let dated = snapshots.iter().all(|s| s.time.is_some());
    (0..snapshots.len().saturating_sub(1))
        .map(|t| match (dated, newest, snapshots[t].time) {
            (true, Some(now), Some(then)) => {
                let age_days = (now - then).max(0) as f64 / SECONDS_PER_DAY;
                0.5f64.powf(age_days / HALF_LIFE_DAYS)
            }
            _ => 0.5f64.powf(t as f64 / HALF_LIFE_BUILDS),
        })
        .collect()
}

/// The stream's weighted mean build interval in days.
fn mean_interval_days(snapshots: &[Snapshot], weights: &[f64]) -> f64 {
    let mut sum = 0.0;
    let mut total = 0.0;
    for (t, w) in weights.iter().enumerate() {
        if let (Some(new), Some(old)) = (snapshots[t].time, snapshots[t + 1].time) {
            sum += w * ((new - old).max(0) as f64 / SECONDS_PER_DAY);
            total += w;
        }
    }
    if total > 0.0 && sum > 0.0 {
        sum / total
    } else {
        DEFAULT_INTERVAL_DAYS
    }
}

fn observe_units<'a>(snapshots: &'a [Snapshot], weights: &[f64]) -> HashMap<&'a str, Observed> {
    let mut observed: HashMap<&str, Observed> = HashMap::new();
    for (t, w) in weights.iter().enumerate() {
        let changes = unit_changes(&snapshots[t], &snapshots[t + 1]);
        let changed = changes.iter().filter(|(_, c)| *c).count();
        if changed as f64 > MASS_CHANGE_FRACTION * changes.len() as f64 {
            continue;
        }
        for (unit, changed) in changes {
            let o = observed.entry(unit).or_default();
            o.weight += w;
            o.transitions += 1;
            if changed {
                o.changed_weight += w;
                o.changes += 1;
            }
        }
    }
    observed
}

/// Every unit present (with known versions) in both builds, and whether it changed.
fn unit_changes<'a>(new: &'a Snapshot, old: &Snapshot) -> Vec<(&'a str, bool)> {
    new.units
        .iter()
        .filter_map(|(unit, fp)| match (fp, old.units.get(unit)) {
            (Some(fp), Some(Some(old_fp))) => Some((unit.as_str(), fp != old_fp)),
            _ => None,
        })
        .collect()
}

/// The stream's pooled change rate, the guess for components nothing is known about.
fn base_rate(observed: &HashMap<&str, Observed>) -> f64 {
    let (changed, total) = observed
        .values()
        .fold((0.0, 0.0), |(c, t), o| (c + o.changed_weight, t + o.weight));
    if total > 0.0 {
        (changed / total).max(MIN_P)
    } else {
        DEFAULT_P
    }
}

fn unit_estimate(
    build: &Build,
    members: &[usize],
    observed: Option<&Observed>,
    context: &Context,
) -> Estimate {
    let comps = || members.iter().map(|&i| &build.components[i]);
    if let Some(days) = comps()
        .filter_map(|c| c.update_interval_days)
        .reduce(f64::min)
    {
        let p = 1.0 - (-context.interval_days / days).exp();
        return Estimate {
            p: p.clamp(MIN_P, 1.0),
            basis: Basis::Hint,
        };
    }
    let (guess, guess_basis) = cold_start(build, members, context);
    let Some(o) = observed.filter(|o| o.weight > 0.0) else {
        return Estimate {
            p: guess,
            basis: guess_basis,
        };
    };
    // "Generated content always changes" is only a cold-start assumption: once history
    // exists, it is shrunk towards the stream's base rate like everything else.
    let prior = if guess_basis == Basis::Generated {
        context.base
    } else {
        guess
    };
    let p = (o.changed_weight + PRIOR_WEIGHT * prior) / (o.weight + PRIOR_WEIGHT);
    Estimate {
        p: p.clamp(MIN_P, 1.0),
        basis: Basis::History {
            transitions: o.transitions,
            changes: o.changes,
        },
    }
}

/// The first guess before history: changelog rate, "always" for generated content,
/// else the stream's base rate.
fn cold_start(build: &Build, members: &[usize], context: &Context) -> (f64, Basis) {
    let comps = || members.iter().map(|&i| &build.components[i]);
    let has_changelog = comps().any(|c| !c.changelog.is_empty());
    if let (true, Some(until)) = (has_changelog, context.changelog_until) {
        let changes = changelog_days(comps().flat_map(|c| &c.changelog), until);
        let rate = changes as f64 / 365.0;
        let p = 1.0 - (-rate * context.interval_days).exp();
        return (
            p.clamp(MIN_P, 1.0),
            Basis::Changelog {
                changes_last_year: changes,
            },
        );
    }
    if comps().any(|c| c.kind == ComponentKind::Generated) {
        return (1.0, Basis::Generated);
    }
    (context.base, Basis::Default)
}

/// Distinct days with a changelog entry within the year before `until`.
fn changelog_days<'a>(entries: impl Iterator<Item = &'a i64>, until: i64) -> u32 {
    let year = 365 * 86_400;
    let mut days: Vec<i64> = entries
        .filter(|&&t| t <= until && until - t < year)
        .map(|t| t.div_euclid(86_400))
        .collect();
    days.sort_unstable();
    days.dedup();
    days.len() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::Component;
    use crate::layout::{LayoutComponent, LayoutLayer};

    pub(crate) fn comp(name: &str, version: &str, size: u64) -> Component {
        Component {
            name: name.into(),
            version: version.into(),
            size,
            source: None,
            changelog: vec![],
            update_interval_days: None,
            kind: ComponentKind::Package,
        }
    }

    fn layout(comps: &[(&str, &str)]) -> Layout {
        Layout {
            origin: String::new(),
            date: None,
            generation: None,
            layers: vec![LayoutLayer::planned(
                comps
                    .iter()
                    .map(|(n, v)| LayoutComponent {
                        name: n.to_string(),
                        version: Some(v.to_string()),
                        size: 1,
                        source: None,
                    })
                    .collect(),
            )],
        }
    }

    #[test]
    fn history_separates_volatile_from_stable() {
        let build = Build {
            date: None,
            components: vec![comp("hot", "9", 1), comp("cold", "1", 1)],
        };
        let priors: Vec<Layout> = (0..8)
            .map(|i| layout(&[("hot", &(8 - i).to_string()), ("cold", "1")]))
            .collect();
        let est = estimate(&build, &priors);
        assert!(est[0].p > 0.8, "{:?}", est[0]);
        assert!(est[1].p < 0.2, "{:?}", est[1]);
        assert!(matches!(
            est[0].basis,
            Basis::History {
                transitions: 8,
                changes: 8
            }
        ));
    }

    #[test]
    fn siblings_share_their_source_history() {
        let mut a = comp("libfoo", "2", 1);
        a.source = Some("foo".into());
        let mut b = comp("foo-tools", "2", 1);
        b.source = Some("foo".into());
        let build = Build {
            date: None,
            components: vec![a, b],
        };
        // Only libfoo existed before; the renamed sibling inherits its history.
        let priors = vec![
            layout(&[("libfoo", "1"), ("bar", "1"), ("baz", "1")]),
            layout(&[("libfoo", "0"), ("bar", "1"), ("baz", "1")]),
        ];
        let est = estimate(&build, &priors);
        assert_eq!(est[0].p, est[1].p);
        assert!(matches!(est[1].basis, Basis::History { .. }));
    }

    #[test]
    fn hints_override_and_changelogs_start_cold() {
        let mut hinted = comp("hinted", "1", 1);
        hinted.update_interval_days = Some(7.0);
        let mut logged = comp("logged", "1", 1);
        let now = 1_700_000_000;
        logged.changelog = (0..50).map(|d| now - d * 86_400).collect();
        let mut quiet = comp("quiet", "1", 1);
        quiet.changelog = vec![now - 3 * 365 * 86_400];
        let gen = Component {
            kind: ComponentKind::Generated,
            ..comp("initramfs", "1", 1)
        };
        let build = Build {
            date: None,
            components: vec![hinted, logged, quiet, gen],
        };
        let est = estimate(&build, &[]);
        assert_eq!(est[0].basis, Basis::Hint);
        assert!((est[0].p - (1.0 - (-1.0f64).exp())).abs() < 1e-9);
        assert!(est[1].p > est[2].p);
        assert_eq!(est[3].p, 1.0);
    }
}

//! Edge cases and properties of the planner.

use std::collections::{BTreeSet, HashSet};

use proptest::prelude::*;

use super::*;
use crate::components::{Build, Component, ComponentKind};

fn comp(name: &str, version: &str, size: u64, source: Option<&str>) -> Component {
    Component {
        name: name.into(),
        version: version.into(),
        size,
        source: source.map(str::to_string),
        changelog: vec![],
        update_interval_days: None,
        kind: ComponentKind::Package,
    }
}

fn build(comps: Vec<Component>) -> Build {
    Build {
        date: None,
        components: comps,
    }
}

fn opts(n: usize) -> PlanOptions {
    PlanOptions {
        max_layers: n,
        ..PlanOptions::default()
    }
}

/// A stream of `builds` builds of `n` components; component i changes independently
/// in each build with a probability of 2, 5, 20, 50 or 90 % by `i % 5`.
fn stream(n: usize, builds: usize) -> Vec<Build> {
    const PERCENT: [u64; 5] = [2, 5, 20, 50, 90];
    let mut versions = vec![0u64; n];
    (0..builds)
        .map(|b| {
            for (i, v) in versions.iter_mut().enumerate() {
                let roll = (i as u64 * 2_654_435_761 + b as u64 * 40_503)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    >> 57;
                if roll < PERCENT[i % 5] * 128 / 100 {
                    *v += 1;
                }
            }
            build(
                (0..n)
                    .map(|i| {
                        comp(
                            &format!("c{i:03}"),
                            &versions[i].to_string(),
                            1000 + (i as u64 * 7919) % 50_000,
                            None,
                        )
                    })
                    .collect(),
            )
        })
        .collect()
}

/// Plans each build with the layouts before it, newest first; returns every plan.
fn replay(builds: &[Build], o: &PlanOptions) -> Vec<Plan> {
    let mut layouts: Vec<Layout> = Vec::new();
    let mut plans = Vec::new();
    for b in builds {
        let priors: Vec<Layout> = layouts.iter().rev().cloned().collect();
        let p = plan(b, &priors, o).unwrap();
        layouts.push(p.layout());
        plans.push(p);
    }
    plans
}

fn assert_covers_once(b: &Build, p: &Plan) {
    let mut names: Vec<&str> = p
        .layers
        .iter()
        .flat_map(|l| &l.components)
        .chain(&p.patch_members)
        .map(|c| c.name.as_str())
        .collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = b.components.iter().map(|c| c.name.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(names, expected);
}

#[test]
fn layer_counts_outside_the_limits_are_refused() {
    let b = build(vec![comp("a", "1", 1, None)]);
    assert_eq!(
        plan(&b, &[], &opts(1)).unwrap_err(),
        PlanError::TooFewLayers(1)
    );
    assert_eq!(
        plan(&b, &[], &opts(128)).unwrap_err(),
        PlanError::TooManyLayers(128)
    );
    let over = PlanOptions {
        allow_over_127: true,
        ..opts(128)
    };
    assert!(plan(&b, &[], &over).is_ok());
}

#[test]
fn fewer_components_than_layers_get_a_layer_each() {
    let b = build(vec![
        comp("a", "1", 10, None),
        comp("b", "1", 20, None),
        comp("c", "1", 30, None),
    ]);
    let p = plan(&b, &[], &opts(64)).unwrap();
    assert_eq!(p.layers.len(), 3);
    assert!(p.layers.iter().all(|l| l.components.len() == 1));
    assert!(p.decisions.iter().all(|d| d.action == Action::Placed));
}

#[test]
fn a_giant_component_is_kept_apart_from_the_small_ones() {
    let builds: Vec<Build> = (0..6)
        .map(|v| {
            let mut comps: Vec<Component> = (0..20)
                .map(|i| comp(&format!("s{i}"), &v.to_string(), 10, None))
                .collect();
            comps.push(comp("giant", "1", 1_000_000, None));
            build(comps)
        })
        .collect();
    let plans = replay(&builds, &opts(2));
    let last = plans.last().unwrap();
    let giant = last
        .layers
        .iter()
        .find(|l| l.components.iter().any(|c| c.name == "giant"))
        .unwrap();
    assert_eq!(
        giant.components.len(),
        1,
        "the stable giant must not ride with volatile members"
    );
    assert!(giant.reused);
}

#[test]
fn components_that_always_change_still_give_a_valid_plan() {
    let builds: Vec<Build> = (0..5)
        .map(|v| {
            build(
                (0..10)
                    .map(|i| comp(&format!("c{i}"), &v.to_string(), 100, None))
                    .collect(),
            )
        })
        .collect();
    let plans = replay(&builds, &opts(4));
    for (b, p) in builds.iter().zip(&plans) {
        assert_covers_once(b, p);
        assert!(p.layers.len() <= 4);
    }
    let last = plans.last().unwrap();
    assert_eq!(last.prediction.download.download_bytes, 1000);
    assert_eq!(last.prediction.download.lower_bound_bytes, 1000);
}

#[test]
fn a_prior_with_more_layers_than_the_cap_is_merged_down() {
    let b = build(
        (0..30)
            .map(|i| comp(&format!("c{i:02}"), "1", 100 + i, None))
            .collect(),
    );
    let wide = plan(&b, &[], &opts(30)).unwrap();
    assert_eq!(wide.layers.len(), 30);
    let narrow = plan(&b, &[wide.layout()], &opts(8)).unwrap();
    assert!(narrow.layers.len() <= 8);
    assert_covers_once(&b, &narrow);
    assert!(narrow
        .decisions
        .iter()
        .any(|d| d.reason.contains("to fit the cap of 8 layers")));
    assert!(
        narrow.layers.iter().filter(|l| l.reused).count() >= 1,
        "the largest layers stay"
    );
}

#[test]
fn components_gone_from_the_build_are_removed() {
    let before = build(vec![
        comp("a", "1", 10, None),
        comp("gone", "1", 10, None),
        comp("b", "1", 10, None),
    ]);
    let first = plan(&before, &[], &opts(2)).unwrap();
    let after = build(vec![comp("a", "1", 10, None), comp("b", "1", 10, None)]);
    let p = plan(&after, &[first.layout()], &opts(2)).unwrap();
    assert_covers_once(&after, &p);
    let d = p.decisions.iter().find(|d| d.component == "gone").unwrap();
    assert_eq!(d.action, Action::Removed);
    assert!(d.layer.is_none() && d.prior_layer.is_some());
}

#[test]
fn a_renamed_package_joins_its_source_siblings() {
    let mut builds: Vec<Build> = (0..5)
        .map(|v| {
            build(vec![
                comp("libfoo", &v.to_string(), 100, Some("foo")),
                comp("foo-old", &v.to_string(), 100, Some("foo")),
                comp("bar", "1", 100, None),
                comp("baz", "1", 100, None),
            ])
        })
        .collect();
    builds.push(build(vec![
        comp("libfoo", "5", 100, Some("foo")),
        comp("foo-new", "5", 100, Some("foo")),
        comp("bar", "1", 100, None),
        comp("baz", "1", 100, None),
    ]));
    let plans = replay(&builds, &opts(2));
    let last = plans.last().unwrap();
    let d = last
        .decisions
        .iter()
        .find(|d| d.component == "foo-new")
        .unwrap();
    assert_eq!(d.action, Action::Placed);
    assert!(matches!(d.estimate, Some(Basis::History { .. })), "{d:?}");
    assert!(d.reason.contains("source-package siblings"), "{}", d.reason);
    let layer_of = |n: &str| {
        last.decisions
            .iter()
            .find(|d| d.component == n)
            .unwrap()
            .layer
    };
    assert_eq!(layer_of("foo-new"), layer_of("libfoo"));
    assert_eq!(
        last.decisions
            .iter()
            .find(|d| d.component == "foo-old")
            .unwrap()
            .action,
        Action::Removed
    );
}

#[test]
fn volatile_components_end_up_in_the_last_layers() {
    let plans = replay(&stream(40, 12), &opts(6));
    let last = plans.last().unwrap();
    let p: Vec<f64> = last.layers.iter().map(|l| l.change_probability).collect();
    assert!(p.windows(2).all(|w| w[0] <= w[1]), "{p:?}");
}

#[test]
fn history_beats_the_baselines_on_a_synthetic_stream() {
    use crate::bench::baselines::StrategyName;
    use crate::bench::replay::{replay as bench_replay, ReplayOptions};
    let builds = stream(60, 24);
    let ro = ReplayOptions {
        warmup: 10,
        history_depth: 100,
    };
    let mean = |name: StrategyName| {
        let mut s = name.build(&opts(8), 0);
        bench_replay(&builds, s.as_mut(), &ro, |_| {}).mean_download_bytes
    };
    let strata = mean(StrategyName::Strata);
    for baseline in [
        StrategyName::Single,
        StrategyName::LargestFirst,
        StrategyName::OstreeExtPrior,
        StrategyName::Chunkah,
    ] {
        let other = mean(baseline);
        assert!(strata < other, "strata {strata} vs {baseline} {other}");
    }
}

#[test]
fn ostree_ext_prior_packs_afresh_until_it_freezes() {
    use crate::bench::baselines::StrategyName;
    let builds = stream(8, 4);
    let names = |l: &Layout| -> Vec<Vec<String>> {
        l.layers
            .iter()
            .map(|x| x.components.iter().map(|c| c.name.clone()).collect())
            .collect()
    };
    let (mut fresh, mut prior) = (
        StrategyName::OstreeExt.build(&opts(4), 0),
        StrategyName::OstreeExtPrior.build(&opts(4), 2),
    );
    let mut layouts: Vec<Layout> = Vec::new();
    for (k, b) in builds.iter().enumerate() {
        let priors: Vec<Layout> = layouts.iter().rev().cloned().collect();
        let ours = prior.layout(b, &priors);
        if k < 2 {
            assert_eq!(names(&ours), names(&fresh.layout(b, &priors)), "build {k}");
        } else {
            let grouping = |l: &Layout| {
                let mut g = names(l);
                g.iter_mut().for_each(|x| x.sort());
                g
            };
            assert_eq!(grouping(&ours), grouping(&layouts[1]), "frozen at build 2");
        }
        layouts.push(ours);
    }
}

#[test]
fn an_unknown_prior_version_rewrites_that_layer() {
    let b = build(vec![comp("a", "1", 10, None), comp("b", "1", 10, None)]);
    let mut prior = plan(&b, &[], &opts(2)).unwrap().layout();
    prior.layers[0].components[0].version = None;
    let p = plan(&b, &[prior], &opts(2)).unwrap();
    assert_eq!(p.layers.iter().filter(|l| l.reused).count(), 1);
    assert!(p
        .decisions
        .iter()
        .any(|d| d.reason.contains("did not record")));
}

fn arb_build() -> impl Strategy<Value = Build> {
    prop::collection::btree_map(
        "[a-z]{1,6}",
        (0u8..4, 0u64..5_000, prop::option::of(0u8..6)),
        1..60,
    )
    .prop_map(|m| {
        build(
            m.into_iter()
                .map(|(name, (v, size, src))| {
                    let source = src.map(|s| format!("src{s}"));
                    comp(&name, &v.to_string(), size, source.as_deref())
                })
                .collect(),
        )
    })
}

/// `b` with the components picked by `mask` bumped to a new version.
fn bump(b: &Build, mask: &[bool]) -> Build {
    let mut next = b.clone();
    for (c, &m) in next.components.iter_mut().zip(mask.iter().cycle()) {
        if m {
            c.version.push('+');
        }
    }
    next
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn plans_cover_every_component_once_within_the_cap(
        b in arb_build(), n in 2usize..12, mask in prop::collection::vec(any::<bool>(), 1..8),
    ) {
        let first = plan(&b, &[], &opts(n)).unwrap();
        let next = bump(&b, &mask);
        let second = plan(&next, &[first.layout()], &opts(n)).unwrap();
        for (build, p) in [(&b, &first), (&next, &second)] {
            prop_assert!(p.layers.len() <= n);
            let names: Vec<&str> = p.layers.iter().flat_map(|l| &l.components).map(|c| c.name.as_str()).collect();
            let unique: BTreeSet<&str> = names.iter().copied().collect();
            prop_assert_eq!(names.len(), build.components.len());
            prop_assert_eq!(unique.len(), build.components.len());
        }
    }

    #[test]
    fn plans_are_deterministic(b in arb_build(), n in 2usize..12) {
        let first = plan(&b, &[], &opts(n)).unwrap();
        let again = plan(&b, &[], &opts(n)).unwrap();
        prop_assert_eq!(serde_json::to_string(&first).unwrap(), serde_json::to_string(&again).unwrap());
        let next = bump(&b, &[true, false, false]);
        let a = plan(&next, &[first.layout()], &opts(n)).unwrap();
        let b2 = plan(&next, &[first.layout()], &opts(n)).unwrap();
        prop_assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b2).unwrap());
    }

    #[test]
    fn an_unchanged_build_reuses_every_layer(b in arb_build(), n in 2usize..12) {
        let first = plan(&b, &[], &opts(n)).unwrap();
        let again = plan(&b, &[first.layout()], &opts(n)).unwrap();
        prop_assert!(again.layers.iter().all(|l| l.reused));
        prop_assert_eq!(again.layers.len(), first.layers.len());
        prop_assert_eq!(again.prediction.download.download_bytes, 0);
    }

    /// Unless a re-plan pays off (and says so), which `never` forbids.
    #[test]
    fn one_change_rewrites_only_the_layers_holding_it(
        b in arb_build(), n in 2usize..12, pick in any::<prop::sample::Index>(), never in any::<bool>(),
    ) {
        let o = PlanOptions {
            repack: if never { RepackPolicy::Never } else { RepackPolicy::Auto },
            ..opts(n)
        };
        let first = plan(&b, &[], &o).unwrap();
        let changed = pick.index(b.components.len());
        let mut mask = vec![false; b.components.len()];
        mask[changed] = true;
        let next = bump(&b, &mask);
        let second = plan(&next, &[first.layout()], &o).unwrap();
        prop_assert!(!(never && second.repack.performed));
        if second.repack.performed {
            prop_assert!(second.repack.reason.starts_with("re-planned"));
            return Ok(());
        }
        let name = &b.components[changed].name;
        let holding: HashSet<&str> = first
            .layers
            .iter()
            .filter(|l| l.components.iter().any(|c| &c.name == name))
            .map(|l| l.id.as_str())
            .collect();
        let kept: HashSet<&str> = second.layers.iter().filter(|l| l.reused).map(|l| l.id.as_str()).collect();
        for l in &first.layers {
            prop_assert!(holding.contains(l.id.as_str()) || kept.contains(l.id.as_str()),
                "layer {} lost though it does not hold {}", l.index, name);
        }
    }
}

/// `plan` as a built image's manifest gives it back: every layer with a blob.
fn built(p: &Plan) -> Layout {
    let mut layout = p.layout();
    for (l, layer) in layout.layers.iter_mut().enumerate() {
        layer.digest = Some(format!("sha256:{:064x}", l + 1));
        layer.blob_size = Some(layer.size / 2);
    }
    layout
}

fn superseding(n: usize) -> PlanOptions {
    PlanOptions {
        supersede: true,
        ..opts(n)
    }
}

/// A big layer that lost one member and saw another updated is kept byte for byte:
/// the new version goes above it, and the plan says why.
#[test]
fn a_changed_layer_is_kept_and_superseded_from_above() {
    let first = build(vec![
        comp("big", "1", 8_000_000, None),
        comp("tool", "1", 100_000, None),
        comp("lib", "1", 200_000, None),
    ]);
    let p1 = plan(&first, &[], &superseding(3)).unwrap();
    assert_eq!(
        p1.layers.len(),
        2,
        "one slot stays free for the patch layer"
    );
    let holding = |p: &Plan, name: &str| {
        p.layers
            .iter()
            .position(|l| l.components.iter().any(|c| c.name == name))
    };
    // Everything in one layer, as a small cap would make it.
    let one = first.components.iter().map(|c| LayoutComponent {
        name: c.name.clone(),
        version: Some(c.version.clone()),
        size: c.size,
        source: None,
    });
    let prior = Layout {
        layers: vec![LayoutLayer {
            components: one.collect(),
            size: 8_300_000,
            blob_size: Some(4_000_000),
            digest: Some(format!("sha256:{:064x}", 7)),
            commit_layer: false,
            superseded: Vec::new(),
            patch_layer: false,
        }],
        ..Layout::default()
    };
    let second = build(vec![
        comp("big", "1", 8_000_000, None),
        comp("lib", "2", 210_000, None),
    ]);
    let p2 = plan(&second, std::slice::from_ref(&prior), &superseding(3)).unwrap();
    let kept = &p2.layers[0];
    assert_eq!(
        kept.kept_blob.as_ref().unwrap().digest,
        prior.layers[0].digest.clone().unwrap()
    );
    assert!(kept.reused, "the kept layer is the prior's blob");
    let stale: Vec<&str> = kept.superseded.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(stale, ["lib", "tool"]);
    assert!(holding(&p2, "lib").unwrap() > 0, "the new version is above");
    assert_eq!(p2.prediction.download.reused_layers, 1);
    let lib = p2.decisions.iter().find(|d| d.component == "lib").unwrap();
    assert!(lib.reason.contains("kept layer 0"), "{}", lib.reason);
    let tool = p2.decisions.iter().find(|d| d.component == "tool").unwrap();
    assert_eq!(tool.action, Action::Removed);
    assert!(tool.reason.contains("kept layer 0"), "{}", tool.reason);

    // Without superseding, the layer is rewritten.
    let plain = plan(&second, &[prior], &opts(3)).unwrap();
    assert!(plain
        .layers
        .iter()
        .all(|l| l.superseded.is_empty() && !l.reused));
}

/// A prior built with every slot taken: `base` alone, and a layer of `rest`.
fn full_prior(base: Component, rest: &[&Component]) -> Layout {
    let recorded = |c: &Component| LayoutComponent {
        name: c.name.clone(),
        version: Some(c.version.clone()),
        size: c.size,
        source: None,
    };
    let layer = |n: u64, members: Vec<LayoutComponent>| {
        let mut l = LayoutLayer::planned(members);
        l.blob_size = Some(l.size / 2);
        l.digest = Some(format!("sha256:{n:064x}"));
        l
    };
    Layout {
        layers: vec![
            layer(1, vec![recorded(&base)]),
            layer(2, rest.iter().map(|c| recorded(c)).collect()),
        ],
        ..Layout::default()
    }
}

/// With every slot taken, the new versions of a kept layer's small, changing members
/// ride in the patch layer rather than reopen a layer; the next build, with nothing
/// changed, reuses every layer and carries them again.
#[test]
fn with_every_slot_taken_changed_members_ride_in_the_patch_layer() {
    let base = comp("base", "1", 8_000_000, None);
    let cold = comp("cold", "1", 1_400_000, None);
    // Three earlier builds in which `status` and `log` changed every time.
    let at = |v: &str| {
        full_prior(
            base.clone(),
            &[
                &cold,
                &comp("status", v, 100_000, None),
                &comp("log", v, 100_000, None),
            ],
        )
    };
    let history = [at("1"), at("0.2"), at("0.1")];
    let prior = history[0].clone();
    let second = build(vec![
        base,
        cold,
        comp("status", "2", 100_000, None),
        comp("log", "2", 110_000, None),
    ]);
    let p2 = plan(&second, &history, &superseding(3)).unwrap();
    let carried: Vec<&str> = p2.patch_members.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(carried, ["log", "status"]);
    assert_eq!(p2.layers.len(), 2);
    assert!(p2.layers.iter().all(|l| l.reused), "no layer is rewritten");
    let stale: Vec<&str> = p2.layers[0]
        .superseded
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(stale, ["log", "status"], "kept layers come first");
    assert!(
        p2.repack.reason.contains("patch layer on top carries 2"),
        "{}",
        p2.repack.reason
    );
    let status = p2
        .decisions
        .iter()
        .find(|d| d.component == "status")
        .unwrap();
    assert_eq!(status.action, Action::Updated);
    assert_eq!(status.layer, Some(2), "the patch layer is above the two");
    assert!(
        status.reason.contains("carried in the patch layer"),
        "{}",
        status.reason
    );
    let layout = p2.layout();
    assert!(layout.layers[2].patch_layer);
    assert_eq!(layout.patch_members().len(), 2);
    assert_covers_once(&second, &p2);

    // Read back from a plan file, the patch layer carries the same; a crafted file
    // that has it carry a component a layer holds too is refused.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.json");
    std::fs::write(&file, serde_json::to_vec(&p2).unwrap()).unwrap();
    assert_eq!(
        Layout::read(&file).unwrap().patch_members(),
        &p2.patch_members[..]
    );
    let mut crafted = serde_json::to_value(&p2).unwrap();
    crafted["patch_members"][0] = crafted["layers"][1]["components"][0].clone();
    std::fs::write(&file, crafted.to_string()).unwrap();
    let err = Layout::read(&file).unwrap_err().to_string();
    assert!(err.contains("already in layer"), "{err}");

    let p3 = plan(&second, &[built(&p2), prior], &superseding(3)).unwrap();
    assert!(
        p3.repack.reason.contains("no layer changed"),
        "{}",
        p3.repack.reason
    );
    assert_eq!(p3.patch_members, p2.patch_members);
    assert!(p3.layers.iter().all(|l| l.reused));
    assert_eq!(
        p3.prediction.download.download_bytes, 0,
        "the patch layer is the same"
    );
    let status = p3
        .decisions
        .iter()
        .find(|d| d.component == "status")
        .unwrap();
    assert_eq!(status.action, Action::Kept);
    assert_eq!(status.prior_layer, Some(2));
}

/// A large new version does not ride in the patch layer, which is downloaded again
/// whenever anything in it changes: the smallest layer is reopened for it instead.
#[test]
fn a_large_new_version_reopens_a_layer_rather_than_ride() {
    let small = comp("small", "1", 100_000, None);
    let prior = full_prior(
        small.clone(),
        &[
            &comp("base", "1", 20_000_000, None),
            &comp("big", "1", 3_000_000, None),
        ],
    );
    let second = build(vec![
        small,
        comp("base", "1", 20_000_000, None),
        comp("big", "2", 3_000_000, None),
    ]);
    let p = plan(&second, &[prior], &superseding(3)).unwrap();
    assert!(p.patch_members.is_empty());
    assert_covers_once(&second, &p);
    assert!(
        p.layers.iter().any(|l| !l.superseded.is_empty()),
        "the big layer is kept"
    );
}

/// A layer most of whose bytes changed is rewritten, not kept.
#[test]
fn a_mostly_changed_layer_is_rewritten() {
    let first = build(vec![
        comp("a", "1", 1_000, None),
        comp("b", "1", 9_000, None),
    ]);
    let prior = built(&plan(&first, &[], &superseding(2)).unwrap());
    let second = build(vec![
        comp("a", "1", 1_000, None),
        comp("b", "2", 9_000, None),
    ]);
    let p = plan(&second, &[prior], &superseding(3)).unwrap();
    assert!(p.layers.iter().all(|l| l.superseded.is_empty()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Over a stream, superseding keeps every component live exactly once, puts kept
    /// layers below whatever supersedes them, and keeps stale bytes within a fifth of
    /// the image.
    #[test]
    fn superseding_stays_sound_over_a_stream(n in 20usize..80, cap in 4usize..12, builds in 3usize..8) {
        let stream = stream(n, builds);
        let o = superseding(cap);
        let mut layouts: Vec<Layout> = Vec::new();
        for b in &stream {
            let priors: Vec<Layout> = layouts.iter().rev().cloned().collect();
            let p = plan(b, &priors, &o).unwrap();
            assert_covers_once(b, &p);
            prop_assert!(p.layers.len() < cap);
            let stale: u64 = p.layers.iter().flat_map(|l| &l.superseded).map(|c| c.size).sum();
            let image: u64 = b.components.iter().map(|c| c.size).sum();
            prop_assert!(stale as f64 <= image as f64 * 0.2 + 1.0);
            for (k, layer) in p.layers.iter().enumerate() {
                for old in &layer.superseded {
                    let live = p.layers.iter().position(|l| l.components.iter().any(|c| c.name == old.name));
                    prop_assert!(live.is_none_or(|at| at > k), "{} superseded in {k} but live below", old.name);
                }
            }
            layouts.push(built(&p));
        }
    }
}

/// `--plan FILE` builds only the tree the plan was made for: a changed version, a
/// component gone or one added is named in the error.
#[test]
fn a_fixed_plan_is_checked_against_the_tree() {
    let made_for = build(vec![comp("a", "1", 10, None), comp("b", "1", 20, None)]);
    let fixed = plan(&made_for, &[], &opts(4)).unwrap();
    assert!(fixed.check_matches(&made_for).is_ok());
    let names = |b: Build| match fixed.check_matches(&b) {
        Err(PlanError::Mismatch { component }) => component,
        other => panic!("expected a mismatch, got {other:?}"),
    };
    let updated = build(vec![comp("a", "1", 10, None), comp("b", "2", 20, None)]);
    assert_eq!(names(updated), "b");
    assert_eq!(names(build(vec![comp("a", "1", 10, None)])), "b");
    let added = build(vec![
        comp("a", "1", 10, None),
        comp("b", "1", 20, None),
        comp("c", "1", 5, None),
    ]);
    assert_eq!(names(added), "c");

    // A crafted plan that also has the patch layer carry `a` is refused.
    let mut twice = fixed.clone();
    twice.patch_members = twice.layers[0].components.clone();
    assert!(matches!(
        twice.check_matches(&made_for),
        Err(PlanError::Duplicate { .. })
    ));
}

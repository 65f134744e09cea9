//! Plan: which components go into which layer, and why.
//!
//! The planner is a pure function of the new build, the prior layouts and the options.
//! It keeps every prior layer whose content is unchanged, regroups the content of
//! layers that change anyway (at no extra download), places new components where
//! they add the least expected cost, and re-plans from scratch only when the saving
//! over the horizon pays for the layers a re-plan rewrites. It does no I/O.

mod decide;
mod fixed;
pub mod partition;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::bytes::human_bytes;
use crate::components::{Build, Component};
use crate::history::{self, Basis, Estimate};
use crate::layout::download::{diff_layouts, LayoutDiff};
use crate::layout::{content_key, layer_key, Layout, LayoutComponent, LayoutLayer};
use partition::{Group, Item};

/// The layer count used when none is given (rpm-ostree's default too).
pub const DEFAULT_MAX_LAYERS: usize = 64;
/// Registries and container storage refuse images with more layers than this.
pub const REGISTRY_LAYER_LIMIT: usize = 127;
/// Future builds over which a re-plan must pay for itself.
pub const DEFAULT_HORIZON: f64 = 8.0;
/// What fetching one more layer costs a client beyond its bytes (a request, a
/// manifest entry, an unpack), counted against a re-plan.
pub const LAYER_OVERHEAD_BYTES: u64 = 64 << 10;
/// The version tag of the plan JSON format.
pub const PLAN_SCHEMA: &str = "strata.plan/v1";

/// When the planner may throw the prior layout away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RepackPolicy {
    /// Re-plan when the expected saving over the horizon exceeds its one-time cost.
    Auto,
    /// Never rewrite an unchanged layer (except to fit a smaller layer cap).
    Never,
    /// Plan every build from scratch.
    Always,
}

/// What the planner is asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    /// Most layers the image may have, the patch layer's slot included.
    pub max_layers: usize,
    /// When the prior layout may be thrown away.
    pub repack: RepackPolicy,
    /// Future builds over which a re-plan must pay for itself.
    pub horizon: f64,
    /// Permit more than [`REGISTRY_LAYER_LIMIT`] layers.
    pub allow_over_127: bool,
    /// Keep a prior layer whose members changed or went, byte for byte, when a layer
    /// above can supersede its stale members (their new versions, and whiteouts in a
    /// patch layer). Needs the prior blobs and a plain image; takes one slot for the
    /// patch layer.
    pub supersede: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            max_layers: DEFAULT_MAX_LAYERS,
            repack: RepackPolicy::Auto,
            horizon: DEFAULT_HORIZON,
            allow_over_127: false,
            supersede: false,
        }
    }
}

/// Options the planner refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// Fewer than two layers asked for.
    #[error("--max-layers {0}: at least 2 layers are needed (one stable, one volatile)")]
    TooFewLayers(usize),
    #[error(
        "--max-layers {0}: registries and container storage refuse images with more than \
         {REGISTRY_LAYER_LIMIT} layers; pass --allow-over-127 if your clients accept them"
    )]
    /// More than the registries' limit asked for, without `allow_over_127`.
    TooManyLayers(usize),
    /// A horizon that is not a positive number.
    #[error("--horizon {0}: must be a positive number of builds")]
    BadHorizon(f64),
    #[error(
        "the given plan does not match the source (component {component:?} differs); \
         the source changed after it was planned"
    )]
    /// A fixed plan names a component the build lacks or holds at another version.
    Mismatch {
        /// The first component that differs.
        component: String,
    },
    #[error("the given plan places component {component:?} twice; it was not made by Strata")]
    /// A fixed plan places a component in two layers (or a layer and the patch layer).
    Duplicate {
        /// The component placed twice.
        component: String,
    },
}

impl PlanOptions {
    /// Refuses options no plan can meet, naming the flag.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.max_layers < 2 {
            return Err(PlanError::TooFewLayers(self.max_layers));
        }
        if self.max_layers > REGISTRY_LAYER_LIMIT && !self.allow_over_127 {
            return Err(PlanError::TooManyLayers(self.max_layers));
        }
        if !(self.horizon.is_finite() && self.horizon > 0.0) {
            return Err(PlanError::BadHorizon(self.horizon));
        }
        Ok(())
    }
}

/// The planner's output: the layers, a decision per component, and predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`PLAN_SCHEMA`], so readers can refuse a format they do not know.
    pub schema: String,
    /// The build's date, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// The layer cap the plan was made for.
    pub max_layers: usize,
    /// Most stable first.
    pub layers: Vec<PlannedLayer>,
    /// Components the patch layer on top carries instead of a layer of their own:
    /// when every slot is taken, the new versions of a kept layer's members cost less
    /// there than a reopened layer would. Empty in most plans.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patch_members: Vec<LayoutComponent>,
    /// One per component of the build and per component removed since the prior, by name.
    pub decisions: Vec<Decision>,
    /// Whether the prior layout was kept or re-planned, and why.
    pub repack: RepackDecision,
    /// What clients are expected to download.
    pub prediction: Prediction,
}

/// One layer of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedLayer {
    /// Its place in the image, bottom first.
    pub index: usize,
    /// Content key: equal ids mean byte-identical layers.
    pub id: String,
    /// Uncompressed bytes.
    pub size: u64,
    /// Probability that some member changes in the next build.
    pub change_probability: f64,
    /// The newest prior build has this exact layer.
    pub reused: bool,
    /// Its live members.
    pub components: Vec<LayoutComponent>,
    /// Members the layer still holds, superseded from above (see
    /// [`PlanOptions::supersede`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<LayoutComponent>,
    /// The prior blob to copy as is: set when the layer holds superseded members, whose
    /// files the new tree no longer has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_blob: Option<KeptBlob>,
}

/// A prior layer blob a plan keeps byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptBlob {
    /// The blob's digest in the prior image.
    pub digest: String,
    /// Compressed bytes, as the prior's manifest gives them.
    pub size: u64,
}

/// What the plan did with one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Its layer is the prior build's, unchanged.
    Kept,
    /// A new version; in a layer that is rewritten anyway.
    Updated,
    /// New in this build.
    Placed,
    /// Unchanged, but now in a different layer.
    Moved,
    /// Gone since the prior build.
    Removed,
}

/// One component's place in the plan, and why it is there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The component's name.
    pub component: String,
    /// What was done with it.
    pub action: Action,
    /// Index in this plan; absent for removed components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    /// Index in the prior build, when it was there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_layer: Option<usize>,
    /// Its estimated probability of changing in the next build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_probability: Option<f64>,
    /// What that estimate rests on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Basis>,
    /// The decision in words, with the figures behind it.
    pub reason: String,
}

/// Whether the prior layout was kept or re-planned, with the figures weighed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepackDecision {
    /// The policy asked for.
    pub policy: RepackPolicy,
    /// Whether the layout was planned afresh.
    pub performed: bool,
    /// The decision in words.
    pub reason: String,
    /// Expected bytes per update the sticky layout costs.
    pub sticky_expected_bytes: f64,
    /// Expected bytes per update a fresh plan costs.
    pub fresh_expected_bytes: f64,
    /// Extra bytes clients download once if the fresh plan replaces the sticky one.
    pub one_time_cost_bytes: u64,
    /// The builds over which the saving was counted.
    pub horizon: f64,
}

/// What clients are expected to download, now and next time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// What this build makes clients of the newest prior download (all of it without one).
    pub download: LayoutDiff,
    /// Expected bytes per update from this layout to the next build.
    pub expected_next_update_bytes: f64,
}

impl Plan {
    /// This plan as a prior build's layout, for the next build.
    pub fn layout(&self) -> Layout {
        let mut layout = Layout {
            origin: String::new(),
            date: self.date.clone(),
            generation: None,
            layers: self
                .layers
                .iter()
                .map(|l| LayoutLayer {
                    components: l.components.clone(),
                    size: l.size,
                    blob_size: None,
                    digest: l.kept_blob.as_ref().map(|k| k.digest.clone()),
                    commit_layer: false,
                    superseded: l.superseded.clone(),
                    patch_layer: false,
                })
                .collect(),
        };
        layout.push_patch(self.patch_members.clone());
        layout
    }
}

/// Plans the layers of `build` given the stream's `priors`, newest first.
pub fn plan(build: &Build, priors: &[Layout], opts: &PlanOptions) -> Result<Plan, PlanError> {
    opts.validate()?;
    let estimates = history::estimate(build, priors);
    // Superseding needs a slot for the patch layer, kept from the first build on so
    // the second need not reopen a layer for it.
    let supersede = opts.supersede && opts.max_layers > 2;
    let ctx = Ctx {
        build,
        estimates: &estimates,
        max_layers: opts.max_layers - usize::from(supersede),
        transitions: priors.len(),
        supersede,
    };
    let prior = priors.first().map(Prior::of);
    let outcome = match &prior {
        None => first_build(&ctx, opts),
        Some(prior) => evolve(&ctx, prior, opts),
    };
    Ok(assemble(&ctx, prior.as_ref(), outcome, opts))
}

/// The newest prior as the planner sees it: the layers it may keep, and what its
/// patch layer carried.
struct Prior<'a> {
    /// Its layers without an ostree commit layer or the patch layer.
    layout: Layout,
    /// What the patch layer carried (see [`Plan::patch_members`]).
    carried: &'a [LayoutComponent],
}

impl<'a> Prior<'a> {
    fn of(full: &'a Layout) -> Self {
        Prior {
            layout: full.planning(),
            carried: full.patch_members(),
        }
    }

    /// Every component with its layer; the patch layer's above the rest.
    fn by_name(&self) -> HashMap<&str, (usize, &LayoutComponent)> {
        let top = self.layout.layers.len();
        let mut all = self.layout.by_name();
        all.extend(self.carried.iter().map(|c| (c.name.as_str(), (top, c))));
        all
    }

    /// Its layers with the patch layer, when that carried anything.
    fn with_patch(&self) -> Layout {
        let mut layout = self.layout.clone();
        layout.push_patch(self.carried.to_vec());
        layout
    }
}

/// The build and its estimates, shared by every step.
struct Ctx<'a> {
    build: &'a Build,
    estimates: &'a [Estimate],
    max_layers: usize,
    /// Updates the estimates could learn from: one per prior build.
    transitions: usize,
    /// See [`PlanOptions::supersede`].
    supersede: bool,
}

impl Ctx<'_> {
    fn component(&self, i: usize) -> &Component {
        &self.build.components[i]
    }

    /// Prices `members` as one layer; a source package's members change together, so
    /// each unit counts once.
    fn group(&self, members: &[usize]) -> Group {
        let mut group = Group::default();
        self.units_of(members)
            .into_values()
            .for_each(|(item, _)| group.add(item));
        group
    }

    /// The units among `members`, each as one item, with its member count.
    fn units_of(&self, members: &[usize]) -> BTreeMap<&str, (Item, usize)> {
        let mut units: BTreeMap<&str, (Item, usize)> = BTreeMap::new();
        for &i in members {
            let c = self.component(i);
            let unit = units.entry(c.unit_key()).or_insert((
                Item {
                    size: 0,
                    p: self.estimates[i].p,
                },
                0,
            ));
            unit.0.size += c.size;
            unit.1 += 1;
        }
        units
    }

    fn cost(&self, layers: &[Vec<usize>]) -> f64 {
        layers.iter().map(|l| self.group(l).cost()).sum()
    }

    /// The best grouping of `members` into at most `slots` layers, source packages whole.
    fn pack(&self, members: &[usize], slots: usize) -> Vec<Vec<usize>> {
        let mut units: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for &i in members {
            units
                .entry(self.component(i).unit_key())
                .or_default()
                .push(i);
        }
        let units: Vec<Vec<usize>> = units.into_values().collect();
        let items: Vec<Item> = units
            .iter()
            .map(|u| Item {
                size: u.iter().map(|&i| self.component(i).size).sum(),
                p: self.estimates[u[0]].p,
            })
            .collect();
        partition::partition(&items, slots.max(1))
            .into_iter()
            .map(|g| {
                let mut layer: Vec<usize> = g.iter().flat_map(|&u| units[u].clone()).collect();
                layer.sort_unstable();
                layer
            })
            .collect()
    }
}

/// Why a prior layer cannot be reused as is.
#[derive(Debug, Clone)]
enum Dirty {
    Changed(String),
    OverCap,
    /// Reopened to give new components more layers (see the repack reason).
    Opened,
}

/// What the planning steps decide before the output is assembled.
struct Outcome {
    /// Each layer's members, with the prior layer it reuses unchanged.
    layers: Vec<(Vec<usize>, Option<usize>)>,
    /// Prior layers that are rewritten, and why.
    dirty: BTreeMap<usize, Dirty>,
    repack: RepackDecision,
    /// What the patch layer carries (see [`Plan::patch_members`]).
    riders: Vec<usize>,
}

fn first_build(ctx: &Ctx, opts: &PlanOptions) -> Outcome {
    let all: Vec<usize> = (0..ctx.build.components.len()).collect();
    let layers = ctx.pack(&all, ctx.max_layers);
    let cost = ctx.cost(&layers);
    Outcome {
        layers: layers.into_iter().map(|l| (l, None)).collect(),
        dirty: BTreeMap::new(),
        repack: RepackDecision {
            policy: opts.repack,
            performed: false,
            reason: "first build of the stream: a fresh plan".into(),
            sticky_expected_bytes: cost,
            fresh_expected_bytes: cost,
            one_time_cost_bytes: 0,
            horizon: opts.horizon,
        },
        riders: Vec::new(),
    }
}

/// The prior layers split into those reused unchanged and the content to regroup.
#[derive(Clone)]
struct Sticky {
    clean: Vec<(usize, Vec<usize>)>,
    pool: Vec<usize>,
    dirty: BTreeMap<usize, Dirty>,
}

fn split_prior(ctx: &Ctx, prior: &Layout) -> Sticky {
    let index: HashMap<&str, usize> = ctx
        .build
        .components
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let mut clean = Vec::new();
    let mut dirty = BTreeMap::new();
    let mut placed = vec![false; ctx.build.components.len()];
    for (l, layer) in prior.layers.iter().enumerate() {
        match layer_change(ctx, &index, layer) {
            Some(why) => {
                dirty.insert(l, Dirty::Changed(why));
            }
            None => {
                let members: Vec<usize> = layer
                    .components
                    .iter()
                    .map(|c| index[c.name.as_str()])
                    .collect();
                members.iter().for_each(|&i| placed[i] = true);
                clean.push((l, members));
            }
        }
    }
    let pool = (0..placed.len()).filter(|&i| !placed[i]).collect();
    Sticky { clean, pool, dirty }
}

/// Why `layer` differs from its content in the new build, or `None` if it is the same.
fn layer_change(ctx: &Ctx, index: &HashMap<&str, usize>, layer: &LayoutLayer) -> Option<String> {
    if layer.components.is_empty() {
        return Some("it is empty".into());
    }
    for c in &layer.components {
        let Some(&i) = index.get(c.name.as_str()) else {
            return Some(format!("{} was removed", c.name));
        };
        let now = &ctx.component(i).version;
        match &c.version {
            None => {
                return Some(format!(
                    "the prior build did not record {}'s version",
                    c.name
                ))
            }
            Some(v) if v != now => return Some(format!("{} changed {v} → {now}", c.name)),
            Some(_) => {}
        }
    }
    None
}

/// Most of one kept layer that may be superseded bytes: beyond it, rewriting the
/// layer costs little more than the new versions alone.
const MAX_SUPERSEDED_LAYER_SHARE: f64 = 0.5;
/// Most of the image that may be superseded bytes, which a client without any layer
/// downloads for nothing.
const MAX_SUPERSEDED_IMAGE_SHARE: f64 = 0.2;

/// Keeps, byte for byte, changed prior layers whose stale bytes stay within bounds:
/// their live members stay, and the new versions of the others go to the pool, to be
/// written above them. The layers that save the most bytes are kept first.
fn supersede(ctx: &Ctx, prior: &Layout, sticky: &mut Sticky) {
    let current: HashMap<&str, (usize, &str)> = ctx
        .build
        .components
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), (i, c.version.as_str())))
        .collect();
    let held = |l: usize| prior.layers[l].held_bytes();
    let superseded_bytes =
        |l: usize| -> u64 { prior.layers[l].superseded.iter().map(|c| c.size).sum() };
    let image: u64 = ctx.build.components.iter().map(|c| c.size).sum();
    let mut stale: u64 = sticky.clean.iter().map(|(l, _)| superseded_bytes(*l)).sum();
    // (prior layer, live members, their bytes, superseded bytes)
    let mut candidates: Vec<(usize, Vec<usize>, u64, u64)> = Vec::new();
    for (&l, why) in &sticky.dirty {
        let layer = &prior.layers[l];
        if !matches!(why, Dirty::Changed(_)) || layer.digest.is_none() || layer.blob_size.is_none()
        {
            continue;
        }
        let live: Vec<usize> = layer
            .components
            .iter()
            .filter_map(|c| {
                let &(i, version) = current.get(c.name.as_str())?;
                (c.version.as_deref() == Some(version)).then_some(i)
            })
            .collect();
        let live_bytes: u64 = live.iter().map(|&i| ctx.component(i).size).sum();
        let dead = held(l).saturating_sub(live_bytes);
        let versioned = layer.components.iter().all(|c| c.version.is_some());
        if !live.is_empty()
            && versioned
            && dead as f64 <= held(l) as f64 * MAX_SUPERSEDED_LAYER_SHARE
        {
            candidates.push((l, live, live_bytes, dead));
        }
    }
    candidates.sort_by_key(|&(l, _, saved, _)| (std::cmp::Reverse(saved), l));
    for (l, live, _, dead) in candidates {
        if (stale + dead) as f64 > image as f64 * MAX_SUPERSEDED_IMAGE_SHARE {
            continue;
        }
        stale += dead;
        sticky.dirty.remove(&l);
        sticky.pool.retain(|i| !live.contains(i));
        sticky.clean.push((l, live));
    }
    sticky.clean.sort_by_key(|(l, _)| *l);
}

/// The clean layer with the fewest live bytes (the lowest prior index on a tie).
fn smallest_clean(ctx: &Ctx, sticky: &Sticky) -> Option<usize> {
    (0..sticky.clean.len()).min_by_key(|&k| {
        let (l, members) = &sticky.clean[k];
        (bytes_of(ctx, members), *l)
    })
}

fn bytes_of(ctx: &Ctx, members: &[usize]) -> u64 {
    members.iter().map(|&i| ctx.component(i).size).sum()
}

/// Opens the smallest clean layers until the layer cap leaves room for the pool;
/// returns the compressed bytes they make clients download again.
fn fit_cap(ctx: &Ctx, price: &Pricing, sticky: &mut Sticky) -> u64 {
    let mut once = 0;
    while sticky.clean.len() + usize::from(!sticky.pool.is_empty()) > ctx.max_layers {
        let smallest =
            smallest_clean(ctx, sticky).expect("over the cap means at least one clean layer");
        let (l, members) = sticky.clean.remove(smallest);
        once += price.compressed(l);
        sticky.pool.extend(members);
        sticky.pool.sort_unstable();
        sticky.dirty.insert(l, Dirty::OverCap);
    }
    once
}

fn evolve(ctx: &Ctx, prior: &Prior, opts: &PlanOptions) -> Outcome {
    let mut sticky = split_prior(ctx, &prior.layout);
    if ctx.supersede && opts.repack != RepackPolicy::Always {
        supersede(ctx, &prior.layout, &mut sticky);
    }
    let price = Pricing::new(ctx, &prior.layout, opts);
    let all_kept = may_ride(ctx, &sticky).then(|| sticky.clone());
    let over_cap = fit_cap(ctx, &price, &mut sticky);
    let mut layers = sticky_layers(ctx, &sticky);
    let mut roomed = (opts.repack != RepackPolicy::Never && has_new_components(ctx, prior))
        .then(|| open_room(ctx, &price, sticky.clone(), layers.clone()));
    let mut riders = Vec::new();
    if let Some(all_kept) = all_kept {
        let (room_layers, once) = roomed.as_ref().map_or((&layers, 0), |(_, l, o)| (l, *o));
        let reopening =
            layers_cost(ctx, room_layers) * price.certain_weight + (over_cap + once) as f64;
        if let Some((kept, kept_layers, carried)) = ride(ctx, &price, all_kept, reopening) {
            (sticky, layers, riders, roomed) = (kept, kept_layers, carried, None);
        }
    }
    let riding = bytes_of(ctx, &riders) as f64;
    let sticky_cost = layers_cost(ctx, &layers) + riding;
    let mut repack = RepackDecision {
        policy: opts.repack,
        performed: false,
        reason: String::new(),
        sticky_expected_bytes: sticky_cost,
        fresh_expected_bytes: sticky_cost,
        one_time_cost_bytes: 0,
        horizon: opts.horizon,
    };
    let keep = |layers, dirty, mut repack: RepackDecision, riders: Vec<usize>| {
        repack.reason += &carried_note(ctx, &riders);
        Outcome {
            layers,
            dirty,
            repack,
            riders,
        }
    };
    if sticky.dirty.is_empty() && sticky.pool.is_empty() {
        repack.reason = "no layer changed since the prior build: its layout is reused as is".into();
        return keep(layers, sticky.dirty, repack, riders);
    }
    if opts.repack == RepackPolicy::Never {
        repack.reason = "repack policy is 'never': unchanged layers are kept".into();
        return keep(layers, sticky.dirty, repack, riders);
    }
    let all: Vec<usize> = (0..ctx.build.components.len()).collect();
    let fresh = ctx.pack(&all, ctx.max_layers);
    let fresh_cost = ctx.cost(&fresh);
    // Both are priced against the prior as it stands: a fresh plan rewrites the layers
    // that making room would reopen too.
    let fresh_once = price.fresh_one_time(ctx, &sticky, &fresh, layers.len());
    let (sticky, layers, opened) = roomed.unwrap_or((sticky, layers, 0));
    let sticky_cost = layers_cost(ctx, &layers) + riding;
    let worth = price.value(fresh_cost, fresh_once) < price.value(sticky_cost, opened)
        && fresh_cost < sticky_cost;
    repack.performed = opts.repack == RepackPolicy::Always || worth;
    repack.sticky_expected_bytes = sticky_cost;
    repack.fresh_expected_bytes = fresh_cost;
    repack.one_time_cost_bytes = if repack.performed { fresh_once } else { opened };
    repack.reason = repack_reason(opts, &price, &repack, opened, fresh_once);
    if !repack.performed {
        return keep(layers, sticky.dirty, repack, riders);
    }
    let mut dirty = sticky.dirty;
    for (l, _) in &sticky.clean {
        dirty.insert(*l, Dirty::Changed("the layout was re-planned".into()));
    }
    keep(
        fresh.into_iter().map(|m| (m, None)).collect(),
        dirty,
        repack,
        Vec::new(),
    )
}

/// Why the patch layer carries components, in plans' explanations.
const CARRIED_BECAUSE: &str = "every slot is taken, and reopening one would cost more over \
                               the horizon";

/// Whether the pool could ride in the patch layer: there is one (superseding), the
/// pool needs a slot, and every slot is taken.
fn may_ride(ctx: &Ctx, sticky: &Sticky) -> bool {
    ctx.supersede && !sticky.pool.is_empty() && sticky.clean.len() == ctx.max_layers
}

/// Lets the pool ride in the patch layer when that costs less than `reopening` (the
/// value of the layout that reopens layers for it instead); `all_kept` is the layout
/// with every prior layer kept, which [`may_ride`] allows.
/// The patch layer is downloaded again whenever anything in it changes, so riding
/// is priced as if it changed every build: small, changing content rides; new
/// packages get layers of their own.
fn ride(
    ctx: &Ctx,
    price: &Pricing,
    mut all_kept: Sticky,
    reopening: f64,
) -> Option<(Sticky, Layers, Vec<usize>)> {
    let riders = std::mem::take(&mut all_kept.pool);
    let layers = sticky_layers(ctx, &all_kept);
    let every_build = bytes_of(ctx, &riders) as f64;
    let riding = (layers_cost(ctx, &layers) + every_build) * price.certain_weight;
    (riding <= reopening).then_some((all_kept, layers, riders))
}

/// What the repack reason adds when the patch layer carries components.
fn carried_note(ctx: &Ctx, riders: &[usize]) -> String {
    match riders.len() {
        0 => String::new(),
        n => format!(
            "; the patch layer on top carries {n} component(s) ({}): {CARRIED_BECAUSE}",
            human_bytes(bytes_of(ctx, riders))
        ),
    }
}

type Layers = Vec<(Vec<usize>, Option<usize>)>;

/// Expected bytes per update of a layout.
fn layers_cost(ctx: &Ctx, layers: &Layers) -> f64 {
    layers.iter().map(|(m, _)| ctx.group(m).cost()).sum()
}

/// Compressed bytes per uncompressed byte in `prior`'s published layers (1 when it
/// was never built), to price plans in what clients really download.
fn compression_ratio(prior: &Layout) -> f64 {
    let (blob, raw) = prior
        .layers
        .iter()
        .filter_map(|l| Some((l.blob_size?, l.size)))
        .filter(|&(_, raw)| raw > 0)
        .fold((0u64, 0u64), |(b, r), (lb, lr)| (b + lb, r + lr));
    match raw {
        0 => 1.0,
        _ => (blob as f64 / raw as f64).clamp(0.0, 1.0),
    }
}

/// How far estimates resting on `transitions` observed updates are trusted: the same
/// shrinkage the estimator gives its cold-start guess (one transition: 1/5).
fn history_confidence(transitions: usize) -> f64 {
    let t = transitions as f64;
    t / (t + history::PRIOR_WEIGHT)
}

/// The clean prior layers as they are, and the pool regrouped into the free slots.
fn sticky_layers(ctx: &Ctx, sticky: &Sticky) -> Layers {
    let slots = ctx.max_layers - sticky.clean.len();
    let mut layers: Layers = sticky
        .clean
        .iter()
        .map(|(l, m)| (m.clone(), Some(*l)))
        .collect();
    if !sticky.pool.is_empty() {
        layers.extend(ctx.pack(&sticky.pool, slots).into_iter().map(|m| (m, None)));
    }
    layers
}

/// How a layout is weighed against what it costs to get there: expected bytes over
/// the horizon, compressed and trusted as far as the history behind them, against
/// the compressed bytes clients download once.
struct Pricing<'a> {
    prior: &'a Layout,
    /// Compressed bytes per expected uncompressed byte over the horizon.
    weight: f64,
    /// The same for bytes that rest on no estimate (not shrunk for little history).
    certain_weight: f64,
    ratio: f64,
}

impl<'a> Pricing<'a> {
    fn new(ctx: &Ctx, prior: &'a Layout, opts: &PlanOptions) -> Self {
        let ratio = compression_ratio(prior);
        // The saving rests on estimates learnt from few transitions early in a
        // stream: it counts only as far as the history behind it can be trusted.
        let certain_weight = opts.horizon * ratio;
        Pricing {
            prior,
            weight: certain_weight * history_confidence(ctx.transitions),
            certain_weight,
            ratio,
        }
    }

    fn value(&self, expected: f64, one_time: u64) -> f64 {
        expected * self.weight + one_time as f64
    }

    /// What rewriting prior layer `l` makes clients download once.
    fn compressed(&self, l: usize) -> u64 {
        let layer = &self.prior.layers[l];
        layer
            .blob_size
            .unwrap_or((layer.size as f64 * self.ratio).round() as u64)
    }

    /// What a fresh plan makes clients download once beyond the sticky layout: the
    /// clean layers it rewrites, and a request per extra layer.
    fn fresh_one_time(
        &self,
        ctx: &Ctx,
        sticky: &Sticky,
        fresh: &[Vec<usize>],
        sticky_layers: usize,
    ) -> u64 {
        let fresh_keys: HashSet<String> = fresh.iter().map(|m| members_key(ctx, m)).collect();
        let prior_keys: HashSet<String> = self
            .prior
            .layers
            .iter()
            .filter_map(LayoutLayer::content_key)
            .collect();
        let rewritten: u64 = sticky
            .clean
            .iter()
            .filter(|(l, _)| {
                self.prior.layers[*l]
                    .content_key()
                    .is_none_or(|k| !fresh_keys.contains(&k))
            })
            .map(|(l, _)| self.compressed(*l))
            .sum();
        let fresh_new = fresh
            .iter()
            .filter(|m| !prior_keys.contains(&members_key(ctx, m)))
            .count();
        let regrouped = sticky_layers - sticky.clean.len();
        rewritten + fresh_new.saturating_sub(regrouped) as u64 * LAYER_OVERHEAD_BYTES
    }
}

/// Whether the build has components the prior lacks (new packages, not updates).
fn has_new_components(ctx: &Ctx, prior: &Prior) -> bool {
    let before = prior.by_name();
    ctx.build
        .components
        .iter()
        .any(|c| !before.contains_key(c.name.as_str()))
}

/// Opens the smallest clean layers when new content needs more layers than the
/// dirty ones leave, as far as that pays over the horizon. Updates alone never
/// reopen a layer: on day two every unchanged layer stays. Tries 1, 2, 4, …
/// layers; returns the layout chosen and the compressed bytes it rewrites once.
fn open_room(ctx: &Ctx, price: &Pricing, sticky: Sticky, layers: Layers) -> (Sticky, Layers, u64) {
    let mut by_size: Vec<usize> = (0..sticky.clean.len()).collect();
    by_size.sort_by_key(|&k| (price.compressed(sticky.clean[k].0), sticky.clean[k].0));
    let mut best_value = price.value(layers_cost(ctx, &layers), 0);
    let mut best = (sticky.clone(), layers, 0);
    let mut k = 1;
    while k <= by_size.len() / 2 && !sticky.pool.is_empty() {
        let mut trial = sticky.clone();
        let mut opened: Vec<usize> = by_size[..k].to_vec();
        opened.sort_unstable_by(|a, b| b.cmp(a));
        let mut once = 0;
        for at in opened {
            let (l, members) = trial.clean.remove(at);
            once += price.compressed(l);
            trial.pool.extend(members);
            trial.dirty.insert(l, Dirty::Opened);
        }
        trial.pool.sort_unstable();
        let trial_layers = sticky_layers(ctx, &trial);
        let value = price.value(layers_cost(ctx, &trial_layers), once);
        if value < best_value {
            best_value = value;
            best = (trial, trial_layers, once);
        }
        k *= 2;
    }
    best
}

fn repack_reason(
    opts: &PlanOptions,
    price: &Pricing,
    r: &RepackDecision,
    opened: u64,
    fresh_once: u64,
) -> String {
    let per_update = r.sticky_expected_bytes - r.fresh_expected_bytes;
    let saving = per_update * price.weight;
    let figures = format!(
        "a fresh plan saves {} per update (uncompressed), {} over {} builds once \
         compressed and weighed by the history behind it, for a one-time {}",
        human_bytes(per_update.max(0.0) as u64),
        human_bytes(saving.max(0.0) as u64),
        opts.horizon,
        human_bytes(fresh_once)
    );
    let room = match opened {
        0 => String::new(),
        _ => format!(
            "; reopened the smallest unchanged layers ({}) to give new content room",
            human_bytes(opened)
        ),
    };
    match (opts.repack, r.performed) {
        (RepackPolicy::Always, _) => format!("repack policy is 'always': re-planned ({figures})"),
        (_, true) => format!("re-planned: {figures}"),
        (_, false) => format!("kept the prior layout{room}: {figures}"),
    }
}

fn members_key(ctx: &Ctx, members: &[usize]) -> String {
    let mut pairs: Vec<(&str, &str)> = members
        .iter()
        .map(|&i| {
            (
                ctx.component(i).name.as_str(),
                ctx.component(i).version.as_str(),
            )
        })
        .collect();
    pairs.sort_unstable();
    content_key(pairs)
}

/// One output layer before it is numbered.
struct Assembled {
    group: Group,
    id: String,
    members: Vec<usize>,
    /// Superseded members it keeps, with the prior layer and blob it is kept from.
    superseded: Vec<LayoutComponent>,
    kept: Option<(usize, KeptBlob)>,
}

impl Assembled {
    fn new(ctx: &Ctx, prior: Option<&Layout>, members: Vec<usize>, from: Option<usize>) -> Self {
        let kept_layer = from.and_then(|l| Some((l, &prior?.layers[l])));
        let superseded =
            kept_layer.map_or_else(Vec::new, |(_, layer)| superseded_in(ctx, layer, &members));
        let kept = kept_layer
            .filter(|_| !superseded.is_empty())
            .and_then(|(l, layer)| {
                let blob = KeptBlob {
                    digest: layer.digest.clone()?,
                    size: layer.blob_size?,
                };
                Some((l, blob))
            });
        let id = match kept {
            Some(_) => {
                let live: Vec<LayoutComponent> =
                    members.iter().map(|&i| layout_component(ctx, i)).collect();
                layer_key(&live, &superseded).expect("every member has a version")
            }
            None => members_key(ctx, &members),
        };
        Assembled {
            group: ctx.group(&members),
            id,
            members,
            superseded,
            kept,
        }
    }

    fn planned(&self, ctx: &Ctx, index: usize, prior_keys: &HashSet<String>) -> PlannedLayer {
        let stale: u64 = self.superseded.iter().map(|c| c.size).sum();
        PlannedLayer {
            index,
            id: self.id.clone(),
            size: self.group.size + stale,
            change_probability: self.group.p_change(),
            reused: prior_keys.contains(&self.id),
            components: self
                .members
                .iter()
                .map(|&i| layout_component(ctx, i))
                .collect(),
            superseded: self.superseded.clone(),
            kept_blob: self.kept.as_ref().map(|(_, blob)| blob.clone()),
        }
    }
}

/// What `layer` holds that its live `members` no longer are: what it held superseded
/// already, and its members that changed or went.
fn superseded_in(ctx: &Ctx, layer: &LayoutLayer, members: &[usize]) -> Vec<LayoutComponent> {
    let live: HashSet<(&str, &str)> = members
        .iter()
        .map(|&i| {
            (
                ctx.component(i).name.as_str(),
                ctx.component(i).version.as_str(),
            )
        })
        .collect();
    let mut out = layer.superseded.clone();
    out.extend(
        layer
            .components
            .iter()
            .filter(|c| !live.contains(&(c.name.as_str(), c.version.as_deref().unwrap_or(""))))
            .cloned(),
    );
    out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    out
}

fn layout_component(ctx: &Ctx, i: usize) -> LayoutComponent {
    let c = ctx.component(i);
    LayoutComponent {
        name: c.name.clone(),
        version: Some(c.version.clone()),
        size: c.size,
        source: c.source.clone(),
    }
}

/// Orders the layers and writes the decisions. Kept layers with superseded members
/// come first, in their prior order, so whatever supersedes them is above; the rest
/// go most stable first, and the patch layer's riders above them all.
fn assemble(ctx: &Ctx, prior: Option<&Prior>, outcome: Outcome, opts: &PlanOptions) -> Plan {
    let prior_layout = prior.map(|p| &p.layout);
    let mut layers: Vec<Assembled> = outcome
        .layers
        .into_iter()
        .filter(|(m, _)| !m.is_empty())
        .map(|(m, l)| Assembled::new(ctx, prior_layout, m, l))
        .collect();
    layers.sort_by(|a, b| match (&a.kept, &b.kept) {
        (Some((x, _)), Some((y, _))) => x.cmp(y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a
            .group
            .p_change()
            .total_cmp(&b.group.p_change())
            .then_with(|| a.id.cmp(&b.id)),
    });
    let before = prior.map(Prior::with_patch).unwrap_or_default();
    let prior_keys: HashSet<String> = before
        .layers
        .iter()
        .filter_map(LayoutLayer::content_key)
        .collect();
    let planned: Vec<PlannedLayer> = layers
        .iter()
        .enumerate()
        .map(|(index, a)| a.planned(ctx, index, &prior_keys))
        .collect();
    let mut riders = outcome.riders;
    riders.sort_by(|&a, &b| ctx.component(a).name.cmp(&ctx.component(b).name));
    let patch_members: Vec<LayoutComponent> =
        riders.iter().map(|&i| layout_component(ctx, i)).collect();
    let mut member_layers: Vec<&[usize]> = layers.iter().map(|l| l.members.as_slice()).collect();
    let mut reused: Vec<bool> = planned.iter().map(|l| l.reused).collect();
    let carried_at = (!riders.is_empty()).then_some(planned.len());
    if carried_at.is_some() {
        member_layers.push(&riders);
        let key = LayoutLayer::patch(patch_members.clone()).content_key();
        reused.push(key.is_some_and(|k| prior_keys.contains(&k)));
    }
    let kept_in: HashMap<&str, usize> = planned
        .iter()
        .flat_map(|l| l.superseded.iter().map(move |c| (c.name.as_str(), l.index)))
        .collect();
    let decisions = decide::decide(
        ctx,
        &prior.map(Prior::by_name).unwrap_or_default(),
        decide::Layers {
            members: &member_layers,
            reused: &reused,
            superseded_in: &kept_in,
            carried_at,
        },
        &outcome.dirty,
        outcome.repack.performed,
    );
    let expected: f64 = layers.iter().map(|l| l.group.cost()).sum();
    let mut plan = Plan {
        schema: PLAN_SCHEMA.into(),
        date: ctx.build.date.clone(),
        max_layers: opts.max_layers,
        layers: planned,
        patch_members,
        decisions,
        repack: outcome.repack,
        prediction: Prediction {
            download: LayoutDiff::default(),
            expected_next_update_bytes: expected + ctx.group(&riders).cost(),
        },
    };
    plan.prediction.download = diff_layouts(&before, &plan.layout());
    plan
}

#[cfg(test)]
mod tests;

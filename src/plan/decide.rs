//! The explanation of a plan: one decision per component, with its reason.

use std::collections::{BTreeMap, HashMap};

use super::partition::{Group, Item};
use super::{Action, Ctx, Decision, Dirty, CARRIED_BECAUSE};
use crate::bytes::human_bytes;
use crate::layout::LayoutComponent;

/// The output layers, in order, as the explanation needs them.
pub(super) struct Layers<'a> {
    pub members: &'a [&'a [usize]],
    pub reused: &'a [bool],
    /// The kept layer that still holds each superseded component's old files.
    pub superseded_in: &'a HashMap<&'a str, usize>,
    /// The patch layer, last of `members`, when it carries components.
    pub carried_at: Option<usize>,
}

/// Explains where every component went relative to the prior build, whose
/// components `before` gives with their layers.
pub(super) fn decide(
    ctx: &Ctx,
    before: &HashMap<&str, (usize, &LayoutComponent)>,
    out: Layers,
    dirty: &BTreeMap<usize, Dirty>,
    repacked: bool,
) -> Vec<Decision> {
    let (layers, reused) = (out.members, out.reused);
    let kept_note = |name: &str| match out.superseded_in.get(name) {
        Some(l) => format!(
            "; the old files stay in kept layer {l}, superseded from above, so its other \
             members are not downloaded again"
        ),
        None => String::new(),
    };
    let mut layer_of = vec![0; ctx.build.components.len()];
    for (l, members) in layers.iter().enumerate() {
        members.iter().for_each(|&i| layer_of[i] = l);
    }
    let prices: Vec<LayerPrice> = layers.iter().map(|m| LayerPrice::of(ctx, m)).collect();
    let mut decisions: Vec<Decision> = (0..ctx.build.components.len())
        .map(|i| {
            let c = ctx.component(i);
            let layer = layer_of[i];
            let (action, prior_layer, mut reason) = match before.get(c.name.as_str()) {
                None => (Action::Placed, None, placed_reason(ctx, i, &prices[layer])),
                Some((pl, pc)) if pc.version.as_ref().is_some_and(|v| *v != c.version) => {
                    let old = pc.version.as_deref().unwrap_or_default();
                    (
                        Action::Updated,
                        Some(*pl),
                        format!("updated {old} → {}{}", c.version, kept_note(&c.name)),
                    )
                }
                // A layer identical to one of the prior's is kept, whichever step made it.
                Some((pl, _)) if reused[layer] => (
                    Action::Kept,
                    Some(*pl),
                    "its layer is unchanged since the prior build".into(),
                ),
                Some((pl, _)) => (
                    Action::Moved,
                    Some(*pl),
                    moved_reason(ctx, *pl, dirty.get(pl), repacked),
                ),
            };
            if Some(layer) == out.carried_at {
                reason += &format!("; carried in the patch layer on top: {CARRIED_BECAUSE}");
            }
            Decision {
                component: c.name.clone(),
                action,
                layer: Some(layer),
                prior_layer,
                change_probability: Some(ctx.estimates[i].p),
                estimate: Some(ctx.estimates[i].basis),
                reason,
            }
        })
        .collect();
    let present: std::collections::HashSet<&str> = ctx
        .build
        .components
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for (name, (pl, _)) in before {
        if !present.contains(name) {
            decisions.push(Decision {
                component: name.to_string(),
                action: Action::Removed,
                layer: None,
                prior_layer: Some(*pl),
                change_probability: None,
                estimate: None,
                reason: format!("no longer in the build{}", kept_note(name)),
            });
        }
    }
    decisions.sort_by(|a, b| a.component.cmp(&b.component));
    decisions
}

/// A layer's price and its units, to price a member's share without re-pricing.
struct LayerPrice<'a> {
    group: Group,
    units: BTreeMap<&'a str, (Item, usize)>,
}

impl<'a> LayerPrice<'a> {
    fn of(ctx: &'a Ctx, members: &[usize]) -> Self {
        let units = ctx.units_of(members);
        let mut group = Group::default();
        units.values().for_each(|(item, _)| group.add(*item));
        LayerPrice { group, units }
    }
}

fn placed_reason(ctx: &Ctx, i: usize, layer: &LayerPrice) -> String {
    let c = ctx.component(i);
    let (unit, members) = layer.units[c.unit_key()];
    let mut without = layer.group.without(Group::of(unit));
    if members > 1 {
        without.add(Item {
            size: unit.size - c.size,
            p: unit.p,
        });
    }
    let added = layer.group.cost() - without.cost();
    let with = if members > 1 {
        "with its source-package siblings"
    } else if layer.units.len() == 1 {
        "in a layer of its own"
    } else {
        "with components of similar change probability"
    };
    format!(
        "new: placed {with}, where it adds the least expected download ({} per update)",
        human_bytes(added.max(0.0) as u64)
    )
}

fn moved_reason(ctx: &Ctx, prior_layer: usize, why: Option<&Dirty>, repacked: bool) -> String {
    let Some(why) = why else {
        return format!("regrouped from unchanged prior layer {prior_layer}");
    };
    match (why, repacked) {
        (_, true) => "moved by the re-plan (see repack)".into(),
        (Dirty::OverCap, _) => format!(
            "prior layer {prior_layer} was merged to fit the cap of {} layers",
            ctx.max_layers
        ),
        (Dirty::Opened, _) => format!(
            "prior layer {prior_layer} was reopened to give new or changed content room"
        ),
        (Dirty::Changed(change), _) => format!(
            "prior layer {prior_layer} is rewritten anyway ({change}); regrouped by change probability at no extra download"
        ),
    }
}

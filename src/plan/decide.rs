//! The explanation of a plan: one decision per component, with its reason.

use std::collections::BTreeMap;

use super::{Action, Ctx, Decision, Dirty};
use crate::bytes::human_bytes;
use crate::history::Layout;

/// Explains where every component went (`layers` in output order) relative to `prior`.
pub(super) fn decide(
    ctx: &Ctx,
    prior: Option<&Layout>,
    layers: &[&[usize]],
    dirty: &BTreeMap<usize, Dirty>,
    repacked: bool,
) -> Vec<Decision> {
    let mut layer_of = vec![0; ctx.build.components.len()];
    for (l, members) in layers.iter().enumerate() {
        members.iter().for_each(|&i| layer_of[i] = l);
    }
    let before = prior.map(Layout::by_name).unwrap_or_default();
    let mut decisions: Vec<Decision> = (0..ctx.build.components.len())
        .map(|i| {
            let c = ctx.component(i);
            let layer = layer_of[i];
            let (action, prior_layer, reason) = match before.get(c.name.as_str()) {
                None => (Action::Placed, None, placed_reason(ctx, i, layers[layer])),
                Some((pl, pc)) if pc.version.as_ref().is_some_and(|v| *v != c.version) => {
                    let old = pc.version.as_deref().unwrap_or_default();
                    (
                        Action::Updated,
                        Some(*pl),
                        format!("updated {old} → {}", c.version),
                    )
                }
                Some((pl, _)) => match dirty.get(pl) {
                    None => (
                        Action::Kept,
                        Some(*pl),
                        "its layer is unchanged since the prior build".into(),
                    ),
                    Some(why) => (
                        Action::Moved,
                        Some(*pl),
                        moved_reason(ctx, *pl, why, repacked),
                    ),
                },
            };
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
    for (name, (pl, _)) in &before {
        if !present.contains(name) {
            decisions.push(Decision {
                component: name.to_string(),
                action: Action::Removed,
                layer: None,
                prior_layer: Some(*pl),
                change_probability: None,
                estimate: None,
                reason: "no longer in the build".into(),
            });
        }
    }
    decisions.sort_by(|a, b| a.component.cmp(&b.component));
    decisions
}

fn placed_reason(ctx: &Ctx, i: usize, layer: &[usize]) -> String {
    let others: Vec<usize> = layer.iter().copied().filter(|&j| j != i).collect();
    let added = ctx.group(layer).cost() - ctx.group(&others).cost();
    let siblings = others
        .iter()
        .any(|&j| ctx.component(j).unit_key() == ctx.component(i).unit_key());
    let with = if siblings {
        "with its source-package siblings"
    } else if others.is_empty() {
        "in a layer of its own"
    } else {
        "with components of similar change probability"
    };
    format!(
        "new: placed {with}, where it adds the least expected download ({} per update)",
        human_bytes(added.max(0.0) as u64)
    )
}

fn moved_reason(ctx: &Ctx, prior_layer: usize, why: &Dirty, repacked: bool) -> String {
    match (why, repacked) {
        (_, true) => "moved by the re-plan (see repack)".into(),
        (Dirty::OverCap, _) => format!(
            "prior layer {prior_layer} was merged to fit the cap of {} layers",
            ctx.max_layers
        ),
        (Dirty::Changed(change), _) => format!(
            "prior layer {prior_layer} is rewritten anyway ({change}); regrouped by change probability at no extra download"
        ),
    }
}

//! Diff: what clients of one built image download to get another, layer by layer and
//! component by component, as `strata diff` and a build's report show it. The same
//! reckoning on layouts alone, which the planner predicts with, is
//! [`crate::layout::download`].

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::layout::download::reused_percent;
use crate::layout::Layout;

/// One layer of an image, as `strata diff` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRow {
    /// Its place in the image, bottom first.
    pub index: usize,
    /// The blob digest (`sha256:…`).
    pub digest: String,
    /// Compressed bytes.
    pub size: u64,
    /// How many components it holds.
    pub components: usize,
}

/// Component-level changes between two images.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentChanges {
    /// Name and version of each component only the new image has.
    pub added: Vec<(String, String)>,
    /// Name and version of each component only the old image has.
    pub removed: Vec<(String, String)>,
    /// Name, old version, new version.
    pub updated: Vec<(String, String, String)>,
    /// Unchanged components whose layer was rewritten: name, old layer, new layer.
    pub moved: Vec<(String, usize, usize)>,
}

/// What clients of `old` download to get `new`, layer by layer and component by component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageDiff {
    /// The image clients have, as named.
    pub old: String,
    /// The image they update to, as named.
    pub new: String,
    /// Layers of the new image the old one has: not downloaded.
    pub reused: Vec<LayerRow>,
    /// Layers of the new image the old one lacks: downloaded.
    pub added: Vec<LayerRow>,
    /// Layers of the old image the new one no longer has.
    pub removed: Vec<LayerRow>,
    /// Compressed bytes of the added layers.
    pub download_bytes: u64,
    /// Compressed bytes of the new image.
    pub total_bytes: u64,
    /// Share of the new image's bytes clients already have, in percent.
    pub reused_percent: f64,
    /// What changed, component by component.
    pub components: ComponentChanges,
}

fn rows(layout: &Layout) -> Vec<LayerRow> {
    layout
        .layers
        .iter()
        .enumerate()
        .map(|(index, l)| LayerRow {
            index,
            digest: l.digest.clone().unwrap_or_default(),
            size: l.blob_size.unwrap_or(l.size),
            components: l.components.len(),
        })
        .collect()
}

/// Diffs two built images by layer digest, with component changes from their layouts.
pub fn diff_images(old_name: &str, old: &Layout, new_name: &str, new: &Layout) -> ImageDiff {
    let old_rows = rows(old);
    let new_rows = rows(new);
    let old_digests: HashSet<&str> = old_rows.iter().map(|r| r.digest.as_str()).collect();
    let new_digests: HashSet<&str> = new_rows.iter().map(|r| r.digest.as_str()).collect();
    let (reused, added): (Vec<LayerRow>, Vec<LayerRow>) = new_rows
        .iter()
        .cloned()
        .partition(|r| old_digests.contains(r.digest.as_str()));
    let removed: Vec<LayerRow> = old_rows
        .iter()
        .filter(|r| !new_digests.contains(r.digest.as_str()))
        .cloned()
        .collect();
    let total_bytes: u64 = new_rows.iter().map(|r| r.size).sum();
    let download_bytes: u64 = added.iter().map(|r| r.size).sum();
    ImageDiff {
        old: old_name.to_string(),
        new: new_name.to_string(),
        reused_percent: reused_percent(total_bytes, download_bytes),
        reused,
        added,
        removed,
        download_bytes,
        total_bytes,
        components: component_changes(old, new),
    }
}

fn component_changes(old: &Layout, new: &Layout) -> ComponentChanges {
    let before = old.by_name();
    let after = new.by_name();
    let version = |c: &crate::layout::LayoutComponent| c.version.clone().unwrap_or_default();
    let mut changes = ComponentChanges::default();
    let mut names: Vec<&str> = before.keys().chain(after.keys()).copied().collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        match (before.get(name), after.get(name)) {
            (None, Some((_, c))) => changes.added.push((name.into(), version(c))),
            (Some((_, c)), None) => changes.removed.push((name.into(), version(c))),
            (Some((_, oc)), Some((_, nc))) if oc.version != nc.version => {
                changes
                    .updated
                    .push((name.into(), version(oc), version(nc)));
            }
            (Some((ol, _)), Some((nl, _))) => {
                if old.layers[*ol].digest != new.layers[*nl].digest {
                    changes.moved.push((name.into(), *ol, *nl));
                }
            }
            (None, None) => {}
        }
    }
    changes
}

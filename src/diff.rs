//! Diff: what clients of one build download to get another.
//!
//! A layer is reused when the old build has a layer of exactly the same content; the
//! client downloads every other layer. The lower bound is what one layer per
//! component would cost: the bytes of components that really changed.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::layout::{Layout, LayoutLayer};

/// The layer-level difference between two layouts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutDiff {
    pub reused_layers: usize,
    pub added_layers: usize,
    pub removed_layers: usize,
    /// Bytes of the new layout's layers the old one lacks.
    pub download_bytes: u64,
    /// Bytes of the new layout.
    pub total_bytes: u64,
    /// Bytes of components whose (name, version) the old layout lacks.
    pub lower_bound_bytes: u64,
}

impl LayoutDiff {
    /// Share of the new layout's bytes that clients already have, in percent.
    pub fn reused_percent(&self) -> f64 {
        if self.total_bytes == 0 {
            100.0
        } else {
            100.0 * (self.total_bytes - self.download_bytes) as f64 / self.total_bytes as f64
        }
    }
}

/// What clients holding `old` download to get `new`.
pub fn diff_layouts(old: &Layout, new: &Layout) -> LayoutDiff {
    let old_keys: HashSet<String> = old
        .layers
        .iter()
        .filter_map(LayoutLayer::content_key)
        .collect();
    let new_keys: HashSet<String> = new
        .layers
        .iter()
        .filter_map(LayoutLayer::content_key)
        .collect();
    let old_components: HashSet<(&str, &str)> = old
        .layers
        .iter()
        .flat_map(|l| &l.components)
        .filter_map(|c| Some((c.name.as_str(), c.version.as_deref()?)))
        .collect();
    let mut diff = LayoutDiff::default();
    for layer in &new.layers {
        let size = layer.held_bytes();
        diff.total_bytes += size;
        match layer.content_key() {
            Some(key) if old_keys.contains(&key) => diff.reused_layers += 1,
            _ => {
                diff.added_layers += 1;
                diff.download_bytes += size;
            }
        }
        diff.lower_bound_bytes += layer
            .components
            .iter()
            .filter(|c| match c.version.as_deref() {
                Some(v) => !old_components.contains(&(c.name.as_str(), v)),
                None => true,
            })
            .map(|c| c.size)
            .sum::<u64>();
    }
    diff.removed_layers = old
        .layers
        .iter()
        .filter(|l| l.content_key().is_none_or(|k| !new_keys.contains(&k)))
        .count();
    diff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::LayoutComponent;

    fn layer(members: &[(&str, &str, u64)]) -> LayoutLayer {
        LayoutLayer {
            components: members
                .iter()
                .map(|(n, v, s)| LayoutComponent {
                    name: n.to_string(),
                    version: Some(v.to_string()),
                    size: *s,
                    source: None,
                })
                .collect(),
            size: members.iter().map(|m| m.2).sum(),
            blob_size: None,
            digest: None,
            commit_layer: false,
            superseded: Vec::new(),
            patch_layer: false,
        }
    }

    fn layout(layers: Vec<LayoutLayer>) -> Layout {
        Layout {
            layers,
            ..Layout::default()
        }
    }

    #[test]
    fn unchanged_layers_are_reused_and_changed_ones_downloaded() {
        let old = layout(vec![
            layer(&[("a", "1", 10), ("b", "1", 5)]),
            layer(&[("c", "1", 100)]),
        ]);
        let new = layout(vec![
            layer(&[("a", "2", 10), ("b", "1", 5)]),
            layer(&[("c", "1", 100)]),
        ]);
        let d = diff_layouts(&old, &new);
        assert_eq!(
            (d.reused_layers, d.added_layers, d.removed_layers),
            (1, 1, 1)
        );
        assert_eq!(d.download_bytes, 15);
        assert_eq!(d.lower_bound_bytes, 10);
        assert_eq!(d.total_bytes, 115);
        assert!((d.reused_percent() - 100.0 * 100.0 / 115.0).abs() < 1e-9);
    }
}

/// One layer of an image, as `strata diff` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRow {
    pub index: usize,
    pub digest: String,
    /// Compressed bytes.
    pub size: u64,
    pub components: usize,
}

/// Component-level changes between two images.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentChanges {
    pub added: Vec<(String, String)>,
    pub removed: Vec<(String, String)>,
    /// Name, old version, new version.
    pub updated: Vec<(String, String, String)>,
    /// Unchanged components whose layer was rewritten: name, old layer, new layer.
    pub moved: Vec<(String, usize, usize)>,
}

/// What clients of `old` download to get `new`, layer by layer and component by component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageDiff {
    pub old: String,
    pub new: String,
    pub reused: Vec<LayerRow>,
    pub added: Vec<LayerRow>,
    pub removed: Vec<LayerRow>,
    pub download_bytes: u64,
    pub total_bytes: u64,
    pub reused_percent: f64,
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
        reused_percent: if total_bytes == 0 {
            100.0
        } else {
            100.0 * (total_bytes - download_bytes) as f64 / total_bytes as f64
        },
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

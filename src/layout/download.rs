//! What clients holding one layout download to get another: a layer is reused when
//! the old layout has one of exactly the same content, and every other layer is
//! downloaded. The lower bound is what one layer per component would cost: the bytes
//! of components that really changed. The planner predicts its download with this;
//! the `diff` module reports built images the same way.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{Layout, LayoutLayer};

/// Share of `total` bytes that clients already have when they download `download`,
/// in percent (all of nothing).
pub fn reused_percent(total: u64, download: u64) -> f64 {
    match total {
        0 => 100.0,
        _ => 100.0 * total.saturating_sub(download) as f64 / total as f64,
    }
}

/// The layer-level difference between two layouts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutDiff {
    /// Layers of the new layout the old one has (same content).
    pub reused_layers: usize,
    /// Layers of the new layout the old one lacks: downloaded.
    pub added_layers: usize,
    /// Layers of the old layout the new one no longer has.
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
        reused_percent(self.total_bytes, self.download_bytes)
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
        LayoutLayer::planned(
            members
                .iter()
                .map(|(n, v, s)| LayoutComponent {
                    name: n.to_string(),
                    version: Some(v.to_string()),
                    size: *s,
                    source: None,
                })
                .collect(),
        )
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

    #[test]
    fn a_patch_layer_matches_only_an_earlier_patch_layer() {
        let members = [("dpkg-db", "2", 10)];
        let old = layout(vec![
            layer(&[("c", "1", 100)]),
            LayoutLayer::patch(layer(&members).components),
        ]);
        let moved = layout(vec![layer(&[("c", "1", 100)]), layer(&members)]);
        let d = diff_layouts(&old, &moved);
        assert_eq!((d.reused_layers, d.download_bytes), (1, 10));
        let again = layout(vec![
            layer(&[("c", "1", 100)]),
            LayoutLayer::patch(layer(&members).components),
        ]);
        let d = diff_layouts(&old, &again);
        assert_eq!((d.reused_layers, d.download_bytes), (2, 0));
    }
}

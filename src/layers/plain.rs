//! The plain format: each planned layer written from the tree or kept from the prior
//! as is, and a patch layer on top when a kept layer holds anything stale.

use std::collections::HashMap;

use ocidir::Layer;

use super::kept::{self, BlobSource};
use super::patch::{self, Stacked};
use super::{LayerError, LayerJob, Written};
use crate::image;
use crate::layout::LayoutComponent;
use crate::plan::PlannedLayer;
use crate::source::rootfs::WalkOptions;

/// A layer blob with its manifest annotations.
pub type Annotated = (Layer, HashMap<String, String>);

/// What the plan has the patch layer carry (`Plan::patch_members`).
pub struct Carried<'a> {
    /// The components, as its annotation lists them.
    pub components: &'a [LayoutComponent],
    /// Their entries in the tree.
    pub entries: &'a [usize],
}

/// Writes `planned` (with `members`, their tree entries) in order, copying kept
/// layers from `prior`, then the patch layer if one is needed, with what it carries.
pub fn write(
    job: &LayerJob,
    planned: &[PlannedLayer],
    members: &[Vec<usize>],
    carried: Carried,
    prior: Option<&BlobSource>,
    walk: WalkOptions,
    progress: impl Fn(Written) + Sync,
) -> Result<Vec<Annotated>, LayerError> {
    let fresh: Vec<usize> = (0..planned.len())
        .filter(|&i| planned[i].kept_blob.is_none())
        .collect();
    let sizes: Vec<u64> = fresh
        .iter()
        .map(|&i| crate::source::bytes_of(job.entries, &members[i]))
        .collect();
    // Layers are named by their index in the plan, in errors and in progress alike.
    let write = |_, &i: &usize| super::write_one(job, i, &members[i]);
    let renumbered = |w: Written| {
        progress(Written {
            index: fresh[w.index],
            ..w
        })
    };
    let mut written = super::write_each(&fresh, &sizes, write, renumbered)?.into_iter();
    let mut layers = Vec::with_capacity(planned.len() + 1);
    let mut kept_entries = HashMap::new();
    for (i, layer) in planned.iter().enumerate() {
        let blob = match &layer.kept_blob {
            None => written.next().expect("one written blob per fresh layer"),
            Some(k) => {
                let from = prior.ok_or_else(|| LayerError::Kept {
                    index: i,
                    digest: k.digest.clone(),
                    problem: "the plan keeps a prior layer, but no prior image was given".into(),
                })?;
                let copied = kept::copy(from, &k.digest, k.size, job.oci, i, walk)?;
                kept_entries.insert(i, copied.entries);
                copied.layer
            }
        };
        let annotations = image::layer_annotations(&layer.components, &layer.superseded);
        layers.push((blob, annotations));
    }
    if kept_entries.is_empty() && carried.components.is_empty() {
        return Ok(layers);
    }
    let stack: Vec<Stacked> = (0..planned.len())
        .map(|i| match kept_entries.get(&i) {
            Some(entries) => Stacked::Kept {
                entries,
                owned: &members[i],
            },
            None => Stacked::Written(&members[i]),
        })
        .collect();
    let patch = patch::patch(job.entries, &stack, carried.entries, job.mtime_clamp);
    if !patch.is_empty() {
        let index = planned.len();
        let blob = super::write_blob(job.oci, job.compression, index, |w| {
            super::tar::write_patch(w, job, &patch.entries, &patch.whiteouts)
                .map(|_| ())
                .map_err(|e| e.at(index))
        })?;
        layers.push((blob, image::patch_annotations(carried.components)));
    }
    Ok(layers)
}

//! Layout: the one record of a prior build's layers, whatever it was read from (a plan
//! file, image manifests and their annotations, a job's report). A leaf of the data
//! flow: `history` learns from layouts, `plan` keeps or reopens their layers, `image`
//! reads and writes them, and [`download`] reckons what moving from one to another
//! costs clients.

pub mod download;

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::input::{self, check_total_size, parse_date, validate_date, InputError};

/// One component as a prior build's layer recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutComponent {
    /// The component's name, unique within a build.
    pub name: String,
    /// `None` when the writer recorded names only (rpm-ostree's `ostree.components`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Uncompressed bytes (0 when the writer did not record it).
    #[serde(default)]
    pub size: u64,
    /// Its source package, whose siblings share its history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One layer of a prior build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutLayer {
    /// What the layer holds, live members only.
    pub components: Vec<LayoutComponent>,
    /// Uncompressed size in bytes: what its members hold, superseded ones included.
    #[serde(default)]
    pub size: u64,
    /// Compressed size of the layer blob, once built (what clients download).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_size: Option<u64>,
    /// The layer blob digest, once built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// ostree-ext's commit layer: downloaded like any other, but never a slot to plan.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub commit_layer: bool,
    /// Members whose files the layer still holds but a higher layer supersedes: a
    /// newer version above, or a whiteout in the patch layer. The layer was kept byte
    /// for byte rather than rewritten for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<LayoutComponent>,
    /// Strata's patch layer (always the top one): whiteouts and corrections for what
    /// kept layers hold stale, and the components it carries when no slot is free for
    /// them (see `Plan::patch_members`). Built from the tree each time, never a slot
    /// to plan.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub patch_layer: bool,
}

impl LayoutLayer {
    /// A layer of `components` that is planned, not yet written: no blob, nothing
    /// superseded, its size their sum.
    pub fn planned(components: Vec<LayoutComponent>) -> Self {
        LayoutLayer {
            size: components.iter().map(|c| c.size).sum(),
            components,
            blob_size: None,
            digest: None,
            commit_layer: false,
            superseded: Vec::new(),
            patch_layer: false,
        }
    }

    /// The patch layer carrying `components` (none: whiteouts and corrections only).
    pub fn patch(components: Vec<LayoutComponent>) -> Self {
        LayoutLayer {
            patch_layer: true,
            ..LayoutLayer::planned(components)
        }
    }

    /// The identity of the layer's content: equal keys mean byte-identical layers.
    /// `None` when some member has no recorded version. A patch layer's key never
    /// equals a regular layer's: its blob holds whiteouts and corrections besides its
    /// members, so it is the same only as an earlier patch layer carrying the same.
    pub fn content_key(&self) -> Option<String> {
        let key = layer_key(&self.components, &self.superseded)?;
        Some(match self.patch_layer {
            true => format!("patch:{key}"),
            false => key,
        })
    }

    /// Uncompressed bytes the layer holds, superseded members included.
    pub fn held_bytes(&self) -> u64 {
        self.components
            .iter()
            .chain(&self.superseded)
            .map(|c| c.size)
            .sum()
    }
}

/// The content key of a layer holding `live` and `superseded` members; `None` when
/// some member has no recorded version. A superseded member's files are in the blob
/// all the same, so a layer kept for it keeps the key it was written with.
pub fn layer_key(live: &[LayoutComponent], superseded: &[LayoutComponent]) -> Option<String> {
    let mut pairs: Vec<(&str, &str)> = live
        .iter()
        .chain(superseded)
        .map(|c| Some((c.name.as_str(), c.version.as_deref()?)))
        .collect::<Option<_>>()?;
    pairs.sort_unstable();
    Some(content_key(pairs))
}

/// Hashes sorted `(name, version)` pairs into a layer content key.
pub fn content_key<'a>(sorted_pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut hasher = Sha256::new();
    for (name, version) in sorted_pairs {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(version.as_bytes());
        hasher.update([b'\n']);
    }
    crate::bytes::sha256_label(&hasher.finalize())
}

/// A plan file as far as a layout needs it: its layers, and what its patch layer
/// carries (`Plan::patch_members`), which is not one of them.
#[derive(Deserialize)]
struct PlanFile {
    #[serde(flatten)]
    layout: Layout,
    #[serde(default)]
    patch_members: Vec<LayoutComponent>,
}

/// The layout of one prior build: its layers in order, and its date when known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Where the layout was read from, for messages.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    /// The build's date (RFC 3339 or `YYYY-MM-DD`), which dates its transitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// How many builds of the stream came before it, when Strata recorded that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Bottom first.
    pub layers: Vec<LayoutLayer>,
}

impl Layout {
    /// The layers a planner may keep or reuse: without an ostree commit layer or a
    /// patch layer.
    pub fn planning(&self) -> Layout {
        Layout {
            layers: self
                .layers
                .iter()
                .filter(|l| !l.commit_layer && !l.patch_layer)
                .cloned()
                .collect(),
            ..self.clone()
        }
    }

    /// Puts the patch layer carrying `carried` on top, when it carries anything: a
    /// layout records the patch layer only for what it carries.
    pub fn push_patch(&mut self, carried: Vec<LayoutComponent>) {
        if !carried.is_empty() {
            self.layers.push(LayoutLayer::patch(carried));
        }
    }

    /// What the patch layer carries, if the build has one.
    pub fn patch_members(&self) -> &[LayoutComponent] {
        self.layers
            .iter()
            .find(|l| l.patch_layer)
            .map_or(&[], |l| l.components.as_slice())
    }

    /// Reads a plan file (`strata plan` output) as a prior build's layout, with the
    /// patch layer on top when the plan has it carry components.
    pub fn read(path: &Path) -> Result<Layout, InputError> {
        let file: PlanFile = input::read_json(path, "a plan file")?;
        let mut layout = file.layout;
        layout.push_patch(file.patch_members);
        layout.origin = path.display().to_string();
        layout.validate(path)?;
        Ok(layout)
    }

    /// Checks that every component sits in one layer only and the date parses.
    pub fn validate(&self, path: &Path) -> Result<(), InputError> {
        validate_date(path, self.date.as_deref())?;
        let sizes = self
            .layers
            .iter()
            .flat_map(|l| l.components.iter().map(|c| c.size));
        check_total_size(path, "layers", sizes)?;
        let last = self.layers.len().saturating_sub(1);
        if let Some(i) = self
            .layers
            .iter()
            .position(|l| l.patch_layer)
            .filter(|&i| i != last)
        {
            return Err(InputError::invalid(
                path,
                format!("layers[{i}]"),
                "is a patch layer below the top one: a patch layer is always the top layer",
            ));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (j, c) in layer.components.iter().enumerate() {
                if c.name.is_empty() {
                    return Err(InputError::invalid(
                        path,
                        format!("layers[{i}].components[{j}].name"),
                        "is empty",
                    ));
                }
                if let Some(first) = seen.insert(&c.name, i) {
                    return Err(InputError::invalid(
                        path,
                        format!("layers[{i}].components[{j}].name"),
                        format!("'{}' is already in layer {first}", c.name),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The build date in seconds since the epoch, if it has a parseable one.
    pub fn timestamp(&self) -> Option<i64> {
        self.date.as_deref().and_then(parse_date)
    }

    /// Every component with its layer index, by name.
    pub fn by_name(&self) -> HashMap<&str, (usize, &LayoutComponent)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| l.components.iter().map(move |c| (c.name.as_str(), (i, c))))
            .collect()
    }
}

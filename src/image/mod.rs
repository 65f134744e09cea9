//! Image: the OCI layout around the layers, and reading earlier images back.
//!
//! Every layer carries its components with versions and sizes in the
//! `strata.dev/components` annotation, so the next build reads the layout from the
//! manifest alone; `ostree.components` (sorted names) serves ostree-ext tools.

mod priors;
pub mod reference;
pub mod remote;
pub mod runtime;

pub use priors::{generation_after, read_priors};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ocidir::oci_spec::image::{
    Arch, Descriptor, HistoryBuilder, ImageConfigurationBuilder, ImageIndex, ImageManifest, Os,
    PlatformBuilder, RootFsBuilder,
};
use ocidir::{Layer, OciDir};

use crate::layout::{Layout, LayoutComponent, LayoutLayer};
pub use reference::ImageRef;

/// Per layer: `[[name, version, size], …]` as JSON, sorted by name.
pub const COMPONENTS_ANNOTATION: &str = "strata.dev/components";
/// Per kept layer: the members it still holds but a higher layer supersedes, in the
/// same form as [`COMPONENTS_ANNOTATION`].
pub const SUPERSEDED_ANNOTATION: &str = "strata.dev/superseded";
/// On Strata's patch layer (the top one): whiteouts and corrections, and the
/// components it carries in [`COMPONENTS_ANNOTATION`] when it carries any.
pub const PATCH_ANNOTATION: &str = "strata.dev/patch";
/// Per layer, for ostree-ext tools: sorted component names, comma-separated.
pub const OSTREE_COMPONENTS: &str = "ostree.components";
/// ostree-ext's label: the encapsulated commit.
pub const OSTREE_COMMIT: &str = "ostree.commit";
/// ostree-ext's label (mirrored in manifest annotations) naming the last ostree layer.
pub const OSTREE_FINAL_DIFFID: &str = "ostree.final-diffid";
/// On the manifest: the sha256 of the plan JSON that laid the image out.
pub const PLAN_DIGEST: &str = "strata.dev/plan-digest";
/// On the manifest: the build date the plan used.
pub const BUILD_DATE: &str = "strata.dev/date";
/// On the manifest: the stream the image belongs to (`--stream`).
pub const STREAM: &str = "strata.dev/stream";
/// On the manifest: how many builds of the stream came before this one (0 for the
/// first), so priors given oldest first can still be read newest first.
pub const GENERATION: &str = "strata.dev/generation";
/// On the manifest: what the image was built from (a directory, commit or image).
pub const SOURCE: &str = "strata.dev/source";
/// The OCI tag annotation in `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file of the image could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file, or the image reference.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The image, its manifest or a blob is malformed or crafted.
    #[error("{path}: {problem}")]
    Invalid {
        /// The image reference, or the file in it.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The OCI directory could not be read or written.
    #[error("{path}: {source}")]
    Oci {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: ocidir::Error,
    },
    /// The OCI directory has no image under the tag asked for.
    #[error("{path}: no image tagged '{tag}'")]
    NoSuchTag {
        /// The directory.
        path: PathBuf,
        /// The tag asked for.
        tag: String,
    },
}

/// The annotations a layer of `components` carries; a kept layer also names the
/// members it holds superseded.
pub fn layer_annotations(
    components: &[LayoutComponent],
    superseded: &[LayoutComponent],
) -> HashMap<String, String> {
    let mut sorted: Vec<&LayoutComponent> = components.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&str> = sorted.iter().map(|c| c.name.as_str()).collect();
    let mut annotations = HashMap::from([
        (
            COMPONENTS_ANNOTATION.to_string(),
            component_list(components),
        ),
        (OSTREE_COMPONENTS.to_string(), names.join(",")),
    ]);
    if !superseded.is_empty() {
        annotations.insert(
            SUPERSEDED_ANNOTATION.to_string(),
            component_list(superseded),
        );
    }
    annotations
}

/// The annotations of the patch layer, which carries `components`.
pub fn patch_annotations(components: &[LayoutComponent]) -> HashMap<String, String> {
    let mut annotations = match components.is_empty() {
        true => HashMap::new(),
        false => layer_annotations(components, &[]),
    };
    annotations.insert(PATCH_ANNOTATION.to_string(), "true".to_string());
    annotations
}

/// `[[name, version, size], …]` sorted by name (then version), as JSON.
fn component_list(components: &[LayoutComponent]) -> String {
    let mut list: Vec<(&str, &str, u64)> = components
        .iter()
        .map(|c| (c.name.as_str(), c.version.as_deref().unwrap_or(""), c.size))
        .collect();
    list.sort_unstable();
    serde_json::to_string(&list).expect("strings and numbers serialise")
}

/// Parses a [`component_list`] annotation of layer `i`.
fn parse_component_list(
    origin: &str,
    i: usize,
    key: &str,
    json: &str,
) -> Result<Vec<LayoutComponent>, ImageError> {
    let list: Vec<(String, String, u64)> = serde_json::from_str(json).map_err(|e| {
        invalid(
            origin,
            format!("layer {i}: {key} is not a list of [name, version, size]: {e}"),
        )
    })?;
    Ok(list
        .into_iter()
        .map(|(name, version, size)| LayoutComponent {
            name,
            version: Some(version),
            size,
            source: None,
        })
        .collect())
}

/// What goes into the config and manifest besides the layers.
#[derive(Debug, Clone, Default)]
pub struct ImageMeta {
    /// Config labels.
    pub labels: BTreeMap<String, String>,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
    /// The tag in the OCI directory, if any.
    pub tag: Option<String>,
    /// The runtime config (user, environment, entrypoint, …); `labels` go on top.
    pub runtime: ocidir::oci_spec::image::Config,
}

impl ImageMeta {
    /// The metadata of a Strata build: `labels` as given, and annotations naming the
    /// plan (by the digest of its JSON), the build date, the stream, the source and
    /// the build's generation in its stream.
    pub fn for_build(
        labels: BTreeMap<String, String>,
        plan_json: &[u8],
        date: Option<&str>,
        stream: Option<&str>,
        source: &str,
        generation: u64,
    ) -> ImageMeta {
        use sha2::Digest;
        let digest = crate::bytes::sha256_label(&sha2::Sha256::digest(plan_json));
        let mut annotations = BTreeMap::from([
            (PLAN_DIGEST.to_string(), digest),
            (GENERATION.to_string(), generation.to_string()),
        ]);
        if let Some(date) = date {
            annotations.insert(BUILD_DATE.into(), date.to_string());
        }
        if let Some(stream) = stream {
            annotations.insert(STREAM.into(), stream.to_string());
        }
        annotations.insert(SOURCE.into(), source.to_string());
        ImageMeta {
            labels,
            annotations,
            tag: None,
            runtime: Default::default(),
        }
    }
}

/// Writes config and manifest for `layers` (with their annotations) into `oci`.
pub fn write_manifest(
    oci: &OciDir,
    path: &Path,
    layers: Vec<(Layer, HashMap<String, String>)>,
    meta: &ImageMeta,
) -> Result<Descriptor, ImageError> {
    let oci_err = |source| ImageError::Oci {
        path: path.to_path_buf(),
        source,
    };
    let invalid = |e: ocidir::oci_spec::OciSpecError| ImageError::Invalid {
        path: path.to_path_buf(),
        problem: e.to_string(),
    };
    let runtime = runtime::with_labels(meta.runtime.clone(), meta.labels.clone());
    let mut config = ImageConfigurationBuilder::default()
        .architecture(arch())
        .os(Os::Linux)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(Vec::<String>::new())
                .build()
                .map_err(invalid)?,
        )
        .config(runtime)
        .build()
        .map_err(invalid)?;
    let mut manifest = oci
        .new_empty_manifest()
        .map_err(oci_err)?
        .build()
        .map_err(invalid)?;
    let count = layers.len();
    for (i, (layer, annotations)) in layers.into_iter().enumerate() {
        let history = HistoryBuilder::default()
            .created_by(format!("strata: layer {} of {count}", i + 1))
            .build()
            .map_err(invalid)?;
        oci.push_layer_with_history_annotated(
            &mut manifest,
            &mut config,
            layer,
            Some(annotations),
            Some(history),
        );
    }
    let annotations: HashMap<String, String> = meta.annotations.clone().into_iter().collect();
    manifest.set_annotations(Some(annotations));
    let platform = PlatformBuilder::default()
        .architecture(arch())
        .os(Os::Linux)
        .build()
        .map_err(invalid)?;
    oci.insert_manifest_and_config(manifest, config, meta.tag.as_deref(), platform)
        .map_err(oci_err)
}

fn arch() -> Arch {
    match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        other => Arch::Other(other.to_string()),
    }
}

/// A manifest read from an OCI layout directory, with where it came from.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// The OCI layout directory.
    pub dir: PathBuf,
    /// The manifest's digest.
    pub digest: String,
    /// The manifest.
    pub manifest: ImageManifest,
}

impl LocalImage {
    /// Compressed bytes of all its layers: what a client without any of them fetches.
    pub fn layer_bytes(&self) -> u64 {
        self.manifest.layers().iter().map(|l| l.size()).sum()
    }
}

/// Reads the manifest of `dir` tagged `tag` (or its only manifest when untagged).
pub fn read_local(dir: &Path, tag: Option<&str>) -> Result<LocalImage, ImageError> {
    let index_path = dir.join("index.json");
    let index = ImageIndex::from_file(&index_path).map_err(|e| ImageError::Invalid {
        path: index_path.clone(),
        problem: e.to_string(),
    })?;
    let candidates: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| match tag {
            Some(t) => d
                .annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .is_some_and(|v| v == t),
            None => true,
        })
        .collect();
    let desc = match (candidates.as_slice(), tag) {
        ([one], _) => *one,
        ([], Some(t)) => {
            return Err(ImageError::NoSuchTag {
                path: dir.to_path_buf(),
                tag: t.to_string(),
            })
        }
        (_, _) => {
            return Err(ImageError::Invalid {
                path: index_path,
                problem: format!(
                    "holds {} images; name one with oci:DIR:TAG",
                    candidates.len()
                ),
            })
        }
    };
    let blob = blob_path(dir, desc)?;
    let manifest = ImageManifest::from_file(&blob).map_err(|e| ImageError::Invalid {
        path: blob.clone(),
        problem: e.to_string(),
    })?;
    Ok(LocalImage {
        dir: dir.to_path_buf(),
        digest: desc.digest().to_string(),
        manifest,
    })
}

/// Reads the manifest of any image reference; `None` when the image does not exist.
pub fn read_manifest(
    r: &ImageRef,
    registry: &remote::RegistryOptions,
) -> Result<Option<(String, ImageManifest)>, ImageError> {
    match r {
        ImageRef::Oci { dir, tag } => {
            if !dir.exists() {
                return Ok(None);
            }
            let local = read_local(dir, tag.as_deref())?;
            Ok(Some((local.digest, local.manifest)))
        }
        _ => remote::fetch_manifest(&r.to_string(), registry),
    }
}

/// The path of a blob, refusing digests that are not plain sha256 hex.
pub fn blob_path(dir: &Path, desc: &Descriptor) -> Result<PathBuf, ImageError> {
    let digest = desc.digest().to_string();
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(dir.join("blobs/sha256").join(hex))
        }
        _ => Err(ImageError::Invalid {
            path: dir.join("index.json"),
            problem: format!("unsupported digest '{digest}'"),
        }),
    }
}

/// Rebuilds the layout a manifest describes from its layer annotations. Layers with
/// `ostree.components` only get components without versions; `None` if no layer
/// carries either annotation.
pub fn layout_from_manifest(
    origin: &str,
    manifest: &ImageManifest,
) -> Result<Option<Layout>, ImageError> {
    let mut layers = Vec::new();
    let mut annotated = false;
    for (i, desc) in manifest.layers().iter().enumerate() {
        let (layer, listed) = layout_layer(origin, i, desc)?;
        annotated |= listed;
        layers.push(layer);
    }
    // ostree-ext (rpm-ostree, bootc) puts the commit and its metadata in layer 0,
    // which changes with every commit and holds no component: not a slot to plan.
    if manifest_annotation(manifest, OSTREE_FINAL_DIFFID).is_some() {
        if let Some(first) = layers.first_mut() {
            first.commit_layer = first.components.is_empty();
        }
    }
    let layout = Layout {
        origin: origin.to_string(),
        date: manifest_annotation(manifest, BUILD_DATE).map(str::to_string),
        generation: generation(origin, manifest)?,
        layers,
    };
    layout
        .validate(Path::new(origin))
        .map_err(|e| invalid(origin, e.to_string()))?;
    Ok(annotated.then_some(layout))
}

fn manifest_annotation<'m>(manifest: &'m ImageManifest, key: &str) -> Option<&'m str> {
    manifest
        .annotations()
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn invalid(origin: &str, problem: String) -> ImageError {
    ImageError::Invalid {
        path: PathBuf::from(origin),
        problem,
    }
}

/// Layer `i` as its descriptor records it, and whether it lists its components
/// (Strata's annotation or ostree-ext's).
fn layout_layer(
    origin: &str,
    i: usize,
    desc: &Descriptor,
) -> Result<(LayoutLayer, bool), ImageError> {
    let empty = HashMap::new();
    let ann = desc.annotations().as_ref().unwrap_or(&empty);
    let list = |key, json| parse_component_list(origin, i, key, json);
    let components = match (ann.get(COMPONENTS_ANNOTATION), ann.get(OSTREE_COMPONENTS)) {
        (Some(json), _) => list(COMPONENTS_ANNOTATION, json)?,
        (None, Some(names)) => unversioned(names),
        (None, None) => Vec::new(),
    };
    let listed = ann.contains_key(COMPONENTS_ANNOTATION) || ann.contains_key(OSTREE_COMPONENTS);
    let superseded = match ann.get(SUPERSEDED_ANNOTATION) {
        Some(json) => list(SUPERSEDED_ANNOTATION, json)?,
        None => Vec::new(),
    };
    let mut layer = LayoutLayer {
        size: 0,
        blob_size: Some(desc.size()),
        components,
        digest: Some(desc.digest().to_string()),
        commit_layer: false,
        superseded,
        patch_layer: ann.contains_key(PATCH_ANNOTATION),
    };
    layer.size = layer.held_bytes();
    Ok((layer, listed))
}

/// ostree-ext's comma-separated component names, which carry no versions.
fn unversioned(names: &str) -> Vec<LayoutComponent> {
    names
        .split(',')
        .filter(|n| !n.is_empty())
        .map(|n| LayoutComponent {
            name: n.to_string(),
            version: None,
            size: 0,
            source: None,
        })
        .collect()
}

/// The image's place in its stream, if it records one; a malformed count is refused
/// so that a crafted prior cannot be misordered.
fn generation(origin: &str, manifest: &ImageManifest) -> Result<Option<u64>, ImageError> {
    manifest_annotation(manifest, GENERATION)
        .map(|n| {
            n.parse::<u64>().map_err(|_| {
                invalid(
                    origin,
                    format!("annotation {GENERATION} is {n:?}, not a build count"),
                )
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(digest: char, annotations: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{}", digest.to_string().repeat(64)),
            "size": 100,
            "annotations": annotations,
        })
    }

    /// A prior written by rpm-ostree or bootc: the commit layer first, then chunks
    /// named by `ostree.components`, and the reserved empty chunk.
    #[test]
    fn an_ostree_ext_prior_plans_without_its_commit_layer() {
        let manifest: ImageManifest = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": format!("sha256:{}", "c".repeat(64)), "size": 10},
            "layers": [
                desc('0', serde_json::json!({})),
                desc('1', serde_json::json!({"ostree.components": "glibc,glibc-common"})),
                desc('2', serde_json::json!({"ostree.components": "kernel"})),
                desc('3', serde_json::json!({"ostree.components": ""})),
            ],
            "annotations": {"ostree.commit": "ab", "ostree.final-diffid": "sha256:00"},
        }))
        .unwrap();
        let layout = layout_from_manifest("docker://q/fcos:1", &manifest)
            .unwrap()
            .expect("annotated");
        assert_eq!(layout.layers.len(), 4, "diffs still count the commit layer");
        assert!(layout.layers[0].commit_layer);
        let planning = layout.planning();
        assert_eq!(planning.layers.len(), 3);
        assert_eq!(planning.layers[0].components[1].name, "glibc-common");
        assert!(planning.layers.iter().all(|l| !l.commit_layer));
    }

    /// A prior's generation is untrusted: anything but a build count is refused,
    /// naming the annotation, so the prior is left out rather than misordered.
    #[test]
    fn a_crafted_generation_is_refused() {
        let manifest = |generation: &str| -> ImageManifest {
            serde_json::from_value(serde_json::json!({
                "schemaVersion": 2,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": format!("sha256:{}", "c".repeat(64)), "size": 10},
                "layers": [desc('1', serde_json::json!({COMPONENTS_ANNOTATION: "[[\"a\",\"1\",3]]"}))],
                "annotations": {GENERATION: generation},
            }))
            .unwrap()
        };
        let read = |g: &str| layout_from_manifest("oci:/p:v", &manifest(g));
        assert_eq!(read("12").unwrap().unwrap().generation, Some(12));
        for bad in ["-1", "99999999999999999999999", "1e3", "", " 3"] {
            let err = read(bad).unwrap_err().to_string();
            assert!(
                err.contains(GENERATION) && err.contains("oci:/p:v"),
                "{err}"
            );
        }
    }

    /// The patch layer carries its components in the same annotation as any layer;
    /// a crafted image that puts the patch mark below the top, or has the patch layer
    /// carry a component a layer already holds, is refused.
    #[test]
    fn the_patch_layer_carries_components_on_top_only() {
        let layer = |c: &str| serde_json::json!({COMPONENTS_ANNOTATION: c});
        let patch =
            |c: &str| serde_json::json!({COMPONENTS_ANNOTATION: c, PATCH_ANNOTATION: "true"});
        let manifest = |layers: Vec<serde_json::Value>| -> ImageManifest {
            serde_json::from_value(serde_json::json!({
                "schemaVersion": 2,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": format!("sha256:{}", "c".repeat(64)), "size": 10},
                "layers": layers,
            }))
            .unwrap()
        };
        let read = |layers| layout_from_manifest("oci:/p:v", &manifest(layers));
        let a = r#"[["a","1",3]]"#;
        let b = r#"[["b","2",4]]"#;
        let good = read(vec![desc('1', layer(a)), desc('2', patch(b))])
            .unwrap()
            .unwrap();
        assert_eq!(good.patch_members()[0].name, "b");
        assert_eq!(good.planning().layers.len(), 1);

        let below = read(vec![desc('1', patch(b)), desc('2', layer(a))]).unwrap_err();
        assert!(
            below.to_string().contains("patch layer below the top"),
            "{below}"
        );
        let twice = read(vec![desc('1', layer(a)), desc('2', patch(a))]).unwrap_err();
        assert!(twice.to_string().contains("already in layer 0"), "{twice}");
    }
}

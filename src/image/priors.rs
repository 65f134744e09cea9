//! A stream's prior images, read back as the layouts the planner learns from.

use super::remote::RegistryOptions;
use super::{layout_from_manifest, read_manifest, ImageError, ImageRef};
use crate::layout::Layout;

/// Reads each prior's layout. A missing, unannotated or malformed prior is a warning
/// pushed to `warnings`, not an error: a prior is advice, and a bad one costs reuse,
/// never the build. Failing to reach a registry is an error.
pub fn read_priors(
    refs: &[ImageRef],
    registry: &RegistryOptions,
    warnings: &mut Vec<String>,
) -> Result<Vec<(ImageRef, Layout)>, ImageError> {
    let mut out = Vec::new();
    for r in refs {
        let Some((_, manifest)) = read_manifest(r, registry)? else {
            warnings.push(format!("prior {r} does not exist; planning without it"));
            continue;
        };
        match layout_from_manifest(&r.to_string(), &manifest) {
            Ok(Some(layout)) => out.push((r.clone(), layout)),
            Ok(None) => warnings.push(format!(
                "prior {r} has no layer annotations; planning without it"
            )),
            Err(e) => warnings.push(format!("prior {r}: {e}; planning without it")),
        }
    }
    Ok(out)
}

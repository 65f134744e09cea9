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
    newest_first(&mut out, warnings);
    Ok(out)
}

/// The generation of a build made on `priors`: one past the newest they record, or 0
/// for a stream's first build (or priors that recorded none).
pub fn generation_after<'a>(priors: impl IntoIterator<Item = &'a Layout>) -> u64 {
    priors
        .into_iter()
        .filter_map(|l| l.generation)
        .max()
        .map_or(0, |g| g.saturating_add(1))
}

/// Puts priors newest first when every one records its generation. The planner keeps
/// the first prior's layers and diffs against it: given oldest first, it would keep
/// the layout of a build clients no longer hold.
fn newest_first(priors: &mut [(ImageRef, Layout)], warnings: &mut Vec<String>) {
    let newest = |(_, l): &(ImageRef, Layout)| std::cmp::Reverse(l.generation);
    if priors.iter().any(|(_, l)| l.generation.is_none()) || priors.is_sorted_by_key(newest) {
        return;
    }
    priors.sort_by_key(|(_, l)| std::cmp::Reverse(l.generation));
    let order: Vec<String> = priors
        .iter()
        .map(|(r, l)| format!("{r} (build {})", l.generation.unwrap_or_default()))
        .collect();
    warnings.push(format!(
        "priors are read newest first; put in the order of the builds they record: {}",
        order.join(", ")
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prior(name: &str, generation: Option<u64>) -> (ImageRef, Layout) {
        let r: ImageRef = format!("oci:/images/{name}:v").parse().unwrap();
        let layout = Layout {
            generation,
            ..Layout::default()
        };
        (r, layout)
    }

    fn names(priors: &[(ImageRef, Layout)]) -> Vec<String> {
        priors.iter().map(|(r, _)| r.to_string()).collect()
    }

    #[test]
    fn priors_given_oldest_first_are_read_newest_first() {
        let mut warnings = Vec::new();
        let mut priors = vec![
            prior("a", Some(0)),
            prior("b", Some(2)),
            prior("c", Some(1)),
        ];
        newest_first(&mut priors, &mut warnings);
        assert_eq!(
            names(&priors),
            ["oci:/images/b:v", "oci:/images/c:v", "oci:/images/a:v"]
        );
        assert_eq!(warnings.len(), 1, "the reordering is reported");
        assert!(
            warnings[0].contains("oci:/images/b:v (build 2)"),
            "{warnings:?}"
        );
    }

    #[test]
    fn priors_in_order_or_without_generations_stay_as_given() {
        let mut warnings = Vec::new();
        let mut ordered = vec![
            prior("a", Some(3)),
            prior("b", Some(3)),
            prior("c", Some(1)),
        ];
        newest_first(&mut ordered, &mut warnings);
        assert_eq!(names(&ordered)[0], "oci:/images/a:v");
        let mut unknown = vec![prior("a", Some(0)), prior("b", None), prior("c", Some(4))];
        newest_first(&mut unknown, &mut warnings);
        assert_eq!(names(&unknown)[0], "oci:/images/a:v");
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn the_next_generation_follows_the_newest_and_never_overflows() {
        let layouts = [
            prior("a", Some(4)).1,
            prior("b", None).1,
            prior("c", Some(7)).1,
        ];
        assert_eq!(generation_after(&layouts), 8);
        assert_eq!(generation_after(&[]), 0);
        assert_eq!(generation_after(&[prior("x", Some(u64::MAX)).1]), u64::MAX);
    }
}

//! `strata-ostree-import REPO IMAGE`: imports IMAGE (e.g. `oci:/path:tag`) into the
//! bare-user ostree repository REPO (created if missing) with ostree-ext 0.15.3's
//! `ImageImporter`, the code path of `rpm-ostree rebase` and bootc. Prints JSON: the
//! imported commit, and how many ostree layers were already present beforehand.
//!
//! `strata-ostree-import --encapsulate REPO REV IMAGE [LAYERS]`: ostree-ext's own
//! encoder (`ostree container encapsulate`), timed, for the benchmark. With LAYERS it
//! chunks: content objects are grouped into components by their directory (three
//! levels deep), as a content map for ostree-ext's packer, and packed into LAYERS layers.

use anyhow::{bail, Context, Result};
use ostree_ext::container::store::{ImageImporter, PrepareResult};
use ostree_ext::container::{ImageReference, OstreeImageReference, SignatureSource};
use ostree_ext::chunking::ObjectMetaSized;
use ostree_ext::container::ExportOpts;
use ostree_ext::gio;
use ostree_ext::objectsource::{ContentID, ObjectMeta, ObjectSourceMeta};
use ostree_ext::ostree;
use ostree_ext::prelude::*;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.as_slice() {
        [_, flag, repo_path, rev, image] if flag == "--encapsulate" => {
            return encapsulate(repo_path, rev, image, None).await;
        }
        [_, flag, repo_path, rev, image, layers] if flag == "--encapsulate" => {
            let layers = layers
                .parse()
                .with_context(|| format!("{layers}: not a layer count"))?;
            return encapsulate(repo_path, rev, image, Some(layers)).await;
        }
        _ => {}
    }
    let [_, repo_path, image] = args.as_slice() else {
        bail!("usage: strata-ostree-import REPO IMAGE");
    };
    let repo = ostree::Repo::new_for_path(repo_path);
    if std::path::Path::new(repo_path).join("config").exists() {
        repo.open(ostree::gio::Cancellable::NONE)?;
    } else {
        std::fs::create_dir_all(repo_path)?;
        repo.create(ostree::RepoMode::BareUser, ostree::gio::Cancellable::NONE)?;
    }
    let imgref = OstreeImageReference {
        sigverify: SignatureSource::ContainerPolicyAllowInsecure,
        imgref: ImageReference::try_from(image.as_str())
            .with_context(|| format!("{image}: not an image reference"))?,
    };
    let mut importer = ImageImporter::new(&repo, &imgref, Default::default()).await?;
    let (state, present, total) = match importer.prepare().await? {
        PrepareResult::AlreadyPresent(state) => (state, usize::MAX, usize::MAX),
        PrepareResult::Ready(prep) => {
            let layers = std::iter::once(&prep.ostree_commit_layer)
                .chain(prep.ostree_layers.iter())
                .chain(prep.layers.iter());
            let (present, total) = layers.fold((0, 0), |(p, t), l| {
                (p + usize::from(l.commit.is_some()), t + 1)
            });
            (importer.import(prep).await?, present, total)
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "commit": state.base_commit,
            "merge_commit": state.merge_commit,
            "layers_present": present,
            "layers": total,
        })
    );
    Ok(())
}

async fn encapsulate(
    repo_path: &str,
    rev: &str,
    image: &str,
    layers: Option<std::num::NonZeroU32>,
) -> Result<()> {
    let repo = ostree::Repo::new_for_path(repo_path);
    repo.open(ostree::gio::Cancellable::NONE)?;
    let dest = ImageReference::try_from(image)?;
    let started = std::time::Instant::now();
    // Mapping objects to components is part of what a chunked encapsulation costs.
    let contentmeta = match layers {
        Some(_) => Some(content_map(&repo, rev)?),
        None => None,
    };
    let mut opts = ExportOpts::default();
    opts.max_layers = layers;
    opts.contentmeta = contentmeta.as_ref();
    let digest =
        ostree_ext::container::encapsulate(&repo, rev, &Default::default(), Some(opts), &dest)
            .await?;
    println!(
        "{}",
        serde_json::json!({"digest": digest.to_string(), "seconds": started.elapsed().as_secs_f64()})
    );
    Ok(())
}

/// Every content object of `rev`, keyed by its directory three levels deep.
fn content_map(repo: &ostree::Repo, rev: &str) -> Result<ObjectMetaSized> {
    let (root, _) = repo.read_commit(rev, gio::Cancellable::NONE)?;
    let mut meta = ObjectMeta::default();
    walk(&root, "", 0, &mut meta)?;
    Ok(ObjectMetaSized::compute_sizes(repo, meta)?)
}

fn walk(dir: &gio::File, path: &str, depth: usize, meta: &mut ObjectMeta) -> Result<()> {
    let children = dir.enumerate_children(
        "standard::name,standard::type",
        gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
        gio::Cancellable::NONE,
    )?;
    while let Some(info) = children.next_file(gio::Cancellable::NONE)? {
        let name = info.name();
        let name = name.to_string_lossy();
        let child = children.child(&info);
        if info.file_type() == gio::FileType::Directory {
            let below = if depth < 3 { format!("{path}/{name}") } else { path.to_string() };
            walk(&child, &below, depth + 1, meta)?;
            continue;
        }
        let file = child
            .downcast_ref::<ostree::RepoFile>()
            .context("not an ostree repository file")?;
        let component: ContentID = if path.is_empty() { "/".into() } else { path.into() };
        meta.set.insert(ObjectSourceMeta {
            identifier: component.clone(),
            name: component.clone(),
            srcid: component.clone(),
            change_time_offset: 0,
            change_frequency: 1,
        });
        meta.map.insert(file.checksum().to_string(), component);
    }
    Ok(())
}

//! `strata-ostree-import REPO IMAGE`: imports IMAGE (e.g. `oci:/path:tag`) into the
//! bare-user ostree repository REPO (created if missing) with ostree-ext 0.15.3's
//! `ImageImporter`, the code path of `rpm-ostree rebase` and bootc. Prints JSON: the
//! imported commit, and how many ostree layers were already present beforehand.
//!
//! `strata-ostree-import --encapsulate REPO REV IMAGE`: ostree-ext's own encoder
//! (`ostree container encapsulate`, unchunked), timed, for the benchmark.

use anyhow::{bail, Context, Result};
use ostree_ext::container::store::{ImageImporter, PrepareResult};
use ostree_ext::container::{ImageReference, OstreeImageReference, SignatureSource};
use ostree_ext::ostree;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, repo_path, rev, image] = args.as_slice() {
        if flag == "--encapsulate" {
            return encapsulate(repo_path, rev, image).await;
        }
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

async fn encapsulate(repo_path: &str, rev: &str, image: &str) -> Result<()> {
    let repo = ostree::Repo::new_for_path(repo_path);
    repo.open(ostree::gio::Cancellable::NONE)?;
    let dest = ImageReference::try_from(image)?;
    let started = std::time::Instant::now();
    let digest = ostree_ext::container::encapsulate(
        &repo,
        rev,
        &Default::default(),
        None,
        &dest,
    )
    .await?;
    println!(
        "{}",
        serde_json::json!({"digest": digest.to_string(), "seconds": started.elapsed().as_secs_f64()})
    );
    Ok(())
}

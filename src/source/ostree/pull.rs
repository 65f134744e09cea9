//! Pulls a commit from an archive repository served over HTTP(S) into a local
//! repository, with libostree: how a job reads an ostree source named by URL. GPG
//! verification uses the keys given, and only those.

use std::path::Path;

use ostree::gio;
use ostree::gio::prelude::*;
use ostree::glib;

use super::invalid;
use crate::source::SourceError;

/// The remote's name inside the local repository.
const REMOTE: &str = "origin";

/// A commit to pull.
#[derive(Debug, Clone)]
pub struct Remote<'a> {
    /// The repository's `http://` or `https://` URL.
    pub url: &'a str,
    /// A ref, or a commit checksum.
    pub rev: &'a str,
    /// Armored or binary GPG public keys; with them, the commit must be signed by one.
    pub gpg_keys: Option<&'a Path>,
    /// Pull the commit object alone (its metadata and checksum), not its tree: what a
    /// poll needs.
    pub commit_only: bool,
}

/// libostree's `OSTREE_REPO_PULL_FLAGS_COMMIT_ONLY`.
const PULL_COMMIT_ONLY: i32 = 1 << 3;

/// Checks that `url` is an HTTP(S) URL without credentials or spaces: libostree would
/// take a `file://` URL and read the worker's own files.
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    if host.contains('@') {
        return Err(format!(
            "{url:?} carries credentials; they would show in the job's spec and status"
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} holds whitespace or control characters"));
    }
    Ok(())
}

/// Pulls `remote` into the archive repository at `dest` (made if missing) and
/// returns the commit's checksum.
pub fn pull(remote: &Remote, dest: &Path) -> Result<String, SourceError> {
    let at_url = |problem: String| invalid(Path::new(remote.url), problem);
    check_url(remote.url).map_err(at_url)?;
    let repo = open_or_create(dest)?;
    let options = glib::VariantDict::new(None);
    options.insert_value("gpg-verify", &remote.gpg_keys.is_some().to_variant());
    options.insert_value("gpg-verify-summary", &false.to_variant());
    if let Some(keys) = remote.gpg_keys {
        check_keys(keys)?;
        let path = keys.to_string_lossy().to_string();
        options.insert_value("gpgkeypath", &path.to_variant());
    }
    repo.remote_change(
        None::<&gio::File>,
        ostree::RepoRemoteChange::DeleteIfExists,
        REMOTE,
        None,
        None,
        gio::Cancellable::NONE,
    )
    .and_then(|()| {
        repo.remote_change(
            None::<&gio::File>,
            ostree::RepoRemoteChange::Add,
            REMOTE,
            Some(remote.url),
            Some(&options.end()),
            gio::Cancellable::NONE,
        )
    })
    .map_err(|e| invalid(dest, format!("cannot add the remote: {e}")))?;
    let pull = glib::VariantDict::new(None);
    pull.insert_value("refs", &vec![remote.rev.to_string()].to_variant());
    if remote.commit_only {
        pull.insert_value("flags", &PULL_COMMIT_ONLY.to_variant());
    }
    repo.pull_with_options(REMOTE, &pull.end(), None, gio::Cancellable::NONE)
        .map_err(|e| at_url(format!("cannot pull {:?}: {}", remote.rev, e.message())))?;
    let checksum = repo
        .resolve_rev(&remote_rev(remote.rev), false)
        .map_err(|e| at_url(format!("{:?} after the pull: {e}", remote.rev)))?
        .ok_or_else(|| at_url(format!("the pull left no commit for {:?}", remote.rev)))?;
    Ok(checksum.to_string())
}

/// Pulls `remote` into `dest` unless an earlier pull left the commit there: the
/// commit of that pull, or else a fresh pull's.
pub fn pull_once(remote: &Remote, dest: &Path) -> Result<String, SourceError> {
    if dest.join("config").exists() {
        let repo = open_or_create(dest)?;
        let pulled = repo
            .resolve_rev(&remote_rev(remote.rev), true)
            .ok()
            .flatten()
            .filter(|c| {
                repo.has_object(ostree::ObjectType::Commit, c, gio::Cancellable::NONE)
                    .unwrap_or(false)
            });
        if let Some(checksum) = pulled {
            return Ok(checksum.to_string());
        }
    }
    pull(remote, dest)
}

fn remote_rev(rev: &str) -> String {
    match is_checksum(rev) {
        true => rev.to_string(),
        false => format!("{REMOTE}:{rev}"),
    }
}

fn open_or_create(dest: &Path) -> Result<ostree::Repo, SourceError> {
    let repo = ostree::Repo::new_for_path(dest);
    let made = match dest.join("config").exists() {
        true => repo.open(gio::Cancellable::NONE),
        false => std::fs::create_dir_all(dest)
            .map_err(|e| glib::Error::new(gio::IOErrorEnum::Failed, &e.to_string()))
            .and_then(|()| repo.create(ostree::RepoMode::Archive, gio::Cancellable::NONE)),
    };
    made.map_err(|e| invalid(dest, format!("cannot make a repository to pull into: {e}")))?;
    Ok(repo)
}

/// The keys must be a readable file: libostree would otherwise report a missing key
/// file as a bad signature.
fn check_keys(keys: &Path) -> Result<(), SourceError> {
    match std::fs::metadata(keys) {
        Ok(m) if m.is_file() && m.len() > 0 => Ok(()),
        Ok(_) => Err(invalid(keys, "the GPG keys are not a non-empty file")),
        Err(e) => Err(invalid(keys, format!("cannot read the GPG keys: {e}"))),
    }
}

fn is_checksum(rev: &str) -> bool {
    rev.len() == 64 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn only_plain_http_urls_are_pulled() {
        assert!(check_url("https://ostree.example/repo").is_ok());
        assert!(check_url("http://127.0.0.1:8080/repo").is_ok());
        for (url, says) in [
            ("file:///etc", "not an http"),
            ("/srv/repo", "not an http"),
            ("https://", "names no host"),
            ("https://user:pw@host/repo", "credentials"),
            ("https://host/re po", "whitespace"),
        ] {
            let err = check_url(url).unwrap_err();
            assert!(err.contains(says), "{url}: {err}");
        }
    }
}

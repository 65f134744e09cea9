//! Image references on the command line, in containers-image transport syntax:
//! `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker://REF`, `containers-storage:REF`.

use std::fmt;
use std::path::PathBuf;

/// Where an image lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An OCI layout directory, optionally a tag in it.
    Oci {
        /// The directory.
        dir: PathBuf,
        /// The tag in it; without one, the directory's only image.
        tag: Option<String>,
    },
    /// An OCI layout in a tar file.
    OciArchive {
        /// The tar file.
        file: PathBuf,
        /// The tag in it; without one, the archive's only image.
        tag: Option<String>,
    },
    /// A registry image (`docker://host/repo:tag`).
    Docker(String),
    /// An image in local container storage.
    ContainersStorage(String),
}

fn path_and_tag(rest: &str) -> (PathBuf, Option<String>) {
    match rest.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') && !tag.is_empty() && !path.is_empty() => {
            (PathBuf::from(path), Some(tag.to_string()))
        }
        _ => (PathBuf::from(rest), None),
    }
}

impl std::str::FromStr for ImageRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let empty = || format!("'{s}': nothing after the transport");
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = path_and_tag(rest);
            return if dir.as_os_str().is_empty() {
                Err(empty())
            } else {
                Ok(ImageRef::Oci { dir, tag })
            };
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (file, tag) = path_and_tag(rest);
            return if file.as_os_str().is_empty() {
                Err(empty())
            } else {
                Ok(ImageRef::OciArchive { file, tag })
            };
        }
        if let Some(rest) = s.strip_prefix("docker://") {
            return if rest.is_empty() {
                Err(empty())
            } else {
                Ok(ImageRef::Docker(rest.to_string()))
            };
        }
        if let Some(rest) = s.strip_prefix("containers-storage:") {
            return if rest.is_empty() {
                Err(empty())
            } else {
                Ok(ImageRef::ContainersStorage(rest.to_string()))
            };
        }
        Err(format!("'{s}': expected oci:DIR[:TAG], oci-archive:FILE[:TAG], docker://REF or containers-storage:REF"))
    }
}

impl ImageRef {
    /// A registry reference pinned to `digest` (any tag dropped), so a later read gets
    /// exactly the image that was written; `None` for local transports.
    pub fn pinned(&self, digest: &str) -> Option<ImageRef> {
        let ImageRef::Docker(name) = self else {
            return None;
        };
        let name = name.split_once('@').map_or(name.as_str(), |(n, _)| n);
        let (path, last) = name.rsplit_once('/').unwrap_or(("", name));
        let repo = last.split_once(':').map_or(last, |(r, _)| r);
        let repo = if path.is_empty() {
            repo.to_string()
        } else {
            format!("{path}/{repo}")
        };
        Some(ImageRef::Docker(format!("{repo}@{digest}")))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_tag =
            |f: &mut fmt::Formatter<'_>, prefix: &str, p: &PathBuf, tag: &Option<String>| match tag
            {
                Some(t) => write!(f, "{prefix}:{}:{t}", p.display()),
                None => write!(f, "{prefix}:{}", p.display()),
            };
        match self {
            ImageRef::Oci { dir, tag } => with_tag(f, "oci", dir, tag),
            ImageRef::OciArchive { file, tag } => with_tag(f, "oci-archive", file, tag),
            ImageRef::Docker(r) => write!(f, "docker://{r}"),
            ImageRef::ContainersStorage(r) => write!(f, "containers-storage:{r}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_references_pin_to_a_digest() {
        let pin = |s: &str| {
            s.parse::<ImageRef>()
                .unwrap()
                .pinned("sha256:ab")
                .map(|r| r.to_string())
        };
        assert_eq!(
            pin("docker://127.0.0.1:5000/os/fcos:41").as_deref(),
            Some("docker://127.0.0.1:5000/os/fcos@sha256:ab")
        );
        assert_eq!(
            pin("docker://quay.io/os@sha256:cd").as_deref(),
            Some("docker://quay.io/os@sha256:ab")
        );
        assert_eq!(pin("oci:/tmp/x:1"), None);
    }

    #[test]
    fn parses_every_transport() {
        let r: ImageRef = "oci:/tmp/out:v1".parse().unwrap();
        assert_eq!(
            r,
            ImageRef::Oci {
                dir: "/tmp/out".into(),
                tag: Some("v1".into())
            }
        );
        let r: ImageRef = "oci:out".parse().unwrap();
        assert_eq!(
            r,
            ImageRef::Oci {
                dir: "out".into(),
                tag: None
            }
        );
        let r: ImageRef = "docker://127.0.0.1:5000/os:1".parse().unwrap();
        assert_eq!(r, ImageRef::Docker("127.0.0.1:5000/os:1".into()));
        assert_eq!(r.to_string(), "docker://127.0.0.1:5000/os:1");
        assert!(matches!(
            "oci-archive:/x.tar".parse::<ImageRef>().unwrap(),
            ImageRef::OciArchive { .. }
        ));
        assert!("quay.io/x"
            .parse::<ImageRef>()
            .unwrap_err()
            .contains("expected oci:"));
        assert!("docker://".parse::<ImageRef>().is_err());
    }
}

//! Image references on the command line: `oci:DIR[:TAG]` for OCI layout directories.

use std::fmt;
use std::path::PathBuf;

/// Where an image lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An OCI layout directory, optionally a tag in it.
    Oci { dir: PathBuf, tag: Option<String> },
}

impl std::str::FromStr for ImageRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(rest) = s.strip_prefix("oci:") else {
            return Err(format!(
                "'{s}': only oci:DIR[:TAG] references are supported so far (registries come with skopeo support)"
            ));
        };
        let (dir, tag) = match rest.rsplit_once(':') {
            Some((dir, tag)) if !tag.contains('/') && !tag.is_empty() => {
                (dir, Some(tag.to_string()))
            }
            _ => (rest, None),
        };
        if dir.is_empty() {
            return Err(format!("'{s}': the directory is empty"));
        }
        Ok(ImageRef::Oci {
            dir: PathBuf::from(dir),
            tag,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Oci { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            ImageRef::Oci { dir, tag: None } => write!(f, "oci:{}", dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dir_and_tag() {
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
        assert!("docker://x"
            .parse::<ImageRef>()
            .unwrap_err()
            .contains("only oci:"));
    }
}

//! The components map (`--components-map FILE`): globs that put files into named
//! components, ahead of the package database.
//!
//! Format: a JSON list, first match wins.
//! `[{"glob": "/usr/lib/firmware/**", "component": "firmware"}, …]`

use std::path::Path;

use globset::{Glob, GlobMatcher};
use serde::Deserialize;

use crate::input::{self, InputError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    glob: String,
    component: String,
}

/// Compiled rules, in file order.
#[derive(Debug, Clone, Default)]
pub struct ComponentMap {
    rules: Vec<(GlobMatcher, String)>,
}

impl ComponentMap {
    /// Reads and compiles a map file, naming the rule at fault.
    pub fn read(path: &Path) -> Result<ComponentMap, InputError> {
        let rules: Vec<Rule> = input::read_json(path, "a components map")?;
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, rule) in rules.into_iter().enumerate() {
            if rule.component.is_empty() {
                return Err(InputError::invalid(
                    path,
                    format!("[{i}].component"),
                    "is empty",
                ));
            }
            let glob = Glob::new(&rule.glob)
                .map_err(|e| InputError::invalid(path, format!("[{i}].glob"), e.to_string()))?;
            compiled.push((glob.compile_matcher(), rule.component));
        }
        Ok(ComponentMap { rules: compiled })
    }

    /// The component of `rel` (relative to the root), if a rule names one.
    pub fn component_of(&self, rel: &Path) -> Option<&str> {
        let absolute = Path::new("/").join(rel);
        self.rules
            .iter()
            .find(|(m, _)| m.is_match(&absolute))
            .map(|(_, c)| c.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_wins_and_bad_globs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.json");
        std::fs::write(
            &path,
            r#"[{"glob": "/usr/lib/firmware/amd*/**", "component": "amd-firmware"},
                {"glob": "/usr/lib/firmware/**", "component": "firmware"}]"#,
        )
        .unwrap();
        let map = ComponentMap::read(&path).unwrap();
        assert_eq!(
            map.component_of(Path::new("usr/lib/firmware/amdgpu/x.bin")),
            Some("amd-firmware")
        );
        assert_eq!(
            map.component_of(Path::new("usr/lib/firmware/iwlwifi.ucode")),
            Some("firmware")
        );
        assert_eq!(map.component_of(Path::new("usr/bin/bash")), None);
        std::fs::write(&path, r#"[{"glob": "/usr/[", "component": "x"}]"#).unwrap();
        let err = ComponentMap::read(&path).unwrap_err().to_string();
        assert!(err.contains("[0].glob"), "{err}");
    }
}

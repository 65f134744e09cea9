//! Building by a plan made earlier (`--plan FILE`): the plan must still describe the
//! source exactly, or the layers would not hold what it promises.

use std::collections::BTreeMap;

use super::{Plan, PlanError};
use crate::components::Build;

impl Plan {
    /// A plan made earlier must place exactly the components the tree has now, at the
    /// same versions; anything else means the source changed in between.
    pub fn check_matches(&self, build: &Build) -> Result<(), PlanError> {
        let mut planned: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        let every = self.layers.iter().flat_map(|l| &l.components);
        for c in every.chain(&self.patch_members) {
            if planned.insert(&c.name, c.version.as_deref()).is_some() {
                return Err(PlanError::Duplicate {
                    component: c.name.clone(),
                });
            }
        }
        let actual: BTreeMap<&str, Option<&str>> = build
            .components
            .iter()
            .map(|c| (c.name.as_str(), Some(c.version.as_str())))
            .collect();
        if planned == actual {
            return Ok(());
        }
        let differs = actual
            .iter()
            .find(|(name, version)| planned.get(*name) != Some(*version))
            .map(|(name, _)| *name)
            .or_else(|| planned.keys().find(|n| !actual.contains_key(*n)).copied())
            .unwrap_or_default();
        Err(PlanError::Mismatch {
            component: differs.to_string(),
        })
    }
}

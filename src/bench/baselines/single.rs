//! The simplest baselines: one layer, and the largest components alone.

use super::{layout_of, sorted_by_size, Strategy, StrategyName};
use crate::components::Build;
use crate::layout::Layout;

/// Everything in one layer.
pub(super) struct Single;

impl Strategy for Single {
    fn name(&self) -> StrategyName {
        StrategyName::Single
    }
    fn layout(&mut self, build: &Build, _: &[Layout]) -> Layout {
        layout_of(build, vec![(0..build.components.len()).collect()])
    }
}

/// The N − 1 largest components alone, the rest in one layer.
pub(super) struct LargestFirst(pub(super) usize);

impl Strategy for LargestFirst {
    fn name(&self) -> StrategyName {
        StrategyName::LargestFirst
    }
    fn layout(&mut self, build: &Build, _: &[Layout]) -> Layout {
        let by_size = sorted_by_size(build, (0..build.components.len()).collect());
        let alone = by_size.len().min(self.0 - 1);
        let mut groups: Vec<Vec<usize>> = by_size[..alone].iter().map(|&i| vec![i]).collect();
        groups.push(by_size[alone..].to_vec());
        layout_of(build, groups)
    }
}

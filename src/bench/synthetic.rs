//! A synthetic stream for timing the planner at sizes no real history has: a
//! deterministic pseudo-random build of N components with M prior builds.

use crate::components::{Build, Component, ComponentKind};
use crate::layout::{Layout, LayoutComponent, LayoutLayer};

/// One build in eight changes a component of the calmest class; one in two the busiest.
const CHANGE_EIGHTHS: [u64; 4] = [0, 1, 2, 4];

fn mix(a: u64, b: u64) -> u64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 31;
    x.wrapping_mul(0x94D0_49BB_1331_11EB) ^ (x >> 29)
}

/// Version of component `i` at build `b`: how many times it changed up to then.
fn version(i: u64, b: u64) -> u64 {
    let eighths = CHANGE_EIGHTHS[(i % 4) as usize];
    (1..=b).filter(|&k| mix(i, k) % 8 < eighths).count() as u64
}

/// The newest build (index `priors`) and its `priors` predecessors as layouts with
/// `layers` layers each, newest first.
pub fn stream(components: usize, priors: usize, layers: usize) -> (Build, Vec<Layout>) {
    let n = components as u64;
    let size = |i: u64| 1_000 + mix(i, 0) % 2_000_000;
    let source = |i: u64| format!("src{}", i / 3);
    let build = Build {
        date: None,
        components: (0..n)
            .map(|i| Component {
                name: format!("pkg{i:06}"),
                version: version(i, priors as u64).to_string(),
                size: size(i),
                source: Some(source(i)),
                changelog: vec![],
                update_interval_days: None,
                kind: ComponentKind::Package,
            })
            .collect(),
    };
    let per_layer = components.div_ceil(layers.max(1)).max(1);
    let layouts = (0..priors as u64)
        .rev()
        .map(|b| Layout {
            origin: format!("synthetic build {b}"),
            date: None,
            generation: Some(b),
            layers: (0..n)
                .collect::<Vec<_>>()
                .chunks(per_layer)
                .map(|chunk| {
                    LayoutLayer::planned(
                        chunk
                            .iter()
                            .map(|&i| LayoutComponent {
                                name: format!("pkg{i:06}"),
                                version: Some(version(i, b).to_string()),
                                size: size(i),
                                source: Some(source(i)),
                            })
                            .collect(),
                    )
                })
                .collect(),
        })
        .collect();
    (build, layouts)
}

//! Replays the first builds of a real Fedora CoreOS stream, when the shared bench data
//! is present beside the repository, and checks Strata beats the baselines.

use std::path::PathBuf;

use strata::bench::baselines::StrategyName;
use strata::bench::read_history;
use strata::bench::replay::{replay, ReplayOptions};
use strata::plan::PlanOptions;

fn bench_file(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/bench")
        .join(name);
    path.exists().then_some(path)
}

#[test]
fn strata_downloads_less_than_the_baselines_on_fcos_stable() {
    let Some(path) = bench_file("fcos-stable-2019-2021.jsonl.gz") else {
        println!("skipped: ../shared/bench/fcos-stable-2019-2021.jsonl.gz is not present");
        return;
    };
    let history: Vec<_> = read_history(&path).unwrap().into_iter().take(20).collect();
    let opts = PlanOptions::default();
    let ro = ReplayOptions {
        warmup: 5,
        history_depth: 100,
    };
    let mean = |name: StrategyName| {
        let mut s = name.build(&opts, ro.warmup);
        replay(&history, s.as_mut(), &ro, |_| {})
    };
    let strata = mean(StrategyName::Strata);
    println!(
        "strata: {:.1} MB, ratio {:.4}",
        strata.mean_download_bytes / 1e6,
        strata.ratio_to_lower_bound
    );
    assert!(strata.ratio_to_lower_bound >= 1.0);
    for baseline in [StrategyName::LargestFirst, StrategyName::OstreeExtPrior] {
        let other = mean(baseline);
        println!("{baseline}: {:.1} MB", other.mean_download_bytes / 1e6);
        assert!(
            strata.mean_download_bytes < other.mean_download_bytes,
            "strata {} vs {baseline} {}",
            strata.mean_download_bytes,
            other.mean_download_bytes
        );
    }
}

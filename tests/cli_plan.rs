//! `strata plan` end to end: the real binary on real files.
//!
//! And the first builds of a real Fedora CoreOS stream replayed, when the shared bench
//! data is present beside the repository: Strata beats the baselines.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use strata::bench::baselines::StrategyName;
use strata::bench::read_history;
use strata::bench::replay::{replay, ReplayOptions};
use strata::plan::PlanOptions;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn components(versions: &[(&str, &str, u64)]) -> String {
    let list: Vec<Value> = versions
        .iter()
        .map(|(n, v, s)| serde_json::json!({"name": n, "version": v, "size": s, "source": n}))
        .collect();
    serde_json::json!({"date": "2024-01-01", "components": list}).to_string()
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("plan JSON")
}

#[test]
fn a_second_build_reuses_the_unchanged_layers_of_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let b1 = write(
        dir.path(),
        "b1.json",
        &components(&[("a", "1", 100), ("b", "1", 200), ("c", "1", 300)]),
    );
    let b2 = write(
        dir.path(),
        "b2.json",
        &components(&[("a", "2", 100), ("b", "1", 200), ("c", "1", 300)]),
    );
    let plan1 = dir.path().join("plan1.json");
    let out = strata(&args!["plan", "--components", b1, "-o", plan1,]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: Value = serde_json::from_str(&std::fs::read_to_string(&plan1).unwrap()).unwrap();
    assert_eq!(first["schema"], "strata.plan/v1");
    assert_eq!(first["layers"].as_array().unwrap().len(), 3);

    let second = stdout_json(&strata(&args![
        "plan",
        "--components",
        b2,
        "--prior",
        plan1,
    ]));
    let download = &second["prediction"]["download"];
    assert_eq!(download["reused_layers"], 2);
    assert_eq!(download["download_bytes"], 100);
    assert_eq!(download["lower_bound_bytes"], 100);
    let actions: Vec<(&str, &str)> = second["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["component"].as_str().unwrap(),
                d["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(actions, [("a", "updated"), ("b", "kept"), ("c", "kept")]);

    let again = strata(&args!["plan", "--components", b2, "--prior", plan1,]);
    assert_eq!(
        again.stdout,
        strata(&args!["plan", "--components", b2, "--prior", plan1]).stdout
    );

    let table = strata(&args![
        "plan",
        "--components",
        b2,
        "--prior",
        plan1,
        "--format",
        "table",
    ]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("1 updated"), "{text}");
    assert!(text.contains("2 of 3 layers reused"), "{text}");
}

#[test]
fn gzipped_inputs_are_read() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.json.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(components(&[("a", "1", 1)]).as_bytes())
        .unwrap();
    gz.finish().unwrap();
    let plan = stdout_json(&strata(&args!["plan", "--components", path]));
    assert_eq!(plan["layers"][0]["components"][0]["name"], "a");
}

#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.json", &components(&[("a", "1", 1)]));
    let broken = write(
        dir.path(),
        "broken.json",
        r#"{"components": [{"name": "a", "version": "1"}]}"#,
    );
    let dup_prior = write(
        dir.path(),
        "prior.json",
        r#"{"layers": [{"components": [{"name": "a", "version": "1"}]},
                       {"components": [{"name": "a", "version": "1"}]}]}"#,
    );
    let out_file = dir.path().join("plan.json");
    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (args!["--components", broken], "missing field `size`"),
        (
            args!["--components", "/nonexistent/b.json"],
            "/nonexistent/b.json: cannot read",
        ),
        (
            args!["--components", good, "--max-layers", "1"],
            "--max-layers 1",
        ),
        (
            args!["--components", good, "--max-layers", "300",],
            "--allow-over-127",
        ),
        (
            args!["--components", good, "--prior", dup_prior,],
            "layers[1].components[0].name: 'a' is already in layer 0",
        ),
    ];
    for (args, expected) in cases {
        let mut full = args!["plan"];
        full.extend(args.iter().cloned());
        full.extend(args!["-o", out_file]);
        let out = strata(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err} lacks {expected}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out_file.exists(), "{args:?} left output behind");
    }
}

/// `strata crd | head`: a reader that stops early ends the output quietly and
/// successfully, with no panic.
#[test]
fn a_closed_pipe_ends_output_without_a_panic() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("crd")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The read end is closed here, long before the CRD's ~100 KB are written.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.is_empty(), "{err}");
    assert!(out.status.success(), "{:?}: {err}", out.status);
}

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

//! `osp bench` reaches the benchmarks in the `osp-bench` binary beside it, and a small
//! benchmark measures both sides against a real nats-server.

use std::path::Path;
use std::process::Command;

#[test]
fn osp_bench_runs_the_benchmark_binary_beside_it() {
    let bench = Path::new(env!("CARGO_BIN_EXE_osp-bench"));
    // cargo builds every binary of the workspace into one folder before it runs tests.
    let osp = bench.with_file_name(format!("osp{}", std::env::consts::EXE_SUFFIX));
    assert!(osp.is_file(), "{} is not built: run the tests of the workspace", osp.display());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new(&osp)
        .args(["bench", "eventlog", "--events", "200", "--samples", "20", "--json"])
        .current_dir(workspace)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON report");
    assert_eq!(report["benchmark"], "eventlog");
    assert_eq!(report["events"], 200);
    for figure in ["raw_publish_per_s", "append_per_s", "raw_read_per_s", "replay_per_s"] {
        assert!(report[figure].as_f64().is_some_and(|rate| rate > 0.0), "{figure}: {report}");
    }
}

#[test]
fn osp_bench_help_lists_every_benchmark() {
    let output = Command::new(env!("CARGO_BIN_EXE_osp-bench")).arg("--help").output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for benchmark in ["eventlog", "registry", "scheduler", "workflows", "quality", "context", "replay", "scale"] {
        assert!(help.contains(benchmark), "{benchmark} missing from:\n{help}");
    }
    assert!(help.contains("Usage: osp bench"), "{help}");
}

#[test]
fn osp_bench_scale_measures_an_osp_scheduler_process_beside_it() {
    let bench = Path::new(env!("CARGO_BIN_EXE_osp-bench"));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let sizes = ["--runs", "300", "--first", "100", "--baseline-runs", "100", "--active", "20", "--in-flight", "16"];
    let instances = ["--instances", "1", "--scale-runs", "200", "--takeovers", "1", "--takeover-load", "4"];
    let output = Command::new(bench)
        .args(["scale", "--keep-finished", "1s", "--json"])
        .args(sizes)
        .args(instances)
        .current_dir(workspace)
        .output()
        .unwrap();
    // Exit code 2 says memory grew beyond the target, which a run this small cannot judge.
    assert!(matches!(output.status.code(), Some(0 | 2)), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON report");
    assert_eq!(report["benchmark"], "scale");
    assert_eq!(report["runs"], 300);
    let checkpoints: Vec<u64> =
        report["resident_bytes_after"].as_array().unwrap().iter().map(|c| c["runs"].as_u64().unwrap()).collect();
    assert_eq!(checkpoints, [100, 300]);
    for figure in ["bytes_per_finished_run", "bytes_per_active_run", "runs_per_s"] {
        assert!(report[figure].as_f64().is_some(), "{figure}: {report}");
    }
    assert!(report["baseline_keeping_all"]["bytes_per_finished_run"].as_f64().is_some(), "{report}");

    // One instance holding every run, then one holding them in partitions (the takeovers
    // have three share them).
    let rows = report["instances"].as_array().expect("rows of instances");
    let shape: Vec<(u64, bool)> =
        rows.iter().map(|row| (row["instances"].as_u64().unwrap(), row["partitioned"].as_bool().unwrap())).collect();
    assert_eq!(shape, [(1, false), (1, true)], "{report}");
    for row in rows {
        assert_eq!(row["runs"], 200, "{row}");
        let figure = |name: &str| row[name].as_f64().unwrap_or_else(|| panic!("{name} missing: {row}"));
        assert!(figure("runs_per_s") > 0.0 && figure("cpu_us_per_run_total") > 0.0, "{row}");
        assert!(figure("cpu_us_per_run_mean") <= figure("cpu_us_per_run_max"), "{row}");
        assert!(figure("cpu_us_per_run_max") <= figure("cpu_us_per_run_total"), "{row}");
    }
    let takeover = &report["takeover_ms"];
    assert_eq!(takeover["samples"].as_array().map(Vec::len), Some(1), "{report}");
    let pauses = takeover["join_pause_ms"].as_array().expect("the pause while an instance joined");
    assert!(pauses.len() == 1 && pauses[0].as_f64().is_some_and(|pause| pause > 0.0), "{report}");
    let (p50, p99, max) = (takeover["p50"].as_f64(), takeover["p99"].as_f64(), takeover["max"].as_f64());
    assert!(p99.is_some_and(|p99| p99 > 0.0) && p50 <= p99 && p99 <= max, "{report}");
}

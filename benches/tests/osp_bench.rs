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
    let output = Command::new(bench)
        .args(["scale", "--keep-finished", "1s", "--json"])
        .args(sizes)
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
}

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
    for benchmark in ["eventlog", "registry", "scheduler", "workflows", "quality", "context", "replay"] {
        assert!(help.contains(benchmark), "{benchmark} missing from:\n{help}");
    }
    assert!(help.contains("Usage: osp bench"), "{help}");
}

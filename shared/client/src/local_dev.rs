//! Where a local `osp dev` can be found, so that the commands and agents run in other
//! terminals of the same machine reach it without being told its URL.
//!
//! `osp dev` writes its URL to `<state>/osp/dev/<pid>.url` (`<state>` is
//! `$XDG_STATE_HOME`, else `~/.local/state`) once its services are up, and removes the
//! file when it stops. A reader takes the newest record whose process is still alive, so
//! a second `osp dev` (say, of a bug report's log) is the one in use while it runs, and
//! the first one again after it stops. An explicit URL (`OSP_NATS_URL`, `--nats-url`)
//! always wins over a record.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Where a NATS server usually listens when nothing says otherwise.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// The NATS URL to use when none was given: `OSP_NATS_URL`, else the newest running
/// `osp dev`'s, else [`DEFAULT_NATS_URL`].
pub fn nats_url() -> String {
    if let Some(url) = std::env::var("OSP_NATS_URL").ok().filter(|url| !url.trim().is_empty()) {
        return url;
    }
    records_dir().and_then(|dir| newest_live_record(&dir)).unwrap_or_else(|| DEFAULT_NATS_URL.to_owned())
}

/// A running `osp dev`'s record of its URL; removed when dropped.
#[derive(Debug)]
pub struct DevRecord {
    path: PathBuf,
}

impl DevRecord {
    /// Records `url` as this process's, clearing the records of processes that died
    /// without removing theirs (e.g. killed with SIGKILL). `None` when there is no state
    /// folder to write to (no `HOME`): the other terminals then need `OSP_NATS_URL`.
    pub fn publish(url: &str) -> std::io::Result<Option<DevRecord>> {
        let Some(dir) = records_dir() else { return Ok(None) };
        std::fs::create_dir_all(&dir)?;
        for (path, pid) in records(&dir) {
            if !is_alive(pid) {
                let _ = std::fs::remove_file(path);
            }
        }
        let path = dir.join(format!("{}.url", std::process::id()));
        std::fs::write(&path, format!("{url}\n"))?;
        Ok(Some(DevRecord { path }))
    }

    /// The file the URL was written to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DevRecord {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn records_dir() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME").filter(|dir| !dir.is_empty()).map(PathBuf::from).or_else(|| {
        let home = std::env::var_os("HOME").filter(|home| !home.is_empty())?;
        Some(Path::new(&home).join(".local/state"))
    })?;
    Some(state.join("osp").join("dev"))
}

/// The records in `dir` with the process id each is named after.
fn records(dir: &Path) -> Vec<(PathBuf, u32)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let pid = path.file_name()?.to_str()?.strip_suffix(".url")?.parse().ok()?;
            Some((path, pid))
        })
        .collect()
}

fn newest_live_record(dir: &Path) -> Option<String> {
    records(dir)
        .into_iter()
        .filter(|(_, pid)| is_alive(*pid))
        .filter_map(|(path, _)| {
            let written = std::fs::metadata(&path).and_then(|meta| meta.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
            let url = std::fs::read_to_string(&path).ok()?.trim().to_owned();
            (!url.is_empty()).then_some((written, url))
        })
        .max_by_key(|(written, _)| *written)
        .map(|(_, url)| url)
}

#[cfg(unix)]
fn is_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // Signal 0 checks that the process exists without touching it; EPERM means it exists
    // but belongs to someone else.
    // SAFETY: kill with signal 0 sends nothing; it only reads whether `pid` exists.
    let sent = unsafe { libc::kill(pid, 0) };
    sent == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn is_alive(_pid: u32) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_record_of_a_live_process_wins_and_dead_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let dead = u32::try_from(i32::MAX).unwrap();
        std::fs::write(dir.path().join(format!("{dead}.url")), "nats://127.0.0.1:1\n").unwrap();
        assert_eq!(newest_live_record(dir.path()), None);

        let ours = std::process::id();
        std::fs::write(dir.path().join(format!("{ours}.url")), "nats://127.0.0.1:4300\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a record").unwrap();
        assert_eq!(newest_live_record(dir.path()).as_deref(), Some("nats://127.0.0.1:4300"));

        // Another live process (pid 1 always is) that wrote later is the newest.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("1.url"), "nats://127.0.0.1:4301\n").unwrap();
        assert_eq!(newest_live_record(dir.path()).as_deref(), Some("nats://127.0.0.1:4301"));
    }
}

//! What the `osp` binary tests share: running `osp` against a server, and `osp dev` in
//! a folder of its own.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// Runs `osp args...` against the server at `url` and waits for it to finish.
pub fn osp(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_osp")).args(args).env("OSP_NATS_URL", url).output().expect("run osp")
}

/// `osp dev` running in `folder` on a free port, and what it printed on starting.
pub struct Dev {
    /// The process; killed when dropped.
    pub process: Child,
    /// The URL from its first line.
    pub url: String,
    /// Its lines up to "Ctrl-C to stop.", the first included.
    pub banner: Vec<String>,
    /// Its stdout, kept open: its last words need a reader.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl Dev {
    /// Starts `osp dev --port <free> extra...` in `folder` and reads its banner.
    pub async fn start(folder: &Path, extra: &[&str]) -> Dev {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut process = tokio::process::Command::new(env!("CARGO_BIN_EXE_osp"))
            .args(["dev", "--port", &port.to_string()])
            .args(extra)
            .env_remove("OSP_NATS_URL")
            .current_dir(folder)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(process.stdout.take().unwrap()).lines();
        let mut banner = Vec::new();
        while let Some(line) = tokio::time::timeout(Duration::from_secs(60), stdout.next_line()).await.unwrap().unwrap()
        {
            if line == "Ctrl-C to stop." {
                break;
            }
            banner.push(line);
        }
        let first = banner.first().expect("osp dev printed its banner");
        let url = first.strip_prefix("OSP is up on ").expect("the first line gives the URL").to_owned();
        Dev { process, url, banner, _stdout: stdout }
    }

    /// Sends Ctrl-C and checks that it exits cleanly.
    pub async fn stop(mut self) {
        Command::new("kill").args(["-INT", &self.process.id().unwrap().to_string()]).status().unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.process.wait()).await.unwrap().unwrap();
        assert!(status.success(), "{status:?}");
    }
}

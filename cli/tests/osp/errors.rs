//! What a person sees when a command fails: one line of words on stderr starting with
//! `error: `, each cause said once, no Rust debug text, and a non-zero exit status.

use crate::common::command;

/// Runs `osp args...` against `url`, expects it to fail, and checks that its stderr reads
/// as an error for a person; returns the stderr.
async fn fails_cleanly(url: &str, args: &[&str]) -> String {
    let out = command(url, args).output().await.expect("run osp");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "osp {args:?} succeeded\nstdout: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.starts_with("error: "), "osp {args:?}: {stderr}");
    for debug in ["{ kind:", "Error {", "Some(", "source:", "Kind::", "TimedOut"] {
        assert!(!stderr.contains(debug), "osp {args:?} shows Rust debug text {debug:?}: {stderr}");
    }
    stderr
}

/// A port nothing listens on.
fn closed_port() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("nats://127.0.0.1:{port}")
}

#[tokio::test]
async fn without_a_server_each_cause_is_said_once() {
    let url = closed_port();
    let stderr = fails_cleanly(&url, &["run", "list"]).await;
    assert!(stderr.contains(&format!("cannot connect to NATS at {url}")), "{stderr}");
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

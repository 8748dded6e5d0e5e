//! What a person sees when a command fails: one line of words on stderr starting with
//! `error: `, each cause said once, no Rust debug text, and a non-zero exit status.

use osp_local_nats::NatsServer;

use crate::common::{command, ok, Dev};

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
    assert!(!has_debug_newtype(&stderr), "osp {args:?} shows a Rust type's debug text: {stderr}");
    stderr
}

/// Whether `text` holds a value in a Rust type's Debug form, `Token("a")`: a word in
/// CamelCase right before `("`.
fn has_debug_newtype(text: &str) -> bool {
    text.match_indices("(\"").any(|(at, _)| {
        // The word before, read backwards: its last letter here is its first.
        let word: Vec<char> = text[..at].chars().rev().take_while(|c| c.is_alphanumeric()).collect();
        word.last().is_some_and(char::is_ascii_uppercase) && word.iter().any(char::is_ascii_lowercase)
    })
}

/// A port nothing listens on.
fn closed_port() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("nats://127.0.0.1:{port}")
}

#[test]
fn debug_newtypes_are_recognised() {
    assert!(has_debug_newtype(r#"the log has no run Token("nope")"#));
    assert!(!has_debug_newtype(r#"error: --where "x" (a "quoted" word), ANSWER("yes")"#));
}

#[tokio::test]
async fn without_a_server_each_cause_is_said_once() {
    let url = closed_port();
    let stderr = fails_cleanly(&url, &["run", "list"]).await;
    assert!(stderr.contains(&format!("cannot connect to NATS at {url}")), "{stderr}");
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// Runs `osp args...` against `url` for each of `cases`, expecting each to fail cleanly
/// with `words` in its stderr.
async fn each_fails_cleanly(url: &str, cases: &[(&[&str], &str)]) {
    for (args, words) in cases {
        let stderr = fails_cleanly(url, args).await;
        assert!(stderr.contains(words), "osp {args:?}: {words:?} in {stderr}");
    }
}

#[tokio::test]
async fn every_failure_reads_as_words() {
    // No server at all.
    let closed = closed_port();
    let cases: &[(&[&str], &str)] = &[
        (&["registry", "ls"], "cannot connect to NATS"),
        (&["settings", "ls"], "cannot connect to NATS"),
        (&["log", "verify"], "cannot connect to NATS"),
        (&["replay", "run", "r-1"], "cannot connect to NATS"),
        (&["run", "watch", "r-1"], "cannot connect to NATS"),
    ];
    each_fails_cleanly(&closed, cases).await;

    // A server with no OSP service, nor its streams.
    let bare = NatsServer::start().await.unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["run", "list"], "no instance of the scheduler service is running"),
        (&["registry", "list", "agents"], "no instance of the registry service is running"),
        (&["agents", "--live"], "no instance of the registry service is running"),
        (&["settings", "ls"], "no instance of the context service is running"),
        (&["audit", "show", "a-1"], "no instance of the quality service is running"),
        (&["ctx", "set", "global", "k", "1"], "this NATS server has no OSP streams"),
        (&["events", "replay"], "stream not found"),
        (&["replay", "run", "r-1"], "stream not found"),
    ];
    each_fails_cleanly(&bare.url(), cases).await;

    // Everything running: what a person may get wrong.
    let folder = tempfile::tempdir().unwrap();
    let dev = Dev::start(folder.path(), &[]).await;
    let url = dev.url.clone();
    ok(&url, &["settings", "set", "max_tokens", "4096", "--read-only"]).await;
    ok(&url, &["env", "set", "global", "API_KEY", "s3cr3t", "--sensitive"]).await;
    ok(&url, &["embed", "upsert", "global", "--id", "x", "--vector", "[1, 0]"]).await;
    let cases: &[(&[&str], &str)] = &[
        (&["run", "get", "nope"], "no run with id \"nope\""),
        (&["run", "approve", "nope"], "no run with id \"nope\""),
        (&["replay", "run", "nope"], "the log has no run \"nope\""),
        (&["replay", "run", "a.b"], "invalid run id \"a.b\""),
        (&["run", "submit", "work", "--input", "{oops"], "--input: invalid JSON"),
        (&["run", "submit", "work", "--metadata", "[1,"], "--metadata: invalid JSON"),
        (&["run", "submit", "work", "--timeout", "soon"], "invalid value 'soon' for '--timeout <DURATION>'"),
        (&["run", "cancel", "r-1", "--graceful", "soon"], "invalid value 'soon'"),
        (&["run", "submit", "work", "--timeout", "0s"], "invalid --timeout: must be more than 0 ms"),
        (&["run", "submit", "nobody"], "set --wait-for-agent to queue the run"),
        (&["ctx", "get", "global", "k", "--at", "yesterday"], "--at \"yesterday\": expected RFC 3339"),
        (&["registry", "get", "agents", "nobody"], "no entry named \"nobody\" in the agents registry"),
        (&["registry", "find", "tools", "--live"], "only agents have liveness; the tools registry has none"),
        (&["registry", "list", "A"], "invalid registry \"A\""),
        (&["ctx", "get", "nowhere:x", "k"], "unknown scope kind \"nowhere\""),
        (&["ctx", "get", "run:", "k"], "\"run:\" names no run"),
        (&["prefs", "set", "global", "tone", "dry"], "system-level preferences are the settings"),
        (&["settings", "set", "max_tokens", "1"], "cannot set setting max_tokens: it is read-only"),
        (&["env", "get", "global", "API_KEY", "--reveal", "--as", "user:eve"], "may not reveal API_KEY of global"),
        (&["embed", "search", "global", "--vector", "[1, 0, 0]"], "has 3 dimensions"),
        (&["embed", "search", "global", "--text", "cats"], "no registered agent offers it"),
        (&["audit", "show", "nope"], "no audit entry with id \"nope\""),
        (&["rules", "get", "nope"], "no rule named \"nope\""),
        (&["events", "tail", "--subject", "a..b"], "cannot create a replay consumer"),
    ];
    each_fails_cleanly(&url, cases).await;
    dev.stop().await;
}

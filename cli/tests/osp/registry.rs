//! The registry commands as an operator runs them: `osp dev` (which runs the registry),
//! then `osp registry ...` and `osp agents` against it; and against a server with no
//! registry at all.

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{osp, Dev};
use serde_json::{json, Value};

/// Runs `osp` and expects success; its stdout.
fn ok(url: &str, args: &[&str]) -> String {
    let out = osp(url, args);
    assert!(out.status.success(), "osp {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `osp` and expects exit status 1; its stderr.
fn fails(url: &str, args: &[&str]) -> String {
    let out = osp(url, args);
    assert_eq!(out.status.code(), Some(1), "osp {args:?}: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

/// Runs `osp` with `input` on stdin.
fn with_stdin(url: &str, args: &[&str], input: &str) -> Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_osp"))
        .args(args)
        .env("OSP_NATS_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// The NDJSON lines of `osp args... --json`.
fn json_lines(url: &str, args: &[&str]) -> Vec<Value> {
    let args: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
    ok(url, &args).lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn names(entries: &[Value]) -> Vec<&str> {
    entries.iter().map(|entry| entry["name"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn register_list_find_and_unregister_through_the_cli() {
    let folder = tempfile::tempdir().unwrap();
    // Agents registered here do not heartbeat: they go offline after a second of silence.
    let dev = Dev::start(folder.path(), &["--offline-after", "1s"]).await;
    let url = dev.url.clone();
    let services = "  services: registry, scheduler, quality, context";
    assert!(dev.banner.iter().any(|line| line.starts_with(services)), "{:?}", dev.banner);

    // Register: an agent inline, a tool from a file, and the tool again.
    let card = r#"{"capabilities": ["summarize", "translate"], "max_concurrency": 4, "version": "1.2.0",
                   "endpoint": {"region": "eu"}}"#;
    let registered = ok(
        &url,
        &[
            "registry",
            "register",
            "agents",
            "summarizer-1",
            "--description",
            "Summarises documents",
            "--resource",
            card,
        ],
    );
    assert_eq!(registered, "registered agents/summarizer-1 (revision 1)\n");
    let file = folder.path().join("grep.json");
    std::fs::write(&file, r#"{"command": "grep", "args": ["-r"]}"#).unwrap();
    let resource = format!("@{}", file.display());
    let tool =
        ["registry", "register", "tools", "grep", "--resource", &resource, "--metadata", r#"{"team": "search"}"#];
    assert_eq!(ok(&url, &tool), "registered tools/grep (revision 1)\n");
    assert_eq!(ok(&url, &tool), "updated tools/grep (revision 2)\n");
    let from_stdin = with_stdin(
        &url,
        &["registry", "register", "agents", "translator-1", "--resource", "-", "--json"],
        r#"{"capabilities": ["translate"], "endpoint": {"region": "us"}}"#,
    );
    assert!(from_stdin.status.success(), "{}", String::from_utf8_lossy(&from_stdin.stderr));
    let outcome: Value = serde_json::from_slice(&from_stdin.stdout).unwrap();
    assert_eq!(
        (&outcome["name"], &outcome["revision"], &outcome["created"]),
        (&json!("translator-1"), &json!(1), &json!(true))
    );

    // List, as a table and as JSON.
    let table = ok(&url, &["registry", "list", "agents"]);
    for expected in
        ["NAME", "STATUS", "REVISION", "UPDATED", "DESCRIPTION", "summarizer-1", "translator-1", "Summarises documents"]
    {
        assert!(table.contains(expected), "{expected} in\n{table}");
    }
    // The registries themselves, with their counts.
    let registries = json_lines(&url, &["registry", "ls"]);
    assert_eq!(registries.len(), 2, "{registries:?}");
    assert_eq!((&registries[0]["registry"], &registries[0]["entries"]), (&json!("agents"), &json!(2)));
    assert!(registries[0]["online"].is_u64(), "agents say how many are online: {registries:?}");
    assert_eq!(registries[1], json!({"registry": "tools", "entries": 1}));
    let table = ok(&url, &["registry", "list"]);
    let words: Vec<Vec<&str>> = table.lines().map(|line| line.split_whitespace().collect()).collect();
    assert_eq!((&words[0], &words[2]), (&vec!["REGISTRY", "ENTRIES", "ONLINE"], &vec!["tools", "1", "-"]), "{table}");
    let tools = json_lines(&url, &["registry", "list", "tools"]);
    assert_eq!(names(&tools), ["grep"]);
    let grep = &tools[0];
    assert_eq!(grep["registry"], "tools");
    assert_eq!(grep["status"], "registered");
    assert_eq!(grep["revision"], 2);
    assert_eq!(grep["resource"], json!({"command": "grep", "args": ["-r"]}));
    assert_eq!(grep["metadata"], json!({"team": "search"}));
    assert!(grep["seq"].as_u64().unwrap() > 0);
    for time in ["registered_at", "updated_at"] {
        let text = grep[time].as_str().unwrap();
        assert!(time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok(), "{text}");
    }

    // Get, for people and as JSON.
    let shown = ok(&url, &["registry", "get", "agents", "summarizer-1"]);
    for expected in [
        "registry: agents",
        "name: summarizer-1",
        "description: Summarises documents",
        "revision: 1",
        "\"max_concurrency\": 4",
    ] {
        assert!(shown.contains(expected), "{expected} in\n{shown}");
    }
    let got: Value = serde_json::from_str(&ok(&url, &["registry", "get", "agents", "summarizer-1", "--json"])).unwrap();
    assert_eq!(got["resource"]["endpoint"], json!({"region": "eu"}));

    // Find, by an array member and by a dotted path.
    let found = ok(&url, &["registry", "find", "agents", "--where", "capabilities=summarize"]);
    assert!(found.contains("summarizer-1") && !found.contains("translator-1"), "{found}");
    let both = json_lines(&url, &["registry", "find", "agents", "--where", "capabilities=translate"]);
    assert_eq!(names(&both), ["summarizer-1", "translator-1"]);
    let in_eu = json_lines(&url, &["registry", "find", "agents", "--where", "endpoint.region=eu"]);
    assert_eq!(names(&in_eu), ["summarizer-1"]);

    // Liveness: an agent that heartbeats stays online; the ones registered above do not.
    let client = osp_client::Client::connect(&url).await.unwrap();
    let beater = osp_client::Agent::builder("beater")
        .capabilities(["summarize"])
        .heartbeat_interval(Duration::from_millis(100))
        .start(&client)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = json_lines(&url, &["agents", "--live"]);
        if names(&live) == ["beater"] {
            assert_eq!(live[0]["status"], "online");
            break;
        }
        assert!(Instant::now() < deadline, "only the heartbeating agent should be live: {live:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let summarizers = json_lines(&url, &["agents", "--capability", "summarize"]);
    assert_eq!(names(&summarizers), ["beater", "summarizer-1"]);
    assert_eq!(summarizers[1]["status"], "offline");
    let agents = ok(&url, &["agents"]);
    for expected in ["CAPABILITIES", "MAX", "VERSION", "summarize,translate", "1.2.0", "offline"] {
        assert!(agents.contains(expected), "{expected} in\n{agents}");
    }
    // Under each agent's row, the rest of its card.
    let lines: Vec<&str> = agents.lines().collect();
    let row = lines.iter().position(|line| line.starts_with("summarizer-1 ")).unwrap();
    assert_eq!(lines[row + 1..row + 3], ["    Summarises documents", r#"    endpoint: {"region":"eu"}"#], "{agents}");
    let row = lines.iter().position(|line| line.starts_with("translator-1 ")).unwrap();
    assert_eq!(lines[row + 1], r#"    endpoint: {"region":"us"}"#, "{agents}");
    beater.shutdown().await.unwrap();

    // Unregister; then the entry is gone.
    assert_eq!(
        ok(&url, &["registry", "unregister", "tools", "grep", "--reason", "retired"]),
        "unregistered tools/grep\n"
    );
    let gone = fails(&url, &["registry", "get", "tools", "grep"]);
    assert_eq!(gone, "error: no entry named \"grep\" in the tools registry\n");
    assert_eq!(fails(&url, &["registry", "unregister", "tools", "grep"]), gone);

    // Bad input is refused with the field or flag at fault.
    let bad_name = fails(&url, &["registry", "register", "tools", "a.b"]);
    assert!(bad_name.starts_with("error: invalid name \"a.b\": must not contain '.'"), "{bad_name}");
    let bad_json = fails(&url, &["registry", "register", "tools", "x", "--resource", "{not json"]);
    assert!(bad_json.starts_with("error: --resource: invalid JSON"), "{bad_json}");
    let bad_card = fails(&url, &["registry", "register", "agents", "x", "--resource", "{}"]);
    assert!(bad_card.contains("invalid resource.capabilities"), "{bad_card}");

    dev.stop().await;
}

#[tokio::test]
async fn without_a_registry_the_cli_says_what_to_start() {
    let server = osp_local_nats::NatsServer::start().await.unwrap();
    let err = fails(&server.url(), &["registry", "list", "agents"]);
    assert!(err.contains("no instance of the registry service is running"), "{err}");
    assert!(err.contains("start `osp dev`, or run `osp-registry`"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

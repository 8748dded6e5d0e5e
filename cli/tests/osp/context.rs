//! `osp ctx`, `osp settings`, `osp prefs`, `osp env` and `osp embed` as an operator uses
//! them, against a real nats-server with a context instance running in the test: values
//! set and read back (and as they were), sensitive values masked unless revealed to one
//! allowed, read-only settings refused, searches; and the exit status of each refusal.

use osp_local_nats::NatsServer;
use serde_json::json;

use crate::common::{exits, fails, json_lines, ok};

#[tokio::test]
async fn the_context_commands() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let seal_key = osp_context::sealing::SealKey::from_hex(&osp_context::sealing::SealKey::generate_hex()).ok();
    let config = osp_context::Config { reveal_to: vec!["user:ops".into()], seal_key, ..Default::default() };
    let instance = osp_context::Context::start(osp_tests::connect(&url).await, config).await.unwrap();

    let first =
        json_lines(&ok(&url, &["ctx", "set", "session:s1", "plan", r#"{"steps": 3}"#, "--json"]).await).remove(0);
    ok(&url, &["ctx", "set", "session:s1", "plan", "done"]).await;
    assert_eq!(ok(&url, &["ctx", "get", "session:s1", "plan"]).await.lines().next(), Some("done"));
    let seq = first["seq"].as_u64().unwrap().to_string();
    let then = json_lines(&ok(&url, &["ctx", "get", "session:s1", "plan", "--at-seq", &seq, "--json"]).await).remove(0);
    assert_eq!(then["value"], json!({"steps": 3}));
    ok(&url, &["ctx", "set", "session:s1", "notes/a", "1"]).await;
    assert_eq!(ok(&url, &["ctx", "ls", "session:s1", "notes/"]).await, "notes/a\n");
    assert!(ok(&url, &["ctx", "rm", "session:s1", "plan"]).await.starts_with("removed"));
    assert!(fails(&url, &["ctx", "rm", "session:s1", "plan"]).await.contains("no key \"plan\""));
    assert!(fails(&url, &["ctx", "set", "session:s1", "a.b", "1"]).await.contains("must not contain '.'"));
    let forbidden = fails(&url, &["ctx", "set", "global", "k", "1", "--as", "agent:a1"]).await;
    assert!(forbidden.contains("forbidden") && forbidden.contains("may not write global"), "{forbidden}");

    ok(&url, &["env", "set", "global", "API_KEY", "s3cr3t-value", "--sensitive"]).await;
    let shown = ok(&url, &["env", "get", "global", "API_KEY"]).await;
    assert!(shown.contains("********") && !shown.contains("s3cr3t-value"), "{shown}");
    assert!(!ok(&url, &["env", "ls", "global"]).await.contains("s3cr3t-value"));
    let refused = fails(&url, &["env", "get", "global", "API_KEY", "--reveal"]).await;
    assert!(refused.contains("may not reveal API_KEY of global: only user:ops may"), "{refused}");
    assert!(refused.contains("OSP_CONTEXT_REVEAL_TO"), "{refused}");
    let revealed = ok(&url, &["env", "get", "global", "API_KEY", "--reveal", "--as", "user:ops"]).await;
    assert!(revealed.starts_with("s3cr3t-value"), "{revealed}");

    ok(&url, &["settings", "set", "max_tokens", "4096", "--read-only", "--description", "the cap"]).await;
    let locked = fails(&url, &["settings", "set", "max_tokens", "1"]).await;
    assert!(
        locked.starts_with("error: cannot set setting max_tokens: it is read-only; user:tester made it"),
        "{locked}"
    );
    let locked = fails(&url, &["settings", "rm", "max_tokens"]).await;
    assert!(locked.starts_with("error: cannot remove setting max_tokens: it is read-only"), "{locked}");
    assert!(ok(&url, &["settings", "ls"]).await.contains("read-only"));
    ok(&url, &["prefs", "set", "user:tester", "tone", "dry"]).await;
    let tone = json_lines(&ok(&url, &["prefs", "get", "tone", "--json"]).await).remove(0);
    assert_eq!((tone["level"].as_str(), tone["entry"]["value"].as_str()), (Some("user"), Some("dry")));
    let cap = json_lines(&ok(&url, &["prefs", "get", "max_tokens", "--json"]).await).remove(0);
    assert_eq!(cap["level"], "system");

    ok(&url, &["embed", "upsert", "global", "--id", "x", "--content", "east", "--vector", "[1, 0]"]).await;
    ok(
        &url,
        &[
            "embed",
            "upsert",
            "global",
            "--id",
            "y",
            "--content",
            "north",
            "--vector",
            "[0, 1]",
            "--metadata",
            r#"{"k": 1}"#,
        ],
    )
    .await;
    let found =
        json_lines(&ok(&url, &["embed", "search", "global", "--vector", "[0.1, 1]", "--top-k", "1", "--json"]).await);
    assert_eq!((found.len(), found[0]["id"].as_str()), (1, Some("y")));
    let (_, stderr) = exits(1, &url, &["embed", "search", "global", "--vector", "[1, 0, 0]"]).await;
    assert!(stderr.contains("dimensions"), "{stderr}");
    instance.shutdown().await;
}

/// The sections of a scope share one log and one ordered map in the service: listing one
/// must show all of its entries whatever the others hold.
#[tokio::test]
async fn each_section_lists_its_own_entries() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let seal_key = osp_context::sealing::SealKey::from_hex(&osp_context::sealing::SealKey::generate_hex()).ok();
    let config = osp_context::Config { seal_key, ..Default::default() };
    let instance = osp_context::Context::start(osp_tests::connect(&url).await, config).await.unwrap();
    for key in ["a", "m", "z"] {
        ok(&url, &["ctx", "set", "global", key, "1"]).await;
    }
    for key in ["max_tokens", "model"] {
        ok(&url, &["settings", "set", key, "1"]).await;
    }
    for key in ["HOME", "PATH"] {
        ok(&url, &["env", "set", "global", key, "/x"]).await;
    }
    ok(&url, &["env", "set", "global", "TOKEN", "t0k3n", "--sensitive"]).await;
    let keys = |stdout: String| {
        json_lines(&stdout).iter().map(|entry| entry["key"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(keys(ok(&url, &["settings", "ls", "--json"]).await), ["max_tokens", "model"]);
    assert_eq!(keys(ok(&url, &["env", "ls", "global", "--json"]).await), ["HOME", "PATH", "TOKEN"]);
    assert_eq!(ok(&url, &["ctx", "ls", "global"]).await, "a\nm\nz\n");
    ok(&url, &["ctx", "set", "user:tester", "a", "1"]).await;
    ok(&url, &["env", "set", "user:tester", "LANG", "en"]).await;
    ok(&url, &["prefs", "set", "user:tester", "tone", "dry"]).await;
    assert_eq!(keys(ok(&url, &["prefs", "ls", "user:tester", "--json"]).await), ["tone"]);
    let table = ok(&url, &["settings", "ls"]).await;
    assert!(table.contains("max_tokens") && table.contains("model"), "{table}");
    instance.shutdown().await;
}

//! The `osp` binary as a user runs it: `osp dev` in an empty folder, then the log
//! commands against it, then Ctrl-C.

use std::process::Stdio;
use std::time::Duration;

use crate::common::{osp, Dev};
use osp_eventlog::Head;
use osp_tests::{added, counter, CounterEvent};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn osp_dev_then_replay_verify_and_ctrl_c() {
    let folder = tempfile::tempdir().unwrap();
    let dev = Dev::start(folder.path(), &[]).await;
    let url = dev.url.clone();
    assert!(url.starts_with("nats://127.0.0.1:"), "{url}");
    assert!(folder.path().join(".osp/data").is_dir(), "data lives under .osp/ in the working dir");
    assert!(dev.banner.iter().any(|line| line.starts_with("  streams: OSP_EVENTS")), "{:?}", dev.banner);

    // A tail, started before anything happens.
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_osp"))
        .args(["events", "tail", "--json", "--subject", "osp.v1.evt.counter.*"])
        .env("OSP_NATS_URL", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut tail_err = BufReader::new(tail.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), tail_err.next_line()).await.unwrap().unwrap();
    assert_eq!(ready.as_deref(), Some("following osp.v1.evt.counter.* (Ctrl-C to stop)"));

    // Some history, written by a client of our own.
    let log = osp_eventlog::EventLog::open(osp_tests::connect(&url).await).await.unwrap();
    let mut head = Head::EMPTY;
    for i in 0..3 {
        head = log.append(&counter("cli"), &head, vec![added(i, &format!("c{i}"))]).await.unwrap().head;
    }
    let mut tailed = BufReader::new(tail.stdout.take().unwrap()).lines();
    for version in 1..=3 {
        let line = tokio::time::timeout(Duration::from_secs(10), tailed.next_line()).await.unwrap().unwrap().unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!((event["aggregate_id"].as_str(), event["version"].as_u64()), (Some("cli"), Some(version)));
    }
    tail.start_kill().unwrap();

    let replay = osp(&url, &["events", "replay", "--json"]);
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let events: Vec<serde_json::Value> =
        String::from_utf8(replay.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(events.len(), 3);
    assert_eq!(events[2]["type"], "counter.added");
    assert_eq!(events[2]["version"], 3);
    assert_eq!(events[2]["payload"], serde_json::json!({"by": 2}));
    assert_eq!(events[2]["prev_hash"], events[1]["hash"]);

    let from = osp(&url, &["events", "replay", "--from-seq", "3"]);
    let text = String::from_utf8(from.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let words: Vec<&str> = text.split_whitespace().collect();
    assert_eq!((words[0], &words[4..7]), ("#3", &["counter:cli", "v3", "counter.added"][..]), "{text}");

    // Times for people: in the zone of TZ, or in UTC with --utc (or OSP_UTC); the JSON's
    // stay RFC 3339 or milliseconds, whatever the zone.
    let occurred = events[2]["occurred_at"].as_i64().unwrap();
    let shown_in = |offset: time::UtcOffset| {
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(occurred) * 1_000_000).unwrap();
        let format = time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3] [offset_hour sign:mandatory]:[offset_minute]"
        );
        at.to_offset(offset).format(format).unwrap()
    };
    let (kolkata, utc) = (shown_in(time::macros::offset!(+5:30)), shown_in(time::UtcOffset::UTC));
    let replayed = |vars: &[(&str, &str)], args: &[&str]| {
        let out = crate::common::osp_with(&url, vars, &[&["events", "replay", "--from-seq", "3"], args].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let in_kolkata = replayed(&[("TZ", "Asia/Kolkata")], &[]);
    assert!(in_kolkata.starts_with(&format!("#3        {kolkata}  counter:cli")), "{kolkata} in\n{in_kolkata}");
    assert!(kolkata.ends_with(" +05:30"), "{kolkata}");
    for (vars, args) in
        [(&[("TZ", "Asia/Kolkata")][..], &["--utc"][..]), (&[("TZ", "Asia/Kolkata"), ("OSP_UTC", "1")], &[])]
    {
        let in_utc = replayed(vars, args);
        assert!(in_utc.starts_with(&format!("#3        {utc}  counter:cli")), "{utc} in\n{in_utc}");
    }
    let json = replayed(&[("TZ", "Asia/Kolkata")], &["--json"]);
    assert!(json.contains(&format!("\"occurred_at\":{occurred},")) && json.contains("Z\","), "{json}");

    let clean = osp(&url, &["log", "verify"]);
    assert!(clean.status.success());
    assert!(String::from_utf8_lossy(&clean.stdout).contains("verified 3 events of 1 aggregates up to seq 3: OK"));

    // A forged event (raw publish, wrong link) makes verify fail and name it.
    let genuine = log.load::<osp_protocol::AnyPayload>(&counter("cli")).await.unwrap().events.pop().unwrap();
    let mut forged = genuine.envelope;
    forged.version += 1;
    forged.prev_hash = None;
    log.jetstream().publish(counter("cli").subject(), forged.encode().unwrap().into()).await.unwrap().await.unwrap();
    let broken = osp(&url, &["log", "verify", "--json"]);
    assert_eq!(broken.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&broken.stdout).unwrap();
    assert_eq!(report["clean"], false);
    assert_eq!(report["problems"][0]["seq"], 4);
    let _ = log.load::<CounterEvent>(&counter("cli")).await; // still readable, no panic

    // Ctrl-C stops the server and exits cleanly.
    dev.stop().await;
    assert!(osp(&url, &["events", "replay"]).stderr.starts_with(b"error: cannot connect to NATS"));
}

#[test]
fn a_server_that_is_not_there_gets_a_hint_not_a_panic() {
    let out = osp("nats://127.0.0.1:1", &["log", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("start one with `osp dev`"), "{err}");
}

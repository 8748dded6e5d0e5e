//! `osp doctor` against what a newcomer meets: nothing running, a bare server, `osp dev`,
//! a server whose services are not all started, and streams changed by hand.

use std::time::{Duration, Instant};

use osp_eventlog::{Definitions, WORK_STREAM};
use osp_local_nats::NatsServer;
use serde_json::Value;

use crate::common::{exits, json_lines, Dev};

/// Every check of a report, as (check, status) pairs.
fn statuses(report: &[Value]) -> Vec<(String, String)> {
    report
        .iter()
        .map(|check| (check["check"].as_str().unwrap().into(), check["status"].as_str().unwrap().into()))
        .collect()
}

/// The check named `name` in a `--json` report.
fn check<'a>(report: &'a [Value], name: &str) -> &'a Value {
    report.iter().find(|check| check["check"] == name).unwrap_or_else(|| panic!("no check {name} in {report:?}"))
}

const SERVICES: [&str; 4] = ["registry", "scheduler", "quality", "context"];
const STREAMS: [&str; 4] = ["OSP_EVENTS", "OSP_INBOX", "OSP_WORK", "OSP_TIMERS"];

#[tokio::test]
async fn with_nothing_listening_the_connection_fails_with_what_to_do_and_the_rest_is_skipped() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("nats://127.0.0.1:{port}");
    let started = Instant::now();
    let (stdout, _) = exits(1, &url, &["doctor"]).await;
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let mut lines = stdout.lines();
    let first = lines.next().unwrap();
    assert!(first.starts_with("FAIL  connection") && first.contains(&url), "{stdout}");
    assert_eq!(
        lines.next().unwrap().trim(),
        "→ start a server with `osp dev`, or point OSP_NATS_URL / --nats-url at yours"
    );

    let report = json_lines(&exits(1, &url, &["doctor", "--json"]).await.0);
    let skipped: Vec<&str> =
        report.iter().filter(|c| c["status"] == "skip").map(|c| c["check"].as_str().unwrap()).collect();
    assert_eq!(skipped.len(), report.len() - 2, "all but the connection and the credentials: {report:?}");
    assert!(skipped.contains(&"stream OSP_EVENTS") && skipped.contains(&"service context"), "{skipped:?}");
    assert_eq!(check(&report, "credentials")["status"], "warn");
}

#[tokio::test]
async fn a_bare_server_lacks_the_streams_and_the_services() {
    let server = NatsServer::start().await.unwrap();
    let report = json_lines(&exits(1, &server.url(), &["doctor", "--json"]).await.0);
    for name in ["connection", "server version", "jetstream"] {
        assert_eq!(check(&report, name)["status"], "ok", "{name}: {report:?}");
    }
    for stream in STREAMS {
        let line = check(&report, &format!("stream {stream}"));
        assert_eq!((line["status"].as_str(), line["detail"].as_str()), (Some("fail"), Some("missing")), "{line}");
        assert!(line["fix"].as_str().unwrap().starts_with("run `osp dev`, or start any OSP service"), "{line}");
    }
    for service in SERVICES {
        let line = check(&report, &format!("service {service}"));
        assert_eq!(line["status"], "fail", "{line}");
        assert!(line["fix"].as_str().unwrap().contains(&format!("osp-{service} --nats-url")), "{line}");
    }
}

#[tokio::test]
async fn osp_dev_is_healthy_but_for_its_credentials() {
    let folder = tempfile::tempdir().unwrap();
    let dev = Dev::start(folder.path(), &[]).await;
    exits(0, &dev.url, &["ctx", "set", "global", "greeting", "\"hi\""]).await;

    let (stdout, _) = exits(0, &dev.url, &["doctor"]).await;
    assert!(stdout.contains("\nwarn  credentials "), "{stdout}");
    assert!(stdout.contains("→ require users on the server"), "{stdout}");

    let report = json_lines(&exits(0, &dev.url, &["doctor", "--json"]).await.0);
    let names: Vec<String> = statuses(&report).into_iter().map(|(name, _)| name).collect();
    let mut expected: Vec<String> = ["connection", "server version", "jetstream"].map(String::from).to_vec();
    expected.extend(STREAMS.map(|stream| format!("stream {stream}")));
    expected.extend(SERVICES.map(|service| format!("service {service}")));
    for name in &expected {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    for service in SERVICES {
        assert!(names.contains(&format!("consumer inbox-{service}")), "{names:?}");
        let line = check(&report, &format!("service {service}"));
        assert!(line["detail"].as_str().unwrap().starts_with("1 instance (v"), "{line}");
    }
    assert_eq!(names.last().map(String::as_str), Some("credentials"));
    for (name, status) in statuses(&report) {
        let wanted = if name == "credentials" { "warn" } else { "ok" };
        assert_eq!(status, wanted, "{name}: {report:?}");
    }
    assert!(check(&report, "stream OSP_EVENTS")["detail"].as_str().unwrap().starts_with("1 message, "), "{report:?}");
    dev.stop().await;
}

#[tokio::test]
async fn a_service_not_started_fails_and_the_others_pass() {
    let server = NatsServer::start().await.unwrap();
    let registry =
        osp_registry::Registry::start(osp_tests::connect(&server.url()).await, osp_registry::Config::default())
            .await
            .unwrap();
    let report = json_lines(&exits(1, &server.url(), &["doctor", "--json"]).await.0);
    for stream in STREAMS {
        assert_eq!(check(&report, &format!("stream {stream}"))["status"], "ok", "{report:?}");
    }
    assert_eq!(check(&report, "service registry")["status"], "ok", "{report:?}");
    assert_eq!(check(&report, "consumer inbox-registry")["status"], "ok", "{report:?}");
    for service in ["scheduler", "quality", "context"] {
        let line = check(&report, &format!("service {service}"));
        assert_eq!((line["status"].as_str(), line["detail"].as_str()), (Some("fail"), Some("no instance answers")));
    }
    registry.shutdown().await;
}

#[tokio::test]
async fn a_stream_changed_by_hand_is_named_field_by_field() {
    let server = NatsServer::start().await.unwrap();
    let js = async_nats::jetstream::new(osp_tests::connect(&server.url()).await);
    Definitions::builtin().apply(&js).await.unwrap();
    let mut work = Definitions::builtin().streams.into_iter().find(|(_, c)| c.name == WORK_STREAM).unwrap().1;
    work.max_age = Duration::from_secs(3600);
    js.update_stream(work).await.unwrap();

    let (stdout, _) = exits(1, &server.url(), &["doctor"]).await;
    let line = stdout.lines().find(|line| line.contains("stream OSP_WORK")).unwrap();
    assert!(line.starts_with("FAIL"), "{stdout}");
    assert!(line.ends_with("differs from streams/work.json: max_age is 3600000000000, defined 0"), "{line}");
    assert!(stdout.contains("`nats stream edit OSP_WORK --config streams/work.json`"), "{stdout}");
    assert!(stdout.lines().any(|line| line.starts_with("ok    stream OSP_EVENTS")), "{stdout}");
}

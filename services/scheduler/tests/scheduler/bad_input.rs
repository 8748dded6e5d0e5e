//! Bad input: unknown capability, malformed options, commands for unknown runs, subject
//! injection, illegal transitions — each gets an error reply naming the field and a
//! rejection record on the log; the service goes on.

use crate::common::{submission, system_with_agent};
use osp_protocol::scheduler::queries::RunStatus;
use serde_json::{json, Value};

/// (id, command, payload, error code, field, words in the message)
type Case = (&'static str, &'static str, Value, &'static str, Option<&'static str>, &'static str);

#[tokio::test]
async fn every_bad_command_is_answered_and_recorded_and_the_service_goes_on() {
    let (server, scheduler, client) = system_with_agent("a1", "summarize").await;
    client.scheduler().submit(&submission("done", "summarize", json!({}), json!({}))).await.unwrap();
    client.scheduler().cancel("done", Some("made for this test"), None).await.unwrap();
    let nats = osp_tests::connect(&server.url()).await;
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("unknown-capability", "submit", json!({"run_id": "r1", "capability": "teleport"}), "not_found", Some("capability"), "no registered agent offers it (offered: summarize); set options.waitForAgent"),
        ("negative-ms", "submit", json!({"capability": "summarize", "options": {"timeout": {"ms": -5}}}), "malformed", Some("options.timeout.ms"), "invalid value: integer `-5`"),
        ("zero-attempts", "submit", json!({"capability": "summarize", "options": {"retry": {"attempts": 0}}}), "invalid", Some("options.retry.attempts"), "must be 1 to 100"),
        ("unknown-backoff", "submit", json!({"capability": "summarize", "options": {"retry": {"attempts": 2, "backoff": "fibonacci"}}}), "malformed", Some("options.retry.backoff"), "unknown variant `fibonacci`"),
        ("typo-option", "submit", json!({"capability": "summarize", "options": {"retries": 2}}), "malformed", None, "unknown field `retries`"),
        ("dot", "submit", json!({"run_id": "a.b", "capability": "summarize"}), "invalid_token", Some("run_id"), "must not contain '.'"),
        ("star", "cancel", json!({"run_id": "*"}), "invalid_token", Some("run_id"), "wildcards"),
        ("unknown-run", "cancel", json!({"run_id": "nobody"}), "not_found", Some("run_id"), "no run has this id"),
        ("unknown-run-report", "completed", json!({"run_id": "nobody", "attempt": 1}), "not_found", Some("run_id"), "no run has this id"),
        ("approve-ended", "approve", json!({"run_id": "done"}), "illegal_transition", None, "cannot approve: it is cancelled"),
        ("resume-ended", "resume", json!({"run_id": "done"}), "illegal_transition", None, "cannot resume: it is cancelled"),
        ("late-report", "progress", json!({"run_id": "done", "attempt": 1, "current": 1}), "illegal_transition", None, "it has ended"),
        ("unknown-command", "launch", json!({}), "unknown_command", None, "use one of submit, cancel"),
    ];
    for (id, command, payload, code, field, words) in &cases {
        let bytes = serde_json::to_vec(payload).unwrap();
        let reply = osp_tests::send_raw_command(&nats, "scheduler", command, Some("application/json"), bytes, id).await;
        osp_tests::assert_refused(id, &reply, code, *field, words);
    }
    let recorded = osp_tests::rejections(&server.url()).await;
    for (id, _, _, code, _, _) in &cases {
        let (service, error) = &recorded[*id];
        assert_eq!((service.as_str(), error.code()), ("scheduler", *code), "{id}");
    }

    // Still serving; and a run for a capability nobody offers is accepted when it says it waits.
    let waiting = client
        .scheduler()
        .submit(&submission("waits", "teleport", json!({}), json!({"waitForAgent": true})))
        .await
        .unwrap();
    assert_eq!(waiting.result.status, RunStatus::Pending);
    assert_eq!(scheduler.commands().rejected(), cases.len() as u64);
    scheduler.shutdown().await;
}

#[tokio::test]
async fn submitting_the_same_run_twice_is_idempotent_and_other_content_conflicts() {
    let (_server, scheduler, client) = system_with_agent("a1", "summarize").await;
    let runs = client.scheduler();
    let first = runs.submit(&submission("r", "summarize", json!({"text": "x"}), json!({}))).await.unwrap();
    assert!(first.result.created);
    // The same submission, a new command id (another client sending it again).
    let again = osp_client::Submission::new("summarize", json!({"text": "x"})).run_id("r");
    let body = json!({"run_id": "r", "capability": "summarize", "input": {"text": "x"}});
    let again_answer =
        client.command::<_, osp_protocol::scheduler::RunOutcome>("scheduler", "submit", &body).await.unwrap();
    assert!(!again_answer.result.created);
    assert_eq!(again_answer.seq, first.seq, "nothing new on the log");
    assert!(runs.submit(&again).await.is_ok());
    let other = runs.submit(&submission("r", "summarize", json!({"text": "y"}), json!({}))).await;
    assert_eq!(crate::common::code(other), "conflict");
    let run = runs.get("r").await.unwrap().unwrap();
    assert_eq!(run.attempts.len(), 1, "dispatched once");
    scheduler.shutdown().await;
}

/// What JSON cannot show truthfully, and where replies may go: a number MessagePack holds
/// and JSON cannot (it would become `null` unseen), an id with an invisible character that
/// reverses what follows on screen, a reply subject that is a wildcard, and a query naming
/// an id no run could have. Each is refused naming the field, and the refusals of commands
/// are recorded; nothing is applied, and no reply goes where it may not.
#[tokio::test]
async fn what_json_cannot_show_is_refused_and_replies_go_only_where_they_may() {
    use futures::StreamExt;
    use std::time::Duration;

    let (server, scheduler, client) = system_with_agent("a1", "summarize").await;
    let url = server.url();
    let nats = osp_tests::connect(&url).await;

    #[derive(serde::Serialize)]
    struct Input {
        x: f64,
    }
    #[derive(serde::Serialize)]
    struct SubmitWire {
        run_id: &'static str,
        capability: &'static str,
        input: Input,
    }
    let infinite = SubmitWire { run_id: "inf", capability: "summarize", input: Input { x: f64::INFINITY } };
    let bytes = rmp_serde::to_vec_named(&infinite).unwrap();
    let reply = osp_tests::send_raw_command(&nats, "scheduler", "submit", None, bytes, "non-finite").await;
    osp_tests::assert_refused("non-finite", &reply, "invalid", Some("input.x"), "NaN and infinity");
    assert!(client.scheduler().get("inf").await.unwrap().is_none(), "nothing applied");

    let bytes = serde_json::to_vec(&json!({"run_id": "ab\u{202e}cd", "capability": "summarize"})).unwrap();
    let json = Some("application/json");
    let reply = osp_tests::send_raw_command(&nats, "scheduler", "submit", json, bytes, "format-character").await;
    osp_tests::assert_refused("format-character", &reply, "invalid_token", Some("run_id"), "U+202E");

    // A reply subject that is a wildcard: the command is refused on the log, and nothing
    // is published to the wildcard (it would reach every subscriber under it).
    let mut spy = nats.subscribe("spy.>").await.unwrap();
    let js = async_nats::jetstream::new(nats.clone());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "wildcard-reply");
    headers.insert("Osp-Reply-To", "spy.*");
    headers.insert("Content-Type", "application/json");
    let body = br#"{"run_id": "nobody"}"#.to_vec();
    js.publish_with_headers("osp.v1.in.scheduler.cancel", headers, body.into()).await.unwrap().await.unwrap();
    osp_tests::eventually(Duration::from_secs(10), "the refusal is recorded", || async {
        osp_tests::rejections(&url).await.contains_key("wildcard-reply")
    })
    .await;
    let (_, error) = &osp_tests::rejections(&url).await["wildcard-reply"];
    assert!(error.to_string().contains("Osp-Reply-To"), "{error}");
    let leaked = tokio::time::timeout(Duration::from_millis(500), spy.next()).await;
    assert!(leaked.is_err(), "a reply was published to the wildcard: {leaked:?}");

    // Replies carry the command's id, so one subscription can serve many commands.
    let inbox = nats.new_inbox();
    let mut replies = nats.subscribe(inbox.clone()).await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Osp-Command-Id", "matched-1");
    headers.insert("Osp-Reply-To", inbox.as_str());
    headers.insert("Content-Type", "application/json");
    let body = br#"{"run_id": "nobody"}"#.to_vec();
    js.publish_with_headers("osp.v1.in.scheduler.cancel", headers, body.into()).await.unwrap().await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), replies.next()).await.unwrap().unwrap();
    let id = reply.headers.as_ref().and_then(|h| h.get("Osp-Command-Id")).map(|v| v.as_str().to_owned());
    assert_eq!(id.as_deref(), Some("matched-1"));

    // A query naming an id no run could have is told so, as a command would be.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    let body = br#"{"run_id": "a.b"}"#.to_vec();
    let answer = nats.request_with_headers("osp.v1.q.scheduler.get", headers, body.into()).await.unwrap();
    let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(answer["error"]["error"], "invalid_token", "{answer}");
    assert_eq!(answer["error"]["field"], "run_id", "{answer}");
    scheduler.shutdown().await;
}

/// A correctly linked event the scheduler cannot read (a type it does not know) on a run's
/// subject: a command on that run is refused at once, `damaged`, naming the event's
/// sequence (before, it was redelivered for 45 s and ended `unavailable`, which clients
/// retry); every other run goes on.
#[tokio::test]
async fn a_run_whose_history_holds_an_unreadable_event_refuses_commands_naming_it() {
    let (server, scheduler, client) = system_with_agent("a1", "summarize").await;
    let runs = client.scheduler();
    runs.submit(&submission("damaged", "summarize", json!({}), json!({}))).await.unwrap();
    runs.submit(&submission("healthy", "summarize", json!({}), json!({}))).await.unwrap();

    let log = osp_eventlog::EventLog::open(osp_tests::connect(&server.url()).await).await.unwrap();
    let run = osp_protocol::AggregateRef::new("run", "damaged").unwrap();
    let head = log.load::<osp_protocol::scheduler::RunEvent>(&run).await.unwrap().head;
    let foreign = log.append(&run, &head, vec![osp_tests::added(1, "not-a-run-event")]).await.unwrap();

    let refused = runs.cancel("damaged", Some("stop"), None).await;
    let error = refused.as_ref().err().and_then(|e| e.rejection()).cloned();
    match error {
        Some(osp_protocol::Error::Damaged { aggregate, seq, reason }) => {
            assert_eq!((aggregate.as_str(), seq), ("osp.v1.evt.run.damaged", foreign.head.seq));
            assert!(reason.contains("counter.added"), "{reason}");
        }
        other => panic!("expected damaged, got {other:?} ({refused:?})"),
    }
    assert!(runs.cancel("healthy", Some("stop"), None).await.is_ok(), "other runs go on");
    scheduler.shutdown().await;
}

//! Recorded audits leave memory, and are answered exactly as they were before they left:
//! `audit` recalls them from the log, `audits` lists them from the listing index (filters,
//! pages, cursors), the digest counts them, and a check under one of their ids is answered
//! or refused as it was.

use std::collections::BTreeMap;
use std::time::Duration;

use osp_client::{Answer, Client, Error};
use osp_protocol::quality::{CheckOutcome, JudgeSpec};
use osp_protocol::Timestamp;
use osp_quality::{Config, Quality};
use serde_json::{json, Value};

use crate::audits_query::{first_half, record, second_half};
use crate::common::{add_three, client, command, eventually, query, remove, server, THREE};

/// How long the test waits for an instance to settle, or a deadline to record a check.
const WITHIN: Duration = Duration::from_secs(30);
/// The open check's timeout: its deadline (2 s later) comes after both instances answered.
const OPEN_FOR_MS: u64 = 15_000;
/// Checks whose entries are big enough that a page holds two of them (by bytes, not by
/// `limit`).
const BIG: usize = 5;

async fn instance(url: &str, keep_finished: Duration) -> Quality {
    let config = Config { keep_finished, ..Config::default() };
    Quality::start(osp_tests::connect(url).await, config).await.expect("start the quality service")
}

/// An answer or a refusal, as JSON.
fn shown(outcome: Result<Answer<Value>, Error>) -> Value {
    match outcome {
        Ok(answer) => answer.result,
        Err(Error::Rejected { error, .. }) => {
            json!({"code": error.code(), "field": error.field(), "message": error.to_string()})
        }
        Err(other) => panic!("neither an answer nor a refusal: {other}"),
    }
}

/// Every page of `filter`, followed cursor to cursor.
async fn pages(client: &Client, filter: &Value) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut filter = filter.clone();
    loop {
        let page = shown(query(client, "audits", &filter).await);
        let next = page["next"].clone();
        pages.push(page);
        match next {
            Value::String(_) if pages.len() < 20 => filter["after"] = next,
            _ => return pages,
        }
    }
}

/// Every answer the test compares, as JSON.
async fn answers(client: &Client, ids: &[String], middle: Timestamp) -> BTreeMap<String, Value> {
    let mut answers = BTreeMap::new();
    for id in ids.iter().map(String::as_str).chain(["open", "never-checked"]) {
        answers.insert(format!("audit {id}"), shown(query(client, "audit", &json!({"id": id})).await));
    }
    let listings = [
        json!({}),
        json!({"opinions": ["adverse"]}),
        json!({"opinions": ["unqualified", "qualified"]}),
        json!({"min_critical": 1}),
        json!({"minMajor": 1}),
        json!({"agentId": "agent-a"}),
        json!({"execution_id": "r1"}),
        json!({"from": middle}),
        json!({"to": middle}),
        json!({"agent_id": "agent-a", "opinions": ["adverse"], "from": middle}),
        json!({"limit": 3, "opinions": ["qualified", "adverse"]}),
        json!({"limit": 4, "execution_id": "big"}),
        json!({"after": "e3", "limit": 2, "to": middle}),
        json!({"after": "nope"}),
        json!({"limit": 0}),
    ];
    for filter in listings {
        answers.insert(format!("audits {filter}"), json!(pages(client, &filter).await));
    }
    let digest = shown(query(client, "digest", &json!({})).await);
    answers.insert(
        "digest".into(),
        json!({"digest": digest["digest"], "rules": digest["rules"], "audits": digest["audits"]}),
    );
    // The same check again, though one of its rules has left the catalog: answered.
    let (_, agent, execution, output) = first_half().swap_remove(1);
    let again = json!({"auditId": "e2", "agentId": agent, "executionId": execution, "output": output, "rules": THREE});
    answers.insert("check e2 again".into(), shown(command(client, "check", &again).await));
    // Another check under a recorded id, naming rules the catalog holds or not: refused.
    for rules in [&["has-summary"][..], &THREE] {
        let other = json!({"auditId": "e1", "output": {"summary": "other"}, "rules": rules});
        answers.insert(format!("check e1 otherwise {rules:?}"), shown(command(client, "check", &other).await));
    }
    answers
}

#[tokio::test]
async fn an_audit_that_left_memory_is_answered_as_before_it_left() {
    let server = server().await;
    let url = server.url();
    let keeping = instance(&url, Duration::from_secs(3600)).await;
    let client = client(&url).await;
    add_three(&client).await;
    record(&client, first_half()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let middle = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    record(&client, second_half()).await;
    let mut ids: Vec<String> = first_half().into_iter().chain(second_half()).map(|(id, ..)| id.to_owned()).collect();
    for n in 0..BIG {
        let id = format!("big-{n}");
        let body = json!({"auditId": id, "executionId": "big", "output": {"summary": "fine", "score": 0.5},
                          "metadata": {"padding": "x".repeat(60_000)}, "rules": THREE});
        command::<Value>(&client, "check", &body).await.unwrap();
        ids.push(id);
    }
    // A check waiting for a judge no agent answers stays open, in memory.
    let judge = JudgeSpec { criteria: vec!["states the facts".into()], threshold: 0.7, model: None };
    let open = json!({"auditId": "open", "output": {"summary": "fine"}, "rules": ["has-summary"],
                      "judge": judge, "timeoutMs": OPEN_FOR_MS});
    let opened = command::<CheckOutcome>(&client, "check", &open).await.unwrap().result;
    assert!(matches!(opened, CheckOutcome::Open(_)), "{opened:?}");
    assert!(remove(&client, "no-shouting").await);

    let before = answers(&client, &ids, middle).await;
    assert_eq!(before["digest"]["audits"], json!(8 + BIG), "{before:#?}");
    let big_pages = before[&format!("audits {}", json!({"limit": 4, "execution_id": "big"}))].as_array().unwrap();
    assert_eq!(big_pages.len(), 3, "two big entries fill a page: {big_pages:#?}");
    assert_eq!(keeping.audits_in_memory(), 8 + BIG + 1);
    keeping.shutdown().await;

    // A new instance that keeps recorded audits no time at all: only the open one stays.
    let evicting = instance(&url, Duration::ZERO).await;
    eventually(WITHIN, "only the open check to stay in memory", || async { evicting.audits_in_memory() == 1 }).await;
    let after = answers(&client, &ids, middle).await;
    for (name, answer) in &before {
        assert_eq!(&after[name], answer, "{name}");
    }
    assert_eq!(evicting.audits_in_memory(), 1, "answering recalled nothing into memory");

    // The open check goes on as before: recorded at its deadline, it leaves too.
    eventually(WITHIN, "the open check to be recorded and leave memory", || async { evicting.audits_in_memory() == 0 })
        .await;
    let recorded = shown(query(&client, "audit", &json!({"id": "open"})).await);
    assert_eq!(recorded["entry"]["opinion"], "disclaimer", "{recorded:#}");
    evicting.shutdown().await;
}

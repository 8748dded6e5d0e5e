//! The `audits` query: every filter (opinions, minimum critical and major findings, agent,
//! execution, time range), together, oldest first, a page at a time.

use std::time::Duration;

use osp_protocol::quality::queries::AuditPage;
use osp_protocol::quality::AuditEntry;
use osp_protocol::Timestamp;
use serde_json::{json, Value};

use crate::common::{add_three, command, query, refusal, system, THREE};

/// (id, agent, execution, output): opinions by [`crate::common::three_rules`] in the
/// comments. The eviction test records them too.
pub fn first_half() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    vec![
        ("e1", "agent-a", "r1", json!({"summary": "fine", "score": 0.5})), // unqualified
        ("e2", "agent-a", "r2", json!({"summary": "LOUDLY fine", "score": 0.5})), // qualified: minor
        ("e3", "agent-b", "r3", json!({"score": 0.5})),                    // qualified: major + minor
        ("e4", "agent-b", "r4", json!({"summary": "fine", "score": 3})),   // adverse: critical
    ]
}

pub fn second_half() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    vec![
        ("e5", "agent-a", "r5", json!({})), // adverse: critical + major + minor
        ("e6", "agent-c", "r1", json!({"summary": "fine", "score": 1})), // unqualified
        ("e7", "agent-c", "r6", json!({"score": 0.2})), // qualified: major + minor
        ("e8", "agent-a", "r7", json!({"summary": "LOUD NOISES", "score": 9})), // adverse: critical + minor
    ]
}

pub async fn record(client: &osp_client::Client, entries: Vec<(&str, &str, &str, Value)>) {
    for (id, agent, execution, output) in entries {
        let body = json!({"auditId": id, "agentId": agent, "executionId": execution, "output": output, "rules": THREE});
        command::<AuditEntry>(client, "check", &body).await.unwrap();
    }
}

async fn ids(client: &osp_client::Client, filter: Value) -> Vec<String> {
    let page = query::<AuditPage>(client, "audits", &filter).await.unwrap_or_else(|e| panic!("{filter}: {e}")).result;
    page.entries.into_iter().map(|entry| entry.id).collect()
}

#[tokio::test]
async fn audits_match_every_filter_oldest_first() {
    let (_server, instance, client) = system().await;
    add_three(&client).await;
    record(&client, first_half()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let middle = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    record(&client, second_half()).await;

    let cases = [
        (json!({}), vec!["e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8"]),
        (json!({"opinions": ["adverse"]}), vec!["e4", "e5", "e8"]),
        (json!({"opinions": ["unqualified", "qualified"]}), vec!["e1", "e2", "e3", "e6", "e7"]),
        (json!({"opinions": ["disclaimer"]}), vec![]),
        (json!({"min_critical": 1}), vec!["e4", "e5", "e8"]),
        (json!({"minMajor": 1}), vec!["e3", "e5", "e7"]),
        (json!({"min_major": 2}), vec![]),
        (json!({"agentId": "agent-a"}), vec!["e1", "e2", "e5", "e8"]),
        (json!({"execution_id": "r1"}), vec!["e1", "e6"]),
        (json!({"from": middle}), vec!["e5", "e6", "e7", "e8"]),
        (json!({"to": middle}), vec!["e1", "e2", "e3", "e4"]),
        (json!({"agent_id": "agent-a", "opinions": ["adverse"], "from": middle}), vec!["e5", "e8"]),
        (json!({"agent_id": "agent-b", "min_major": 1, "min_critical": 0}), vec!["e3"]),
        (json!({"agent_id": "nobody"}), vec![]),
    ];
    for (filter, expected) in cases {
        assert_eq!(ids(&client, filter.clone()).await, expected, "{filter}");
    }

    // Pages, followed cursor to cursor, give every match once, in order.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let filter = json!({"limit": 3, "after": after, "opinions": ["qualified", "adverse"]});
        let page = query::<AuditPage>(&client, "audits", &filter).await.unwrap().result;
        assert!(page.entries.len() <= 3);
        paged.extend(page.entries.into_iter().map(|entry| entry.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, ["e2", "e3", "e4", "e5", "e7", "e8"]);

    // Bad queries say what is wrong.
    let error = refusal(query::<AuditPage>(&client, "audits", &json!({"limit": 0})).await);
    assert_eq!((error.code(), error.field()), ("invalid", Some("limit")));
    let error = refusal(query::<AuditPage>(&client, "audits", &json!({"after": "nope"})).await);
    assert_eq!((error.code(), error.field()), ("not_found", Some("after")));
    let error = refusal(query::<AuditPage>(&client, "audits", &json!({"opinion": ["adverse"]})).await);
    assert_eq!(error.code(), "malformed", "{error}");
    instance.shutdown().await;
}

//! Scope isolation between two runs' agents, with the real registry and scheduler: each
//! agent reads and writes the scope of the run it works on, is refused the other's (a
//! clear error, and a rejection record on the log), reads the session its run names; once
//! a run ends its scope is archived. Also: the system context of an agent at work.

use std::time::Duration;

use osp_client::{Client, Submission, Worker};
use osp_protocol::registry::document::from_json;
use osp_protocol::registry::EntryDoc;
use serde_json::{json, Value};

use crate::common::{client, context, refusal, server};

/// What an agent's task does with the context: `own` is its run, `other` the other's.
async fn probe(agent: Client, run: String, other: String) -> Value {
    let context = agent.context();
    let own = format!("run:{run}");
    let written = context.set(&own, "finding", json!(format!("by {run}"))).await.is_ok();
    let read_own = context.get(&own, "finding").await.ok().flatten().map(|entry| entry.value);
    let other_scope = format!("run:{other}");
    let read_other = refusal(context.get(&other_scope, "finding").await).code().to_owned();
    let write_other = refusal(context.set(&other_scope, "finding", json!("intruder")).await).code().to_owned();
    let session = context.list("session:chat-7", "").await.map_err(|e| e.to_string());
    let system = context.system(None).await.map_err(|e| e.to_string());
    json!({"written": written, "read_own": read_own, "read_other": read_other, "write_other": write_other,
           "session": session.ok(), "system": system.ok()})
}

/// A worker of `name`, offering `capability`, whose tasks probe the context.
async fn worker(url: &str, name: &str, capability: &str) -> Worker {
    let agent = client(url, &format!("agent:{name}")).await;
    let probing = agent.clone();
    Worker::builder(&agent, name)
        .capabilities([capability])
        .start(move |task| {
            let agent = probing.clone();
            let (run, other) =
                (task.run_id().to_owned(), task.input()["other"].as_str().unwrap_or_default().to_owned());
            async move { Ok(probe(agent, run, other).await) }
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn two_runs_agents_see_their_own_run_only() {
    let server = server().await;
    let url = server.url();
    let registry = osp_registry::Registry::start(osp_tests::connect(&url).await, Default::default()).await.unwrap();
    let scheduler = osp_scheduler::Scheduler::start(osp_tests::connect(&url).await, Default::default()).await.unwrap();
    let instance = context(&url).await;
    let ana = client(&url, "user:ana").await;
    for (name, capability) in [("a1", "alpha"), ("a2", "beta")] {
        let card = from_json(&json!({"capabilities": [capability]}));
        ana.registry().register(&EntryDoc::new("agents", name, String::new(), card, None).unwrap()).await.unwrap();
    }
    ana.context().set("session:chat-7", "topic", json!("pricing")).await.unwrap();
    ana.context()
        .set_env("global", &osp_client::EnvEntry { key: "REGION".into(), value: "eu".into(), ..Default::default() })
        .await
        .unwrap();
    let workers = [worker(&url, "a1", "alpha").await, worker(&url, "a2", "beta").await];

    let scheduler_client = ana.scheduler();
    let one = Submission::new("alpha", json!({"other": "r2"})).run_id("r1").metadata(json!({"session": "chat-7"}));
    let two = Submission::new("beta", json!({"other": "r1"})).run_id("r2");
    scheduler_client.submit(&one).await.unwrap();
    scheduler_client.submit(&two).await.unwrap();
    let outputs: Vec<Value> = futures::future::join_all(["r1", "r2"].map(|run| {
        let scheduler = scheduler_client.clone();
        async move {
            let view = scheduler.wait(run, Duration::from_secs(60)).await.unwrap();
            osp_protocol::json::from_msgpack_value(&view.output.expect("completed"))
        }
    }))
    .await;
    for (output, run) in outputs.iter().zip(["r1", "r2"]) {
        assert_eq!(output["written"], true, "{run}: {output}");
        assert_eq!(output["read_own"], json!(format!("by {run}")), "{run}: {output}");
        assert_eq!(
            (output["read_other"].as_str(), output["write_other"].as_str()),
            (Some("forbidden"), Some("forbidden")),
            "{run}"
        );
    }
    assert_eq!(outputs[0]["session"], json!(["topic"]), "r1 names the session");
    assert_eq!(outputs[1]["session"], Value::Null, "r2 does not");
    let system = &outputs[0]["system"];
    assert_eq!(system["agent"], "a1");
    assert_eq!(system["registry"]["card"]["capabilities"], json!(["alpha"]));
    assert_eq!(system["env"][0]["key"], "REGION");
    let scopes: Vec<&str> = system["scopes"].as_array().unwrap().iter().map(|s| s["scope"].as_str().unwrap()).collect();
    assert_eq!(scopes, ["global", "run:r1", "agent:a1", "session:chat-7", "user:ana"], "what a1 may read");

    // The refusals are on the log: a read and a write of the other's scope per agent, and
    // a2's read of a session its run does not name.
    let rejections = osp_tests::rejections(&url).await;
    let forbidden =
        rejections.values().filter(|(service, error)| service == "context" && error.code() == "forbidden").count();
    assert_eq!(forbidden, 5, "{rejections:?}");

    // The runs ended: their scopes are archived, read-only for everyone.
    let ended = refusal(ana.context().set("run:r1", "late", json!(1)).await);
    assert_eq!(ended.code(), "illegal_transition");
    assert!(ended.to_string().contains("archived"), "{ended}");
    assert_eq!(ana.context().get("run:r1", "finding").await.unwrap().unwrap().value, json!("by r1"));
    for worker in workers {
        worker.shutdown().await;
    }
    instance.shutdown().await;
    scheduler.shutdown().await;
    registry.shutdown().await;
}

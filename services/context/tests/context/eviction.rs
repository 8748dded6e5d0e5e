//! A run's facts and its scope leave memory once the run has ended, and are answered
//! exactly as before they left: reads of the scope (entries, environment, embeddings, as
//! an operator and as an agent) recall it from the log, the digest counts it, and writes
//! to it and agents' reads are refused as they were.

use std::collections::BTreeMap;
use std::time::Duration;

use osp_client::{Client, EnvEntry, SearchBy, Submission, TaskFailure, Worker};
use osp_context::view::InMemory;
use osp_protocol::context::queries::{KeyPage, ListQuery};
use osp_protocol::context::{Embedding, Scope};
use osp_protocol::registry::document::from_json;
use osp_protocol::registry::EntryDoc;
use osp_protocol::scheduler::queries::RunStatus;
use serde::Serialize;
use serde_json::{json, Value};

use crate::common::{client, context_keeping, eventually, server};
use crate::two_instances::folded_digest;

const WITHIN: Duration = Duration::from_secs(30);

/// A reply, or the refusal (its code and what it says), as JSON.
fn answer<T: Serialize>(reply: Result<T, osp_client::Error>) -> Value {
    match reply {
        Ok(value) => serde_json::to_value(value).unwrap(),
        Err(osp_client::Error::Rejected { error, .. }) => json!({"refused": error.code(), "reason": error.to_string()}),
        Err(other) => panic!("not an answer: {other}"),
    }
}

fn embedding(id: &str, vector: Vec<f32>) -> Embedding {
    Embedding { id: id.into(), content: format!("about {id}"), metadata: Some(json!({"id": id})), vector }
}

/// What an agent does in the scope of the run it works on: entries (one removed), a
/// secret for itself, embeddings (one removed).
async fn work(agent: &osp_client::Context, run: &str, name: &str) -> Result<(), osp_client::Error> {
    let scope = format!("run:{run}");
    for i in 0..5 {
        agent.set(&scope, &format!("k{i}"), json!({"by": name, "i": i})).await?;
    }
    agent.remove(&scope, "k3").await?;
    let secret = EnvEntry {
        key: "TOKEN".into(),
        value: format!("{name}-secret"),
        target: vec![format!("agent:{name}")],
        sensitive: true,
    };
    agent.set_env(&scope, &secret).await?;
    agent.set_env(&scope, &EnvEntry { key: "REGION".into(), value: "eu".into(), ..EnvEntry::default() }).await?;
    let vectors = [embedding("e1", vec![1.0, 0.0]), embedding("e2", vec![0.6, 0.8]), embedding("e3", vec![0.0, 1.0])];
    agent.upsert_embeddings(&scope, &vectors).await?;
    agent.remove_embedding(&scope, "e3").await?;
    Ok(())
}

/// A registered agent `name` of `capability` that does [`work`] in its runs' scopes.
async fn worker(url: &str, name: &'static str, capability: &str) -> Worker {
    let agent = client(url, &format!("agent:{name}")).await;
    let context = agent.context();
    Worker::builder(&agent, name)
        .capabilities([capability])
        .start(move |task| {
            let (context, run) = (context.clone(), task.run_id().to_owned());
            async move {
                work(&context, &run, name).await.map_err(|error| TaskFailure::new(error.to_string()))?;
                Ok(json!({"worked": run}))
            }
        })
        .await
        .unwrap()
}

/// Every answer the test compares, as JSON, asked of whichever instance runs.
async fn answers(url: &str) -> BTreeMap<String, Value> {
    let (ana, ops, a1) = (client(url, "user:ana").await, client(url, "user:ops").await, client(url, "agent:a1").await);
    let (ana, ops, a1, raw) = (ana.context(), ops.context(), a1.context(), ana);
    let mut answers = BTreeMap::new();
    for scope in ["run:r1", "run:r2", "run:waiting", "run:never", "session:chat-7"] {
        let mut put = |what: &str, value: Value| answers.insert(format!("{scope} {what}"), value);
        put("get", answer(ana.get(scope, "k1").await));
        put("get removed", answer(ana.get(scope, "k3").await));
        put("list", answer(ana.list(scope, "").await));
        let page = ListQuery {
            scope: Scope::parse("scope", scope).unwrap(),
            prefix: None,
            after: Some("k0".into()),
            limit: Some(2),
        };
        let page = raw.query::<_, KeyPage>(osp_protocol::context::SERVICE, "list", &page).await.map(|page| page.result);
        put("page", answer(page));
        put("history", answer(ana.history(scope, "k1", Some(u64::MAX / 2), None).await));
        put("envs", answer(ana.envs(scope, None, false).await));
        put("env revealed to ops", answer(ops.env(scope, "TOKEN", true).await));
        put("env revealed to ana", answer(ana.env(scope, "TOKEN", true).await));
        put("embedding", answer(ana.embedding(scope, "e2").await));
        put("search", answer(ana.search(scope, SearchBy::Vector(vec![1.0, 0.1]), 5, None).await));
        put(
            "search filtered",
            answer(ana.search(scope, SearchBy::Vector(vec![0.0, 1.0]), 5, Some(json!({"id": "e1"}))).await),
        );
        put("a1 get", answer(a1.get(scope, "k1").await));
        put("a1 list", answer(a1.list(scope, "").await));
    }
    // Writes to the scopes of ended runs, refused: nothing here changes the state.
    for scope in ["run:r1", "run:r2"] {
        let mut put = |what: &str, value: Value| answers.insert(format!("{scope} {what}"), value);
        put("set", answer(ana.set(scope, "late", json!(1)).await.map(|answer| answer.result)));
        put("remove", answer(ana.remove(scope, "k1").await));
        put("a1 set", answer(a1.set(scope, "late", json!(1)).await.map(|answer| answer.result)));
        let vectors = [embedding("late", vec![1.0, 1.0])];
        put("upsert", answer(ana.upsert_embeddings(scope, &vectors).await.map(|answer| answer.result)));
    }
    answers.insert("a1 system".into(), answer(a1.system(None).await));
    let digest = ana.digest().await.unwrap().result;
    let digest = json!({"digest": digest.digest, "scopes": digest.scopes, "entries": digest.entries, "embeddings": digest.embeddings});
    answers.insert("digest".into(), digest);
    answers
}

#[tokio::test]
async fn a_runs_scope_and_facts_that_left_memory_are_answered_as_before_they_left() {
    let server = server().await;
    let url = server.url();
    let registry = osp_registry::Registry::start(osp_tests::connect(&url).await, Default::default()).await.unwrap();
    let scheduler = osp_scheduler::Scheduler::start(osp_tests::connect(&url).await, Default::default()).await.unwrap();
    let keeping = context_keeping(&url, Duration::from_secs(3600)).await;
    let ana: Client = client(&url, "user:ana").await;
    for (name, capability) in [("a1", "alpha"), ("a2", "beta")] {
        let card = from_json(&json!({"capabilities": [capability]}));
        ana.registry().register(&EntryDoc::new("agents", name, String::new(), card, None).unwrap()).await.unwrap();
    }
    ana.context().set("session:chat-7", "topic", json!("pricing")).await.unwrap();
    let workers = [worker(&url, "a1", "alpha").await, worker(&url, "a2", "beta").await];
    let runs = ana.scheduler();
    runs.submit(&Submission::new("alpha", json!({})).run_id("r1").metadata(json!({"session": "chat-7"})))
        .await
        .unwrap();
    runs.submit(&Submission::new("beta", json!({})).run_id("r2")).await.unwrap();
    let approval = serde_json::from_value(json!({"approval": {"message": "ok?"}})).unwrap();
    runs.submit(&Submission::new("alpha", json!({})).run_id("waiting").options(approval)).await.unwrap();
    for run in ["r1", "r2"] {
        assert_eq!(runs.wait(run, WITHIN).await.unwrap().status(), RunStatus::Completed, "{run}");
    }
    // An operator writes in the scope of the run waiting for approval, and of a run that
    // was never submitted: neither scope ever leaves.
    ana.context().set("run:waiting", "k1", json!("before approval")).await.unwrap();
    ana.context().set("run:never", "k1", json!("no such run")).await.unwrap();

    let before = answers(&url).await;
    assert_eq!(before["run:r1 get"]["value"], json!({"by": "a1", "i": 1}), "{before:#?}");
    assert_eq!(before["run:r1 search"]["matches"].as_array().map(Vec::len), Some(2), "{before:#?}");
    assert_eq!(before["run:r1 env revealed to ops"]["value"], "a1-secret");
    assert_eq!(before["run:r1 a1 get"]["refused"], "forbidden");
    assert_eq!(before["run:r1 set"]["refused"], "illegal_transition");
    assert_eq!(before["run:r1 a1 set"]["refused"], "illegal_transition");
    assert_eq!(before["run:r2 upsert"]["refused"], "illegal_transition");
    assert_eq!(before["session:chat-7 a1 list"]["refused"], "forbidden", "r1 ended: a1 reads chat-7 no more");
    let digest = &before["digest"];
    assert_eq!((&digest["scopes"], &digest["entries"], &digest["embeddings"]), (&json!(7), &json!(15), &json!(4)));
    assert_eq!(keeping.in_memory(), InMemory { runs: 3, scopes: 7 });
    keeping.shutdown().await;

    // A new instance that keeps ended runs no time at all: the run waiting stays, and the
    // scopes no run's end can finish.
    let evicting = context_keeping(&url, Duration::ZERO).await;
    let left = InMemory { runs: 1, scopes: 3 };
    eventually(WITHIN, "the ended runs and their scopes to leave memory", || async { evicting.in_memory() == left })
        .await;
    let after = answers(&url).await;
    for (name, answer) in &before {
        assert_eq!(&after[name], answer, "{name}");
    }
    assert_eq!(evicting.in_memory(), left, "answering recalled them, and kept none");

    // The run in memory ends: it leaves too, and is answered and refused as before.
    runs.reject("waiting", None).await.unwrap();
    assert_eq!(runs.wait("waiting", WITHIN).await.unwrap().status(), RunStatus::Cancelled);
    let gone = InMemory { runs: 0, scopes: 2 };
    eventually(WITHIN, "the ended run to leave memory", || async { evicting.in_memory() == gone }).await;
    let waiting = ana.context().get("run:waiting", "k1").await.unwrap().unwrap();
    assert_eq!(serde_json::to_value(&waiting).unwrap(), before["run:waiting get"]);
    let archived = answer(ana.context().set("run:waiting", "k2", json!(2)).await.map(|answer| answer.result));
    assert_eq!(archived["refused"], "illegal_transition");
    assert!(archived["reason"].as_str().unwrap().contains("run waiting has ended"), "{archived}");
    assert_eq!(evicting.digest().unwrap(), folded_digest(&url).await, "the log's, whatever is in memory");
    for worker in workers {
        worker.shutdown().await;
    }
    evicting.shutdown().await;
    scheduler.shutdown().await;
    registry.shutdown().await;
}

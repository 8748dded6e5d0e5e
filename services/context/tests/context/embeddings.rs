//! Embeddings: upsert, get, search (cosine, best first, with a metadata filter), remove;
//! and a search by text through a run of the `embed` capability, answered by an agent
//! with the example's hashing embedder.

use std::time::Duration;

use osp_client::{hashing_embedder, SearchBy, Worker};
use osp_protocol::context::Embedding;
use osp_protocol::registry::document::from_json;
use osp_protocol::registry::EntryDoc;
use serde_json::json;

use crate::common::{client, context, refusal, server};

fn embedding(id: &str, content: &str, vector: Vec<f32>, metadata: serde_json::Value) -> Embedding {
    Embedding { id: id.into(), content: content.into(), metadata: Some(metadata), vector }
}

#[tokio::test]
async fn upsert_search_get_remove() {
    let server = server().await;
    let instance = context(&server.url()).await;
    let ana = client(&server.url(), "user:ana").await.context();
    let entries = [
        embedding("east", "due east", vec![1.0, 0.0, 0.0], json!({"kind": "axis"})),
        embedding("north", "due north", vec![0.0, 3.0, 0.0], json!({"kind": "axis", "tags": ["cold"]})),
        embedding("ne", "north-east", vec![1.0, 1.0, 0.0], json!({"kind": "diagonal"})),
    ];
    let upserted = ana.upsert_embeddings("session:map", &entries).await.unwrap().result;
    assert_eq!((upserted.upserted, upserted.total, upserted.dimension), (3, 3, 3));

    let found = ana.search("session:map", SearchBy::Vector(vec![2.0, 0.2, 0.0]), 2, None).await.unwrap();
    assert_eq!(found.matches.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["east", "ne"]);
    assert!(found.matches[0].score > 0.99 && found.matches[0].score <= 1.0001, "{}", found.matches[0].score);
    assert_eq!(found.compared, 3);
    let filtered = ana
        .search("session:map", SearchBy::Vector(vec![2.0, 0.2, 0.0]), 5, Some(json!({"tags": "cold"})))
        .await
        .unwrap();
    assert_eq!((filtered.matches.len(), filtered.matches[0].id.as_str()), (1, "north"));

    let north = ana.embedding("session:map", "north").await.unwrap().unwrap();
    assert_eq!((north.content.as_str(), north.vector.clone()), ("due north", vec![0.0, 1.0, 0.0]), "normalised");
    let wrong = refusal(ana.search("session:map", SearchBy::Vector(vec![1.0, 0.0]), 1, None).await);
    assert_eq!((wrong.code(), wrong.field()), ("invalid", Some("vector")));
    let wrong = refusal(ana.upsert_embeddings("session:map", &[embedding("x", "", vec![1.0; 4], json!({}))]).await);
    assert_eq!((wrong.code(), wrong.field()), ("invalid", Some("entries[0].vector")));
    assert!(wrong.to_string().contains("have 3"), "{wrong}");

    ana.upsert_embeddings("session:map", &[embedding("east", "east, again", vec![0.0, 0.0, 1.0], json!({}))])
        .await
        .unwrap();
    assert_eq!(ana.embedding("session:map", "east").await.unwrap().unwrap().content, "east, again");
    assert!(ana.remove_embedding("session:map", "ne").await.unwrap());
    assert!(!ana.remove_embedding("session:map", "ne").await.unwrap());
    let found = ana.search("session:map", SearchBy::Vector(vec![1.0, 1.0, 0.0]), 10, None).await.unwrap();
    assert_eq!(found.matches.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["north", "east"]);
    instance.shutdown().await;
}

#[tokio::test]
async fn a_search_by_text_goes_through_an_embed_run() {
    let server = server().await;
    let url = server.url();
    let registry = osp_registry::Registry::start(osp_tests::connect(&url).await, Default::default()).await.unwrap();
    let scheduler = osp_scheduler::Scheduler::start(osp_tests::connect(&url).await, Default::default()).await.unwrap();
    let instance = context(&url).await;
    let ana = client(&url, "user:ana").await;
    let texts = [
        ("cats", "cats purr and sleep all day"),
        ("tax", "invoices and tax are due monthly"),
        ("dogs", "dogs bark at night"),
    ];
    let entries: Vec<Embedding> =
        texts.iter().map(|(id, text)| embedding(id, text, hashing_embedder(text, 384), json!({}))).collect();
    ana.context().upsert_embeddings("global", &entries).await.unwrap();

    // No agent offers `embed` yet: a clear error, at once.
    let error = refusal(ana.context().search("global", SearchBy::Text("sleepy cats".into()), 1, None).await);
    assert_eq!(error.code(), "not_found");
    assert!(error.to_string().contains("embed capability"), "{error}");

    let card = from_json(&json!({"capabilities": ["embed"]}));
    ana.registry().register(&EntryDoc::new("agents", "embedder", String::new(), card, None).unwrap()).await.unwrap();
    let agent = client(&url, "agent:embedder").await;
    let worker = Worker::builder(&agent, "embedder")
        .capabilities(["embed"])
        .start(|task| async move {
            let text = task.input()["text"].as_str().unwrap_or_default().to_owned();
            Ok(json!({"vector": hashing_embedder(&text, 384)}))
        })
        .await
        .unwrap();
    let found = ana.context().search("global", SearchBy::Text("the cats sleep".into()), 2, None).await.unwrap();
    assert_eq!(found.matches[0].id, "cats", "{found:?}");
    let run = found.embedded_by.expect("the run that embedded it");
    let view = ana.scheduler().wait(&run, Duration::from_secs(10)).await.unwrap();
    assert_eq!(view.capability, "embed");
    worker.shutdown().await;
    instance.shutdown().await;
    scheduler.shutdown().await;
    registry.shutdown().await;
}

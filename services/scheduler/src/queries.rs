//! The scheduler's query endpoints (`osp.v1.q.scheduler.*`): thin readers of the view.

use osp_protocol::scheduler::queries::{GetQuery, ListQuery};
use osp_protocol::scheduler::RUN_KIND;
use osp_protocol::AggregateRef;
use osp_protocol::{Error, Token};
use osp_runtime::{unreadable, Projection, Query};
use serde::Deserialize;

use crate::listing::{list, merge_pages};
use crate::view::{merge_digests, RunRecord, SchedulerView};

/// `digest` takes no arguments.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DigestQuery {}

/// Every query the scheduler answers.
pub fn all() -> Vec<Query<SchedulerView>> {
    vec![
        Query::deferred("get", |runs: Projection<SchedulerView>, _, q: GetQuery| async move {
            // An id no run could have is told so, as a command naming it would be.
            let id = Token::new("run_id", q.run_id.as_str())?;
            let aggregate = AggregateRef { kind: Token::new("kind", RUN_KIND)?, id };
            let recalled = runs.recall(&aggregate, RunRecord::view).await;
            recalled.map_err(unreadable)?.flatten().ok_or_else(|| Error::NotFound {
                field: "run_id".into(),
                value: q.run_id.clone(),
                reason: "no run has this id".into(),
            })
        }),
        Query::gathered(
            "list",
            |runs: Projection<SchedulerView>, share, q: ListQuery| async move {
                let index = runs
                    .index()
                    .ok_or_else(|| Error::Unavailable { reason: "this instance keeps no run index".into() })?;
                list(index, &q, &share)
            },
            |q, parts| merge_pages(&q, parts),
        ),
        Query::gathered(
            "digest",
            |runs: Projection<SchedulerView>, share, _: DigestQuery| async move { Ok(runs.read().digest_part(&share)) },
            |_, parts| Ok(merge_digests(parts)),
        ),
    ]
}

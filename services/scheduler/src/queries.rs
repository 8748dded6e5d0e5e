//! The scheduler's query endpoints (`osp.v1.q.scheduler.*`): thin readers of the view.

use osp_protocol::scheduler::queries::{GetQuery, ListQuery};
use osp_protocol::{Error, Token};
use osp_runtime::Query;
use serde::Deserialize;

use crate::view::SchedulerView;

/// `digest` takes no arguments.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DigestQuery {}

/// Every query the scheduler answers.
pub fn all() -> Vec<Query<SchedulerView>> {
    vec![
        Query::new("get", |view: &SchedulerView, q: GetQuery| {
            // An id no run could have is told so, as a command naming it would be.
            Token::new("run_id", q.run_id.as_str())?;
            view.get(&q.run_id).ok_or_else(|| Error::NotFound {
                field: "run_id".into(),
                value: q.run_id.clone(),
                reason: "no run has this id".into(),
            })
        }),
        Query::new("list", |view: &SchedulerView, q: ListQuery| view.list(&q)),
        Query::new("digest", |view: &SchedulerView, _: DigestQuery| view.digest()),
    ]
}

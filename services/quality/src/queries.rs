//! The quality service's query endpoints (`osp.v1.q.quality.*`): thin readers of the view,
//! of the log for an audit that left memory, and of the listing index.

use osp_protocol::quality::queries::{AuditIdQuery, AuditQuery, DigestQuery, RuleQuery, RulesQuery};
use osp_protocol::quality::AUDIT_KIND;
use osp_protocol::{AggregateRef, Error, Token};
use osp_runtime::{unreadable, Projection, Query};

use crate::listing;
use crate::view::{AuditRecord, QualityView};

/// Every query the quality service answers.
pub fn all() -> Vec<Query<QualityView>> {
    vec![
        Query::new("rules", |view: &QualityView, q: RulesQuery| view.rules(&q)),
        Query::new("rule", |view: &QualityView, q: RuleQuery| {
            // A name no rule could have is told so, as a command naming it would be.
            Token::new("name", q.name.as_str())?;
            view.rule(&q.name).ok_or_else(|| Error::NotFound {
                field: "name".into(),
                value: q.name.clone(),
                reason: "the catalog has no rule by that name".into(),
            })
        }),
        Query::deferred("audit", |view: Projection<QualityView>, _, q: AuditIdQuery| async move {
            let id = Token::new("id", q.id.as_str())?;
            let aggregate = AggregateRef { kind: Token::new("kind", AUDIT_KIND)?, id };
            let recalled = view.recall(&aggregate, AuditRecord::view).await.map_err(unreadable)?;
            recalled.unwrap_or(Err(None)).map_err(|open| Error::NotFound {
                field: "id".into(),
                value: q.id.clone(),
                reason: open.unwrap_or_else(|| "no audit entry has that id".into()),
            })
        }),
        Query::deferred("audits", |view: Projection<QualityView>, _, q: AuditQuery| async move {
            let index = view
                .index()
                .ok_or_else(|| Error::Unavailable { reason: "this instance keeps no audit index".into() })?;
            listing::audits(index, &q)
        }),
        Query::new("digest", |view: &QualityView, _: DigestQuery| view.digest()),
    ]
}

//! The quality service's query endpoints (`osp.v1.q.quality.*`): thin readers of the view.

use osp_protocol::quality::queries::{AuditIdQuery, AuditQuery, DigestQuery, RuleQuery, RulesQuery};
use osp_protocol::quality::AUDIT_KIND;
use osp_protocol::{AggregateRef, Error, Token};
use osp_runtime::Query;

use crate::view::QualityView;

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
        Query::new("audit", |view: &QualityView, q: AuditIdQuery| {
            Token::new("id", q.id.as_str())?;
            view.audit(&q.id).ok_or_else(|| {
                let open = AggregateRef::new(AUDIT_KIND, &q.id).ok().and_then(|aggregate| {
                    let open = view.open_audit(&aggregate)?;
                    let waiting: Vec<&str> = open
                        .opened
                        .parts
                        .iter()
                        .filter(|part| !open.ended(&part.part))
                        .map(|part| part.part.as_str())
                        .collect();
                    Some(format!(
                        "the check is open, waiting for {} (until {})",
                        waiting.join(", "),
                        open.opened.deadline
                    ))
                });
                Error::NotFound {
                    field: "id".into(),
                    value: q.id.clone(),
                    reason: open.unwrap_or_else(|| "no audit entry has that id".into()),
                }
            })
        }),
        Query::new("audits", |view: &QualityView, q: AuditQuery| view.audits(&q)),
        Query::new("digest", |view: &QualityView, _: DigestQuery| view.digest()),
    ]
}

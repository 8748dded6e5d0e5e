//! The registry's query endpoints (`osp.v1.q.registry.*`): thin readers of the view.

use osp_protocol::registry::queries::{DigestQuery, FindQuery, GetQuery, ListQuery, PageRequest, RegistriesQuery};
use osp_protocol::registry::{Document, EntryKey, RegistryName};
use osp_protocol::Error;
use osp_runtime::Query;

use crate::criteria;
use crate::view::{PageSpec, RegistryView};

/// Every query the registry answers.
pub fn all() -> Vec<Query<RegistryView>> {
    vec![
        Query::new("get", |view: &RegistryView, q: GetQuery| {
            let key = EntryKey::new(&q.registry, &q.name)?;
            view.get(&key).ok_or_else(|| Error::NotFound {
                field: "name".into(),
                value: q.name.clone(),
                reason: format!("registry {:?} has no entry by that name", q.registry),
            })
        }),
        Query::encoded("list", |view: &RegistryView, q: ListQuery, encoding| {
            let registry = RegistryName::new("registry", q.registry)?;
            Ok(view.list(&registry, &PageSpec::new(q.after, q.limit)?).answer(encoding))
        }),
        Query::encoded("find", |view: &RegistryView, q: FindQuery, encoding| {
            let registry = RegistryName::new("registry", q.registry)?;
            let criteria = q.criteria.unwrap_or_else(|| Document::Map(Vec::new()));
            criteria::check(&criteria)?;
            if q.live && !registry.is_agents() {
                return Err(Error::Invalid {
                    field: "live".into(),
                    reason: format!("only agents have liveness; the {} registry has none", registry.as_str()),
                });
            }
            Ok(view.find(&registry, &criteria, q.live, &PageSpec::new(q.after, q.limit)?).answer(encoding))
        }),
        Query::encoded("live", |view: &RegistryView, q: PageRequest, encoding| {
            Ok(view.live(&PageSpec::new(q.after, q.limit)?).answer(encoding))
        }),
        Query::new("registries", |view: &RegistryView, _: RegistriesQuery| Ok(view.registries())),
        Query::new("digest", |view: &RegistryView, _: DigestQuery| view.digest()),
    ]
}

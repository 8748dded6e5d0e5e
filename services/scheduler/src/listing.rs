//! `list`: pages of runs by id, filtered, from the listing index
//! ([`osp_runtime::index`]), never from memory. An instance holding a share of the
//! partitions lists the runs of its share, and the pages of every instance are merged
//! ([`osp_runtime::gather`]).

use osp_protocol::scheduler::queries::{ListQuery, RunPage, RunSummary, DEFAULT_LIMIT, MAX_LIMIT};
use osp_protocol::Error;
use osp_runtime::ownership::Share;
use osp_runtime::{Index, Part};

use crate::view::ROOT;

/// A page of the runs of the partitions of `share`.
pub fn list(index: &Index, query: &ListQuery, share: &Share) -> Result<RunPage, Error> {
    let limit = limit(query)?;
    let tag = match (query.children, query.status) {
        (true, None) => None,
        (true, Some(status)) => Some(format!("status:{status}")),
        (false, None) => Some(ROOT.to_owned()),
        (false, Some(status)) => Some(format!("root-status:{status}")),
    };
    let decode = |bytes: &[u8]| rmp_serde::from_slice::<RunSummary>(bytes);
    let keep = |id: &str, bytes: &[u8]| {
        share.contains_id(id)
            && query
                .capability
                .as_ref()
                .is_none_or(|capability| decode(bytes).is_ok_and(|run| &run.capability == capability))
    };
    let unavailable = |reason: String| Error::Unavailable { reason };
    let (page, next) =
        index.page(tag.as_deref(), query.after.as_deref(), limit, keep).map_err(|e| unavailable(e.to_string()))?;
    let runs = page
        .iter()
        .map(|bytes| decode(bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unavailable(format!("the listing index holds an unreadable entry: {e}")))?;
    Ok(RunPage { runs, next })
}

fn limit(query: &ListQuery) -> Result<usize, Error> {
    match query.limit.unwrap_or(DEFAULT_LIMIT) {
        limit @ 1..=MAX_LIMIT => Ok(limit as usize),
        _ => Err(Error::Invalid { field: "limit".into(), reason: format!("must be 1 to {MAX_LIMIT}") }),
    }
}

/// One page from the pages of several instances, each taken for its share of the
/// partitions.
///
/// The first `limit` runs of the parts, as taken, are the first `limit` of every share:
/// a run a part did not reach is preceded, in that part's page, by `limit` runs of
/// partitions it holds, which are in the parts that they are taken from.
pub fn merge_pages(query: &ListQuery, parts: Vec<Part<RunPage>>) -> Result<RunPage, Error> {
    let limit = limit(query)?;
    let mut more = parts.iter().any(|part| part.value.next.is_some());
    let mut runs: Vec<RunSummary> = parts
        .into_iter()
        .flat_map(|Part { value, share, .. }| value.runs.into_iter().filter(move |run| share.contains_id(&run.run_id)))
        .collect();
    runs.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    more |= runs.len() > limit;
    runs.truncate(limit);
    let next = runs.last().filter(|_| more).map(|run| run.run_id.clone());
    Ok(RunPage { runs, next })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use osp_protocol::scheduler::queries::RunStatus;
    use osp_protocol::{Partitions, Timestamp};
    use proptest::prelude::*;

    use super::*;

    fn summary(id: &str) -> RunSummary {
        RunSummary {
            run_id: id.to_owned(),
            capability: "echo".into(),
            parent: None,
            status: RunStatus::Completed,
            paused: false,
            attempts: 1,
            progress: None,
            submitted_at: Timestamp(0),
            updated_at: Timestamp(0),
        }
    }

    /// What one instance answers: the first `limit` of its share's runs after `after`.
    fn page_of(all: &BTreeSet<String>, held: &Share, after: Option<&str>, limit: usize) -> RunPage {
        let mut ids = all.iter().filter(|id| held.contains_id(id) && after.is_none_or(|after| id.as_str() > after));
        let runs: Vec<RunSummary> = ids.by_ref().take(limit).map(|id| summary(id)).collect();
        let next = ids.next().and(runs.last().map(|run| run.run_id.clone()));
        RunPage { runs, next }
    }

    proptest! {
        /// However the partitions are held (overlapping while they move) and taken, paging
        /// through merged pages lists every run once, in order.
        #[test]
        fn merged_pages_list_every_run_once_in_order(
            ids in proptest::collection::btree_set("[a-z0-9]{1,6}", 0..60),
            held in proptest::collection::vec(proptest::collection::btree_set(0u32..8, 0..8), 1..4),
            limit in 1usize..7,
        ) {
            let partitions = Partitions::new(8).unwrap();
            let held: Vec<Share> = held.into_iter().map(|set| Share::new(partitions, set)).collect();
            // The gather takes each partition from the first part holding it.
            let mut taken = BTreeSet::new();
            let shares: Vec<Share> = held
                .iter()
                .map(|share| Share::new(partitions, share.iter().filter(|p| taken.insert(*p)).collect::<Vec<_>>()))
                .collect();
            let covered = Share::new(partitions, taken);
            let expected: Vec<String> = ids.iter().filter(|id| covered.contains_id(id)).cloned().collect();
            let query = ListQuery { limit: Some(limit as u32), ..ListQuery::default() };
            let (mut listed, mut after) = (Vec::new(), None::<String>);
            for _ in 0..=ids.len() + 1 {
                let parts = held
                    .iter()
                    .zip(&shares)
                    .map(|(held, share)| Part {
                        value: page_of(&ids, held, after.as_deref(), limit),
                        share: share.clone(),
                        applied: 0,
                    })
                    .collect();
                let page = merge_pages(&query, parts).unwrap();
                prop_assert!(page.runs.len() <= limit);
                listed.extend(page.runs.into_iter().map(|run| run.run_id));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            prop_assert_eq!(listed, expected);
        }
    }
}

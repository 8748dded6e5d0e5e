//! The `audits` listing, read from the listing index on local disk
//! ([`osp_runtime::index`]), so listing all history needs none of it in memory.
//!
//! One entry per recorded audit: the entry itself, keyed by time (`createdAt`, then id:
//! the index's order is the listing's), tagged by what a query can filter on (opinion,
//! agent, execution) and by its id (where a page's `after` sits). A query reads under the
//! narrowest tag it names, from its `from` or its `after`, and checks every filter on each
//! entry it reads.

use osp_protocol::quality::queries::{AuditPage, AuditQuery};
use osp_protocol::quality::{AuditEntry, Opinion};
use osp_protocol::{Encoding, Error, Timestamp, MAX_MESSAGE_BYTES};
use osp_runtime::{Index, Indexed};

use crate::view::page_limit;

/// At most this many bytes of entries go in one page (a reply must fit one message;
/// JSON may take up to six times the MessagePack size, see [`shown_size`]).
const PAGE_BYTES: usize = MAX_MESSAGE_BYTES * 3 / 4;

/// The index entry of a recorded audit: its key and what it is found by.
pub fn indexed(entry: &AuditEntry) -> Option<(String, Indexed)> {
    let summary = Encoding::MessagePack.encode(entry).ok()?;
    let mut tags = vec![id_tag(&entry.id), opinion_tag(entry.opinion)];
    tags.extend(entry.agent_id.as_deref().map(agent_tag));
    tags.extend(entry.execution_id.as_deref().map(execution_tag));
    Some((key(entry), Indexed::new(tags, summary)))
}

/// `createdAt` as 16 hex digits, in the order of the times (negative ones first), then the
/// id: keys sort as the listing does.
fn key(entry: &AuditEntry) -> String {
    format!("{} {}", time_key(entry.created_at), entry.id)
}

/// Sorts before every key of an entry created at `at` or later, after every earlier one.
fn time_key(at: Timestamp) -> String {
    format!("{:016x}", (at.millis() as u64) ^ (1 << 63))
}

fn id_tag(id: &str) -> String {
    format!("id:{id}")
}

fn opinion_tag(opinion: Opinion) -> String {
    format!("opinion:{}", <&str>::from(opinion))
}

fn agent_tag(agent: &str) -> String {
    format!("agent:{agent}")
}

fn execution_tag(execution: &str) -> String {
    format!("execution:{execution}")
}

/// The entries matching every filter of `query`, oldest first, a page at a time: at most
/// `limit` entries and [`PAGE_BYTES`].
pub fn audits(index: &Index, query: &AuditQuery) -> Result<AuditPage, Error> {
    let limit = page_limit(query.limit)?;
    let after = query.after.as_deref().map(|id| position(index, id)).transpose()?;
    // No entry before `from` matches: start there when it is past `after`.
    let start = after.max(query.from.map(time_key));
    let tag = match (&query.execution_id, &query.agent_id, query.opinions.as_slice()) {
        (Some(execution), _, _) => Some(execution_tag(execution)),
        (None, Some(agent), _) => Some(agent_tag(agent)),
        (None, None, [opinion]) => Some(opinion_tag(*opinion)),
        _ => None,
    };
    // An entry that cannot be read is kept, so the page says so rather than skip it.
    let keep = |_: &str, bytes: &[u8]| decode(bytes).map_or(true, |entry| matches(&entry, query));
    let (found, more) = index.page(tag.as_deref(), start.as_deref(), limit, keep).map_err(unavailable)?;
    let (mut page, mut bytes) = (AuditPage::default(), 0);
    for summary in &found {
        let size = shown_size(summary);
        if !page.entries.is_empty() && bytes + size > PAGE_BYTES {
            break;
        }
        bytes += size;
        page.entries.push(decode(summary)?);
    }
    if page.entries.len() < found.len() || more.is_some() {
        page.next = page.entries.last().map(|entry| entry.id.clone());
    }
    Ok(page)
}

/// Where the entry `id` sits in the listing (a page's `after`).
fn position(index: &Index, id: &str) -> Result<String, Error> {
    let (found, _) = index.page(Some(&id_tag(id)), None, 1, |_, _| true).map_err(unavailable)?;
    let entry = found.first().ok_or_else(|| Error::NotFound {
        field: "after".into(),
        value: id.to_owned(),
        reason: "no audit entry has that id; pass the previous page's next".into(),
    })?;
    Ok(key(&decode(entry)?))
}

fn decode(bytes: &[u8]) -> Result<AuditEntry, Error> {
    Encoding::MessagePack
        .decode(bytes)
        .map_err(|e| unavailable(format!("the listing index holds an unreadable audit entry: {e}")))
}

fn unavailable(reason: impl ToString) -> Error {
    Error::Unavailable { reason: reason.to_string() }
}

/// Whether `entry` passes every filter `query` sets.
fn matches(entry: &AuditEntry, query: &AuditQuery) -> bool {
    (query.opinions.is_empty() || query.opinions.contains(&entry.opinion))
        && query.min_critical.is_none_or(|min| entry.findings.critical >= min)
        && query.min_major.is_none_or(|min| entry.findings.major >= min)
        && query.agent_id.as_ref().is_none_or(|agent| entry.agent_id.as_ref() == Some(agent))
        && query.execution_id.as_ref().is_none_or(|execution| entry.execution_id.as_ref() == Some(execution))
        && query.from.is_none_or(|from| entry.created_at >= from)
        && query.to.is_none_or(|to| entry.created_at < to)
}

/// At most how many bytes an entry takes in a page, in either encoding, from its
/// MessagePack encoding: JSON can be up to six times the size (`false` is 1 byte in
/// MessagePack, `false,` 6 in JSON).
fn shown_size(encoded: &[u8]) -> usize {
    6 * encoded.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_as_the_times_then_the_ids() {
        let entry = |at: i64, id: &str| {
            let mut entry: AuditEntry = serde_json::from_value(serde_json::json!({
                "id": id, "createdAt": 0, "opinion": "unqualified",
                "findings": {"critical": 0, "major": 0, "minor": 0}
            }))
            .unwrap();
            entry.created_at = Timestamp(at);
            key(&entry)
        };
        let keys = [entry(i64::MIN, "a"), entry(-5, "b"), entry(0, "a"), entry(0, "b"), entry(9, "a"), entry(10, "a")];
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, keys);
        assert!(time_key(Timestamp(9)) > keys[3] && time_key(Timestamp(9)) < keys[4]);
    }
}

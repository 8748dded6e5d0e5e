//! The quality service's read model: the rule catalog by name and the audit entries by
//! time, folded from the log (`osp.v1.evt.rule.*` and `osp.v1.evt.audit.*`).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use osp_eventlog::Head;
use osp_eventlog::Recorded;
use osp_protocol::quality::queries::{
    AuditPage, AuditQuery, AuditView, Digest, RulePage, RuleView, RulesQuery, DEFAULT_LIMIT, MAX_LIMIT,
};
use osp_protocol::quality::{AuditEntry, QualityEvent, Rule, AUDIT_KIND, RULE_KIND};
use osp_protocol::{AggregateRef, Encoding, Error, Timestamp, MAX_MESSAGE_BYTES};
use osp_runtime::{Folded, Holds, Snapshot, View};

use crate::aggregate::{Audit, OpenAudit, RuleState};

/// At most this many bytes of entries go in one page (a reply must fit one message;
/// JSON may take up to six times the MessagePack size, see [`shown_size`]).
const PAGE_BYTES: usize = MAX_MESSAGE_BYTES * 3 / 4;

/// The catalog and the audit entries, as this instance has applied the log.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct QualityView {
    /// Every rule seen, present or removed (its head is needed to append).
    rule_states: HashMap<AggregateRef, Folded<RuleState>>,
    /// Every audit seen, open or recorded.
    audit_states: HashMap<AggregateRef, Folded<Audit>>,
    /// The rules in the catalog, by name.
    catalog: BTreeMap<String, AggregateRef>,
    /// The audit entries, oldest first (`createdAt`, then id), with the size a page
    /// gives each.
    audits: BTreeMap<(Timestamp, String), (AggregateRef, usize)>,
    /// The sequence of the last event applied.
    last_seq: u64,
}

impl View for QualityView {
    type Event = QualityEvent;

    fn apply(&mut self, event: &Recorded<QualityEvent>) {
        self.last_seq = self.last_seq.max(event.seq);
        let aggregate = &event.envelope.aggregate;
        match aggregate.kind.as_str() {
            RULE_KIND => {
                let folded = self.rule_states.entry(aggregate.clone()).or_default();
                folded.apply(event);
                match &folded.state.rule {
                    Some(rule) => self.catalog.insert(rule.name.clone(), aggregate.clone()),
                    None => self.catalog.remove(aggregate.id.as_str()),
                };
            }
            AUDIT_KIND => {
                let folded = self.audit_states.entry(aggregate.clone()).or_default();
                folded.apply(event);
                if let Audit::Recorded(audit) = &folded.state {
                    let key = (audit.entry.created_at, audit.entry.id.clone());
                    self.audits.insert(key, (aggregate.clone(), shown_size(&audit.entry)));
                }
            }
            other => {
                tracing::error!(kind = other, seq = event.seq, "an event of a kind the quality view does not read")
            }
        }
    }
}

/// Saved whole: every aggregate's folded state and the indexes over them.
impl Snapshot for QualityView {
    const NAME: &'static str = "quality-records";
    const SHAPE: u32 = 2;
}

impl Holds<RuleState> for QualityView {
    fn folded(&self, aggregate: &AggregateRef) -> Option<&Folded<RuleState>> {
        self.rule_states.get(aggregate)
    }
}

impl Holds<Audit> for QualityView {
    fn folded(&self, aggregate: &AggregateRef) -> Option<&Folded<Audit>> {
        self.audit_states.get(aggregate)
    }
}

/// How many items a page may hold: `limit`, 1 to [`MAX_LIMIT`] ([`DEFAULT_LIMIT`] when
/// absent).
pub fn page_limit(limit: Option<u32>) -> Result<usize, Error> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n as usize),
        n => Err(Error::Invalid { field: "limit".into(), reason: format!("must be 1 to {MAX_LIMIT}, not {n}") }),
    }
}

impl QualityView {
    /// The rule `name`, while in the catalog.
    pub fn rule(&self, name: &str) -> Option<RuleView> {
        let folded = self.rule_states.get(self.catalog.get(name)?)?;
        rule_view(&folded.state)
    }

    /// The definitions of the rules `names`, in that order, or the names the catalog
    /// does not hold.
    pub fn definitions<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<Vec<Rule>, Vec<String>> {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            match self.catalog.get(name).and_then(|aggregate| self.rule_states.get(aggregate)?.state.rule.as_ref()) {
                Some(rule) => found.push(rule.clone()),
                None => missing.push(name.to_owned()),
            }
        }
        match missing.is_empty() {
            true => Ok(found),
            false => Err(missing),
        }
    }

    /// The names in the catalog, in order.
    pub fn rule_names(&self) -> Vec<&str> {
        self.catalog.keys().map(String::as_str).collect()
    }

    /// A page of the catalog, by name.
    pub fn rules(&self, query: &RulesQuery) -> Result<RulePage, Error> {
        let limit = page_limit(query.limit)?;
        let from = query.after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut page = RulePage::default();
        for (name, aggregate) in self.catalog.range::<String, _>((from, Bound::Unbounded)) {
            if page.rules.len() == limit {
                page.next = page.rules.last().map(|view| view.rule.name.clone());
                break;
            }
            if let Some(view) = self.rule_states.get(aggregate).and_then(|folded| rule_view(&folded.state)) {
                page.rules.push(view);
            } else {
                tracing::error!(rule = %name, "a rule listed in the catalog has no definition; skipped");
            }
        }
        Ok(page)
    }

    /// The audit entry `id`, with the rules it was checked against.
    pub fn audit(&self, id: &str) -> Option<AuditView> {
        let aggregate = AggregateRef::new(AUDIT_KIND, id).ok()?;
        let audit = self.audit_states.get(&aggregate)?.state.recorded()?;
        Some(AuditView { entry: audit.entry.clone(), rules: audit.rules.clone() })
    }

    /// Whether a check under the audit id `aggregate` was made (recorded, or open).
    pub fn has_audit(&self, aggregate: &AggregateRef) -> bool {
        self.audit_states.get(aggregate).is_some_and(|folded| !matches!(folded.state, Audit::Empty))
    }

    /// The check under audit id `aggregate`, while it waits for agents.
    pub fn open_audit(&self, aggregate: &AggregateRef) -> Option<&OpenAudit> {
        match &self.audit_states.get(aggregate)?.state {
            Audit::Open(open) => Some(open),
            _ => None,
        }
    }

    /// The entries matching every filter of `query`, oldest first, a page at a time.
    pub fn audits(&self, query: &AuditQuery) -> Result<AuditPage, Error> {
        let limit = page_limit(query.limit)?;
        let from = match &query.after {
            None => Bound::Unbounded,
            Some(after) => Bound::Excluded(self.audit_key(after)?),
        };
        let (mut page, mut bytes) = (AuditPage::default(), 0);
        for ((_, id), (aggregate, size)) in self.audits.range((from, Bound::Unbounded)) {
            let Some(audit) = self.audit_states.get(aggregate).and_then(|folded| folded.state.recorded()) else {
                continue;
            };
            if !matches(&audit.entry, query) {
                continue;
            }
            if page.entries.len() == limit || (!page.entries.is_empty() && bytes + size > PAGE_BYTES) {
                page.next = page.entries.last().map(|entry| entry.id.clone());
                break;
            }
            bytes += size;
            page.entries.push(audit.entry.clone());
            debug_assert_eq!(&audit.entry.id, id);
        }
        Ok(page)
    }

    /// Where the entry `id` sits in time order (a page's `after`).
    fn audit_key(&self, id: &str) -> Result<(Timestamp, String), Error> {
        let not_found = || Error::NotFound {
            field: "after".into(),
            value: id.to_owned(),
            reason: "no audit entry has that id; pass the previous page's next".into(),
        };
        let aggregate = AggregateRef::new(AUDIT_KIND, id).map_err(|_| not_found())?;
        let audit =
            self.audit_states.get(&aggregate).and_then(|folded| folded.state.recorded()).ok_or_else(not_found)?;
        Ok((audit.entry.created_at, audit.entry.id.clone()))
    }

    /// A fingerprint of everything this view holds, the same on every instance that has
    /// applied the same log: every aggregate's head and state, in a fixed order.
    pub fn digest(&self) -> Result<Digest, Error> {
        let mut aggregates: Vec<(&AggregateRef, &Head, State)> = self
            .rule_states
            .iter()
            .map(|(aggregate, folded)| (aggregate, &folded.head, State::Rule(&folded.state)))
            .chain(
                self.audit_states
                    .iter()
                    .map(|(aggregate, folded)| (aggregate, &folded.head, State::Audit(&folded.state))),
            )
            .collect();
        aggregates.sort_by(|a, b| a.0.cmp(b.0));
        let mut hasher = blake3::Hasher::new();
        for (aggregate, head, state) in aggregates {
            let head = (aggregate.to_string(), head.seq, head.version, head.hash.map(|h| h.0));
            hasher.update(&Encoding::MessagePack.encode(&head)?);
            match state {
                State::Rule(state) => {
                    let state = (&state.rule, state.revision, state.updated_at.millis());
                    hasher.update(&Encoding::MessagePack.encode(&state)?);
                }
                State::Audit(Audit::Empty) => {}
                State::Audit(Audit::Recorded(audit)) => {
                    hasher.update(&Encoding::MessagePack.encode(&(&audit.entry, &audit.rules))?);
                }
                State::Audit(Audit::Open(open)) => {
                    let state = (&open.opened, open.opened_at.millis(), &open.ended);
                    hasher.update(&Encoding::MessagePack.encode(&state)?);
                }
            }
        }
        Ok(Digest {
            digest: hasher.finalize().to_hex().to_string(),
            rules: self.catalog.len() as u64,
            audits: self.audits.len() as u64,
            applied: self.last_seq,
        })
    }
}

/// One aggregate's state, of either kind, as the digest reads it.
enum State<'a> {
    Rule(&'a RuleState),
    Audit(&'a Audit),
}

/// The rule's view, while it is in the catalog.
pub fn rule_view(state: &RuleState) -> Option<RuleView> {
    let rule = state.rule.as_ref()?;
    Some(RuleView { rule: rule.clone(), revision: state.revision, updated_at: state.updated_at })
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

/// At most how many bytes an entry takes in a page, in either encoding: JSON can be up to
/// six times the MessagePack size (`false` is 1 byte in MessagePack, `false,` 6 in JSON).
fn shown_size(entry: &AuditEntry) -> usize {
    6 * Encoding::MessagePack.encode(entry).map_or(MAX_MESSAGE_BYTES, |bytes| bytes.len())
}

//! The quality service's read model, folded from the log (`osp.v1.evt.rule.*` and
//! `osp.v1.evt.audit.*`): the rule catalog, every rule always in memory (a catalog is
//! small), and the audits in hand.
//!
//! An audit leaves memory once it has been recorded for the grace period
//! ([`osp_runtime::resident`]): `audit` recalls it from the log, `audits` lists from the
//! listing index ([`crate::listing`]), and the digest counts it as before.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use osp_eventlog::{Head, Recorded};
use osp_protocol::quality::queries::{AuditView, Digest, RulePage, RuleView, RulesQuery, DEFAULT_LIMIT, MAX_LIMIT};
use osp_protocol::quality::{QualityEvent, Rule, AUDIT_KIND, RULE_KIND};
use osp_protocol::{AggregateRef, Encoding, Error, Timestamp};
use osp_runtime::resident::fingerprint;
use osp_runtime::{Folded, Holds, Indexed, Keeps, Record, Resident, Snapshot, View};
use serde::Serialize;

use crate::aggregate::{Audit, OpenAudit, RuleState};
use crate::listing;

/// The catalog and the audits in hand, as this instance has applied the log.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct QualityView {
    /// Every rule seen, present or removed (its head is needed to append).
    rule_states: HashMap<AggregateRef, Folded<RuleState>>,
    /// The rules in the catalog, by name.
    catalog: BTreeMap<String, AggregateRef>,
    /// Every open audit, and the recorded ones until they leave memory.
    audits: Resident<AuditRecord>,
    /// How many audit entries are recorded, in memory or not.
    recorded: u64,
    /// The sequence of the last event applied.
    last_seq: u64,
}

/// One audit: its state as decisions take it.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    folded: Folded<Audit>,
}

impl AuditRecord {
    /// What `audit` shows of it once recorded; while it is open, what it waits for.
    pub fn view(&self) -> Result<AuditView, Option<String>> {
        match &self.folded.state {
            Audit::Recorded(audit) => Ok(AuditView { entry: audit.entry.clone(), rules: audit.rules.clone() }),
            Audit::Open(open) => {
                let waiting: Vec<&str> = open
                    .opened
                    .parts
                    .iter()
                    .filter(|part| !open.ended(&part.part))
                    .map(|part| part.part.as_str())
                    .collect();
                Err(Some(format!(
                    "the check is open, waiting for {} (until {})",
                    waiting.join(", "),
                    open.opened.deadline
                )))
            }
            Audit::Empty => Err(None),
        }
    }

    /// Whether a check was made under its id (recorded, or open).
    pub fn exists(&self) -> bool {
        !matches!(self.folded.state, Audit::Empty)
    }

    fn recorded(&self) -> bool {
        matches!(self.folded.state, Audit::Recorded(_))
    }
}

impl Record for AuditRecord {
    type Event = QualityEvent;

    fn apply(&mut self, event: &Recorded<QualityEvent>) {
        self.folded.apply(event);
    }

    /// Nothing happens to an audit once its entry is recorded.
    fn finished(&self) -> bool {
        self.recorded()
    }

    fn fingerprint(&self) -> Option<[u8; 32]> {
        let head = &self.folded.head;
        Some(match &self.folded.state {
            Audit::Empty => fingerprint_of(head, &()),
            Audit::Recorded(audit) => fingerprint_of(head, &(&audit.entry, &audit.rules)),
            Audit::Open(open) => fingerprint_of(head, &(&open.opened, open.opened_at.millis(), &open.ended)),
        })
    }
}

/// What one aggregate adds to the digest: a hash of its head (so two instances agree on
/// where its history ends) and of its state.
fn fingerprint_of(head: &Head, state: &impl Serialize) -> [u8; 32] {
    let head = (head.seq, head.version, head.hash.map(|hash| hash.0));
    // Encoding these cannot fail (strings, numbers, JSON values); should it ever, the
    // aggregate still counts, with less of it hashed.
    let mut bytes = Encoding::MessagePack.encode(&head).unwrap_or_default();
    bytes.extend(Encoding::MessagePack.encode(state).unwrap_or_default());
    fingerprint(&bytes)
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
                let was_recorded = self.audits.get(aggregate.id.as_str()).is_some_and(AuditRecord::recorded);
                if self.audits.apply(event).recorded() && !was_recorded {
                    self.recorded += 1;
                }
            }
            other => {
                tracing::error!(kind = other, seq = event.seq, "an event of a kind the quality view does not read")
            }
        }
    }

    /// Only audits leave memory; rules never do.
    fn missing(&self, event: &Recorded<QualityEvent>) -> bool {
        event.envelope.aggregate.kind.as_str() == AUDIT_KIND && self.audits.missing(event)
    }

    fn restore(&mut self, aggregate: &AggregateRef, earlier: &[Recorded<QualityEvent>]) {
        if aggregate.kind.as_str() == AUDIT_KIND {
            self.audits.restore(aggregate.id.as_str(), earlier);
        }
    }

    fn evict(&mut self, finished_before: Timestamp) -> usize {
        self.audits.evict(finished_before)
    }

    /// A recorded audit's entry, as `audits` lists it.
    fn indexed(&self, aggregate: &AggregateRef) -> Option<(String, Indexed)> {
        let audit = self.audit_record(aggregate)?.folded.state.recorded()?;
        listing::indexed(&audit.entry)
    }
}

/// Saved: the rules, the audits in hand and the digest of those that left memory, how many
/// entries are recorded, and how far it has applied. Shape 4: the digest of audits out of
/// memory kept per partition (shape 3 as one; shape 2 held every audit, and the listing
/// by time).
impl Snapshot for QualityView {
    const NAME: &'static str = "quality-records";
    const SHAPE: u32 = 4;
}

impl Holds<RuleState> for QualityView {
    fn folded(&self, aggregate: &AggregateRef) -> Option<&Folded<RuleState>> {
        self.rule_states.get(aggregate)
    }
}

impl Holds<Audit> for QualityView {
    fn folded(&self, aggregate: &AggregateRef) -> Option<&Folded<Audit>> {
        self.audit_record(aggregate).map(|record| &record.folded)
    }
}

impl Keeps<AuditRecord> for QualityView {
    fn resident(&self) -> &Resident<AuditRecord> {
        &self.audits
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

    /// The audit entry `id`, with the rules it was checked against, while in memory (one
    /// that left is recalled from the log by the query, [`osp_runtime::Projection::recall`]).
    pub fn audit(&self, id: &str) -> Option<AuditView> {
        self.audits.get(id)?.view().ok()
    }

    /// Whether a check under the audit id `aggregate` was made (recorded, or open), as far
    /// as the audits in memory tell.
    pub fn has_audit(&self, aggregate: &AggregateRef) -> bool {
        self.audit_record(aggregate).is_some_and(AuditRecord::exists)
    }

    /// The check under audit id `aggregate`, while it waits for agents (an open check
    /// never leaves memory).
    pub fn open_audit(&self, aggregate: &AggregateRef) -> Option<&OpenAudit> {
        match &self.audit_record(aggregate)?.folded.state {
            Audit::Open(open) => Some(open),
            _ => None,
        }
    }

    /// How many audits are in memory: the open ones, and those recorded within the grace
    /// period.
    pub fn audits_in_memory(&self) -> usize {
        self.audits.len()
    }

    fn audit_record(&self, aggregate: &AggregateRef) -> Option<&AuditRecord> {
        (aggregate.kind.as_str() == AUDIT_KIND).then(|| self.audits.get(aggregate.id.as_str()))?
    }

    /// A hash of every rule and every audit (those in memory and those that left it): the
    /// XOR of one fingerprint each, equal on instances that applied the same log.
    pub fn digest(&self) -> Result<Digest, Error> {
        let mut all = self.audits.digest();
        for folded in self.rule_states.values() {
            let state = &folded.state;
            all.add(fingerprint_of(&folded.head, &(&state.rule, state.revision, state.updated_at.millis())));
        }
        Ok(Digest {
            digest: all.hex(),
            rules: self.catalog.len() as u64,
            audits: self.recorded,
            applied: self.last_seq,
        })
    }
}

/// The rule's view, while it is in the catalog.
pub fn rule_view(state: &RuleState) -> Option<RuleView> {
    let rule = state.rule.as_ref()?;
    Some(RuleView { rule: rule.clone(), revision: state.revision, updated_at: state.updated_at })
}

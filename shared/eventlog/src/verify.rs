//! Verifying the log: every event decodes, sits on its own aggregate's subject, and links
//! to the previous event of its aggregate by hash, with no gap in versions.
//!
//! [`ChainVerifier`] is the pure check, fed stored messages in log order; it keeps only
//! the head of each aggregate's chain. [`EventLog::verify`] feeds it the whole log. The
//! first bad link of an aggregate is reported and the rest of that aggregate is skipped:
//! after a break, every later link is suspect and repeating that helps nobody.

use std::collections::HashMap;
use std::fmt;

use osp_protocol::{AggregateRef, AnyPayload, Envelope, EventHash};

use crate::{EventLog, LogItem, Result, Start, StoredMessage};

/// Something wrong at one place in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Stream sequence of the offending message.
    pub seq: u64,
    /// The subject it is stored on (`osp.v1.evt.<kind>.<id>`, unless that is the problem).
    pub subject: String,
    /// What is wrong.
    pub kind: ProblemKind,
}

/// The kinds of problems `verify` finds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// The message is not a decodable event.
    Malformed(String),
    /// The subject is not `osp.v1.evt.<kind>.<id>`.
    NotAnAggregateSubject(String),
    /// The event names another aggregate than the subject it is stored under.
    WrongAggregate {
        /// The aggregate the event claims.
        claimed: String,
    },
    /// `prev_hash` is not the hash of the aggregate's previous event.
    BrokenLink {
        /// The hash of the previous stored event (none for a first event).
        expected: Option<EventHash>,
        /// The event's `prev_hash`.
        found: Option<EventHash>,
    },
    /// `version` does not follow the previous event's.
    VersionGap {
        /// The version that should come next.
        expected: u64,
        /// The event's version.
        found: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |h: &Option<EventHash>| h.map_or_else(|| "none".to_owned(), |h| h.short());
        write!(f, "seq {} on {}: ", self.seq, self.subject)?;
        match &self.kind {
            ProblemKind::Malformed(reason) => write!(f, "malformed event: {reason}"),
            ProblemKind::NotAnAggregateSubject(reason) => write!(f, "not an aggregate subject: {reason}"),
            ProblemKind::WrongAggregate { claimed } => write!(f, "event claims to belong to {claimed}"),
            ProblemKind::BrokenLink { expected, found } => write!(
                f,
                "broken hash link: prev_hash is {}, the previous event hashes to {}",
                short(found),
                short(expected)
            ),
            ProblemKind::VersionGap { expected, found } => {
                write!(f, "version gap: expected version {expected}, found {found}")
            }
        }
    }
}

/// The result of verifying (part of) the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Messages checked.
    pub events: u64,
    /// Distinct subjects seen (aggregates, and any stray subject under the prefix).
    pub aggregates: usize,
    /// Highest stream sequence covered.
    pub up_to: u64,
    /// The first problem of each aggregate that has one, in log order.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Clone, Copy)]
enum Chain {
    Intact { version: u64, hash: EventHash },
    Broken,
}

/// Checks hash chains incrementally, one stored message at a time.
#[derive(Default)]
pub struct ChainVerifier {
    chains: HashMap<String, Chain>,
    report: VerifyReport,
}

impl ChainVerifier {
    /// A verifier that has seen nothing.
    pub fn new() -> ChainVerifier {
        ChainVerifier::default()
    }

    /// Checks the next stored message (messages must come in log order).
    pub fn observe(&mut self, message: &StoredMessage) {
        self.report.events += 1;
        self.report.up_to = self.report.up_to.max(message.seq);
        let previous = self.chains.get(&message.subject).copied();
        if matches!(previous, Some(Chain::Broken)) {
            return;
        }
        let next = match check(message, previous) {
            Ok(version) => Chain::Intact { version, hash: EventHash::of(&message.payload) },
            Err(kind) => {
                self.report.problems.push(Problem { seq: message.seq, subject: message.subject.clone(), kind });
                Chain::Broken
            }
        };
        self.chains.insert(message.subject.clone(), next);
    }

    /// The report so far.
    pub fn finish(mut self) -> VerifyReport {
        self.report.aggregates = self.chains.len();
        self.report
    }
}

/// Checks one message against its aggregate's chain; returns its version if it is fine.
fn check(message: &StoredMessage, previous: Option<Chain>) -> Result<u64, ProblemKind> {
    let aggregate =
        AggregateRef::from_subject(&message.subject).map_err(|e| ProblemKind::NotAnAggregateSubject(e.to_string()))?;
    let envelope =
        Envelope::<AnyPayload>::decode(&message.payload).map_err(|e| ProblemKind::Malformed(e.to_string()))?;
    if envelope.aggregate != aggregate {
        return Err(ProblemKind::WrongAggregate { claimed: envelope.aggregate.to_string() });
    }
    let (expected_hash, expected_version) = match previous {
        Some(Chain::Intact { version, hash }) => (Some(hash), version + 1),
        _ => (None, 1),
    };
    if envelope.prev_hash != expected_hash {
        return Err(ProblemKind::BrokenLink { expected: expected_hash, found: envelope.prev_hash });
    }
    if envelope.version != expected_version {
        return Err(ProblemKind::VersionGap { expected: expected_version, found: envelope.version });
    }
    Ok(envelope.version)
}

impl EventLog {
    /// Verifies every event matching `filter` stored up to now. `progress` is called
    /// after each message with (messages checked, messages still pending).
    pub async fn verify(&self, filter: &str, mut progress: impl FnMut(u64, u64)) -> Result<VerifyReport> {
        let mut follow = self.follow::<StoredMessage>(filter, Start::All).await?;
        let mut verifier = ChainVerifier::new();
        while let Some(item) = follow.next().await {
            match item? {
                LogItem::Event(message) => {
                    verifier.observe(&message);
                    progress(verifier.report.events, follow.pending());
                }
                // Stored messages are not decoded by the follower, so none is malformed
                // there; the verifier decodes and reports them itself.
                LogItem::Malformed(_) => {}
                LogItem::CaughtUp(_) => break,
            }
        }
        Ok(verifier.finish())
    }
}

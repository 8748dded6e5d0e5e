//! A memo of prepared rules, keyed by the rule's definition, so a check does not compile
//! its rules again: preparing the sample catalog takes about a hundred times as long as
//! evaluating it (JSON Schemas and patterns are compiled), see `osp bench quality`.
//!
//! It only caches [`prepare`], a pure function of the rule: a rule is found by the blake3
//! hash of its MessagePack, and a hit is used only when the definition it was prepared
//! from equals the rule asked for, so what [`prepared`] returns is what `prepare` would,
//! whatever the memo holds. Refusals are not kept (a catalog rule was checked when it was
//! added, so they are rare), and nothing depends on what was cached before: decisions
//! stay functions of their command.
//!
//! Bounded: it holds the [`CAPACITY`] rules used last, and a new one pushes out the one
//! unused the longest, so the rules checks keep using stay.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use lru::LruCache;
use osp_protocol::quality::Rule;
use osp_protocol::{Encoding, Error};

use super::{prepare, PreparedRule};

/// Most prepared rules the memo holds: room for four checks of the most rules a check can
/// name ([`osp_protocol::quality::MAX_RULES_PER_CHECK`]).
pub const CAPACITY: usize = 4 * osp_protocol::quality::MAX_RULES_PER_CHECK;

/// The blake3 hash of a rule's MessagePack.
type Key = [u8; 32];

/// `rule` prepared, from the process's memo if it was prepared before.
pub fn prepared(rule: &Rule) -> Result<Arc<PreparedRule>, Error> {
    static MEMO: OnceLock<Mutex<Memo>> = OnceLock::new();
    let memo = MEMO.get_or_init(|| Mutex::new(Memo::new(CAPACITY)));
    let Some(key) = key_of(rule) else {
        return prepare(rule).map(Arc::new);
    };
    if let Some(hit) = lock(memo).get(&key, rule) {
        return Ok(hit);
    }
    // Compiled without the lock: checks of other rules go on meanwhile.
    let prepared = Arc::new(prepare(rule)?);
    lock(memo).insert(key, prepared.clone());
    Ok(prepared)
}

/// The memo's key of `rule`; `None` should it not encode (it is then not memoised).
fn key_of(rule: &Rule) -> Option<Key> {
    let bytes = Encoding::MessagePack.encode(rule).ok()?;
    Some(*blake3::hash(&bytes).as_bytes())
}

/// The maps hold no invariant a panic elsewhere could break.
fn lock(memo: &Mutex<Memo>) -> std::sync::MutexGuard<'_, Memo> {
    memo.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Prepared rules, the least recently used going first.
#[derive(Debug)]
struct Memo(LruCache<Key, Arc<PreparedRule>>);

impl Memo {
    fn new(capacity: usize) -> Memo {
        Memo(LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)))
    }

    /// The rule prepared under `key`, if it was prepared from `rule` itself.
    fn get(&mut self, key: &Key, rule: &Rule) -> Option<Arc<PreparedRule>> {
        self.0.get(key).filter(|found| found.rule() == rule).cloned()
    }

    fn insert(&mut self, key: Key, prepared: Arc<PreparedRule>) {
        self.0.put(key, prepared);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use osp_protocol::quality::{RuleKind, Severity};

    use super::*;

    fn rule(name: &str, pattern: &str) -> Rule {
        Rule {
            name: name.into(),
            description: String::new(),
            severity: Severity::Error,
            critical: false,
            kind: RuleKind::Regex { pattern: pattern.into(), must_match: true, field: None },
        }
    }

    fn get(memo: &mut Memo, rule: &Rule) -> Option<Arc<PreparedRule>> {
        memo.get(&key_of(rule).unwrap(), rule)
    }

    fn put(memo: &mut Memo, rule: &Rule) -> Arc<PreparedRule> {
        let prepared = Arc::new(prepare(rule).unwrap());
        memo.insert(key_of(rule).unwrap(), prepared.clone());
        prepared
    }

    #[test]
    fn a_rule_is_found_by_its_whole_definition() {
        let mut memo = Memo::new(8);
        let first = put(&mut memo, &rule("r", "a+"));
        assert!(Arc::ptr_eq(&get(&mut memo, &rule("r", "a+")).unwrap(), &first));
        // Same name, another definition: another rule.
        assert!(get(&mut memo, &rule("r", "b+")).is_none());
        let mut critical = rule("r", "a+");
        critical.critical = true;
        assert!(get(&mut memo, &critical).is_none());
    }

    #[test]
    fn a_hit_is_used_only_for_the_definition_it_was_prepared_from() {
        let mut memo = Memo::new(8);
        let (a, b) = (rule("a", "a+"), rule("b", "b+"));
        // A key (as if by a collision) holding another rule's preparation is a miss.
        memo.insert(key_of(&a).unwrap(), Arc::new(prepare(&b).unwrap()));
        assert!(get(&mut memo, &a).is_none());
    }

    #[test]
    fn the_memo_is_bounded_and_keeps_the_rules_in_use() {
        let mut memo = Memo::new(4);
        let kept = rule("kept", "k");
        put(&mut memo, &kept);
        for i in 0..50 {
            put(&mut memo, &rule(&format!("r{i}"), "x"));
            assert!(get(&mut memo, &kept).is_some(), "a rule used every time stays (at {i})");
            assert!(memo.len() <= 4, "{} rules held", memo.len());
        }
        assert!(get(&mut memo, &rule("r0", "x")).is_none(), "an unused rule goes");
    }

    #[test]
    fn prepared_is_what_prepare_gives_and_refusals_are_said() {
        let good = rule("good", "^[A-Z]");
        let first = prepared(&good).unwrap();
        assert!(Arc::ptr_eq(&first, &prepared(&good).unwrap()), "the second time is the memo's");
        assert_eq!(first.rule(), &good);
        let bad = rule("bad", "(unclosed");
        assert_eq!(prepared(&bad).unwrap_err(), prepare(&bad).unwrap_err());
    }
}

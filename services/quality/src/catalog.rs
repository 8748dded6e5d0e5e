//! The rule catalog's decisions: `add_rule`, `update_rule`, `remove_rule`. Pure.
//!
//! A rule is checked ([`crate::rules::prepare`]) before it enters the catalog, so a bad
//! pattern or schema is refused when added, naming the field, and never at a check.
//! Sending what the catalog already holds changes nothing (a resent command is harmless);
//! `add_rule` never replaces a different definition: that is `update_rule`'s job, so a
//! name taken by someone else's rule is not overwritten by mistake.

use osp_protocol::quality::{QualityEvent, Rule, RuleDefined, RuleRemoved};
use osp_protocol::Error;

use crate::rules;

/// `add_rule`: a new name (or a removed one) is added; the same definition again changes
/// nothing; another definition under a name in the catalog is a `conflict`.
pub fn add(current: Option<&Rule>, rule: &Rule) -> Result<Vec<QualityEvent>, Error> {
    rules::prepare(rule)?;
    match current {
        None => Ok(vec![QualityEvent::RuleAdded(RuleDefined { rule: rule.clone() })]),
        Some(current) if current == rule => Ok(vec![]),
        Some(_) => Err(Error::Conflict {
            field: "name".into(),
            value: rule.name.clone(),
            reason: "the catalog has another rule by that name; use update_rule to replace it".into(),
        }),
    }
}

/// `update_rule`: replaces a rule of the catalog; the same definition changes nothing; a
/// name not in the catalog is `not_found` (use add_rule).
pub fn update(current: Option<&Rule>, rule: &Rule) -> Result<Vec<QualityEvent>, Error> {
    rules::prepare(rule)?;
    match current {
        None => Err(Error::NotFound {
            field: "name".into(),
            value: rule.name.clone(),
            reason: "the catalog has no rule by that name; use add_rule to add it".into(),
        }),
        Some(current) if current == rule => Ok(vec![]),
        Some(_) => Ok(vec![QualityEvent::RuleUpdated(RuleDefined { rule: rule.clone() })]),
    }
}

/// `remove_rule`: removes a rule of the catalog; removing one that is not there is no
/// error (the outcome says it was not removed).
pub fn remove(current: Option<&Rule>) -> Vec<QualityEvent> {
    match current {
        Some(_) => vec![QualityEvent::RuleRemoved(RuleRemoved {})],
        None => vec![],
    }
}

#[cfg(test)]
mod tests {
    use osp_protocol::quality::{RuleKind, Severity};
    use osp_protocol::Token;
    use osp_runtime::testing::given;

    use super::*;
    use crate::aggregate::{RuleCommand, RuleState};

    fn rule(pattern: &str) -> Rule {
        Rule {
            name: "no-secrets".into(),
            description: "no key in the output".into(),
            severity: Severity::Error,
            critical: false,
            kind: RuleKind::Regex { pattern: pattern.into(), must_match: false, field: None },
        }
    }

    fn added(rule: Rule) -> QualityEvent {
        QualityEvent::RuleAdded(RuleDefined { rule })
    }

    fn removed() -> QualityEvent {
        QualityEvent::RuleRemoved(RuleRemoved {})
    }

    fn remove() -> RuleCommand {
        RuleCommand::Remove(Token::new("name", "no-secrets").unwrap())
    }

    #[test]
    fn add_adds_once_and_refuses_another_definition() {
        let v1 = rule("sk-[a-z0-9]+");
        given::<RuleState>([]).when(&RuleCommand::Add(v1.clone())).then(vec![added(v1.clone())]);
        given::<RuleState>([added(v1.clone())]).when(&RuleCommand::Add(v1.clone())).then(vec![]);
        let error = given::<RuleState>([added(v1.clone())])
            .when(&RuleCommand::Add(rule("AKIA[A-Z0-9]+")))
            .then_refused("use update_rule");
        assert_eq!((error.code(), error.field()), ("conflict", Some("name")));
    }

    #[test]
    fn update_replaces_an_existing_rule_only() {
        let (v1, v2) = (rule("a+"), rule("b+"));
        given::<RuleState>([added(v1.clone())])
            .when(&RuleCommand::Update(v2.clone()))
            .then(vec![QualityEvent::RuleUpdated(RuleDefined { rule: v2.clone() })]);
        given::<RuleState>([added(v1.clone())]).when(&RuleCommand::Update(v1.clone())).then(vec![]);
        let error = given::<RuleState>([]).when(&RuleCommand::Update(v2.clone())).then_refused("use add_rule");
        assert_eq!((error.code(), error.field()), ("not_found", Some("name")));
        given::<RuleState>([added(v1.clone()), removed()]).when(&RuleCommand::Update(v2)).then_refused("not found");
        let updated = QualityEvent::RuleUpdated(RuleDefined { rule: rule("c+") });
        let state = given::<RuleState>([added(v1), updated]).state().clone();
        assert_eq!((state.revision, state.rule), (2, Some(rule("c+"))));
    }

    #[test]
    fn remove_removes_what_is_there_and_a_removed_name_can_be_added_again() {
        given::<RuleState>([added(rule("a+"))]).when(&remove()).then(vec![removed()]);
        given::<RuleState>([]).when(&remove()).then(vec![]);
        given::<RuleState>([added(rule("a+")), removed()]).when(&remove()).then(vec![]);
        given::<RuleState>([added(rule("a+")), removed()])
            .when(&RuleCommand::Add(rule("b+")))
            .then(vec![added(rule("b+"))]);
        let state = given::<RuleState>([added(rule("a+")), removed()]).state().clone();
        assert_eq!((state.revision, state.rule), (0, None));
    }

    #[test]
    fn a_rule_that_cannot_be_evaluated_is_refused_naming_the_field() {
        let bad_pattern = rule("(unclosed");
        let error = given::<RuleState>([]).when(&RuleCommand::Add(bad_pattern.clone())).then_refused("pattern");
        assert_eq!(error.code(), "invalid");
        given::<RuleState>([added(rule("a+"))]).when(&RuleCommand::Update(bad_pattern)).then_refused("pattern");
        let bad_schema =
            Rule { kind: RuleKind::JsonSchema { schema: serde_json::json!({"type": 7}), field: None }, ..rule("a") };
        let error = given::<RuleState>([]).when(&RuleCommand::Add(bad_schema)).then_refused("schema");
        assert_eq!(error.code(), "invalid");
    }
}

//! `osp rules`: the quality service's catalog of rules — add, update, remove, list, get.
//!
//! A rule file is checked whole before anything is sent, so a mistake is named by its
//! line and column (it does not parse) or by the rule and field it is in (it is no rule),
//! with or without a server.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use osp_client::Quality;
use osp_protocol::quality::queries::RuleView;
use osp_protocol::quality::Rule;
use osp_protocol::Token;
use serde_json::{json, Value};

use super::{read_text, severity_word, usage_error};
use crate::connect::{self, service_error};
use crate::entries::truncate;
use crate::output::table;
use crate::output::Lines;

/// Longest description shown in a table, in characters; `get` shows it whole.
const DESCRIPTION_WIDTH: usize = 60;

/// The rule format, in brief, for `osp rules add --help`.
const RULE_HELP: &str = "\
A rule file is JSON, or YAML when FILE ends in .yaml or .yml (`-`: stdin, JSON or YAML): one rule, or a
list of rules, each an object with camelCase fields:

  {\"name\": N, \"description\"?: TEXT, \"severity\": \"error\" | \"warning\" | \"info\", \"critical\"?: true,
   \"kind\": K, \"params\": {...}}

Kinds and their params (FIELD is a JSON pointer into the output, e.g. /summary; the whole output without):
  json-schema     {schema, field?}
  required-fields {fields: [POINTER, ...]}
  regex           {pattern, mustMatch?: true, field?}       (linear time: no look-around, no back-references)
  length          {min?, max?, field?}                       (characters, items or keys)
  range           {min?, max?, field?}
  contains        {value, mustContain?: true, ignoreCase?: false, field?}
  allowed-values  {values: [...], field?}
  custom          {capability, params?}                      (an agent of that capability checks)

A failed `error` rule is a major finding (critical with \"critical\": true), a failed `warning` a minor one,
a failed `info` rule no finding. The file is checked before anything is sent: a mistake exits with
status 2, naming its line and column or its rule and field. The service checks the rest (a JSON Schema
or a pattern that does not compile) and its refusal exits with status 1.";

/// Options of `osp rules`.
#[derive(Args)]
pub struct RulesArgs {
    /// Print JSON: one object per rule per line for list, one object otherwise.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: RulesCommand,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Add the rules of FILE to the catalog, in order.
    ///
    /// Adding the same rule again changes nothing; another rule under a name in use is
    /// refused (use `osp rules update`). Stops at the first rule refused (exit status 1):
    /// the ones before it are added.
    #[command(after_help = RULE_HELP)]
    Add {
        /// The rule, or a list of rules: JSON, or YAML for .yaml/.yml; `-` for stdin.
        #[arg(value_name = "FILE|-")]
        file: String,
    },
    /// Replace rules of the catalog by the ones in FILE (same names), in order.
    ///
    /// The old definitions stay in the log, and in the audit entries checked against them.
    /// Stops at the first rule refused (exit status 1).
    #[command(after_help = RULE_HELP)]
    Update {
        /// The rule, or a list of rules: JSON, or YAML for .yaml/.yml; `-` for stdin.
        #[arg(value_name = "FILE|-")]
        file: String,
    },
    /// Remove a rule from the catalog.
    ///
    /// Exits with status 1 when there is none of that name.
    Rm {
        /// The rule's name.
        name: String,
    },
    /// Every rule of the catalog, by name.
    List,
    /// One rule, whole.
    ///
    /// Exits with status 1 when there is none of that name.
    Get {
        /// The rule's name.
        name: String,
    },
}

/// Runs an `osp rules` command. A rule file is read and checked before connecting.
pub async fn run(args: RulesArgs, url: &str) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let quality = || async move { Ok::<_, anyhow::Error>(connect::osp_client(url).await?.quality()) };
    match args.command {
        RulesCommand::Add { file } => return define_from(&file, Definition::Add, url, json).await,
        RulesCommand::Update { file } => return define_from(&file, Definition::Update, url, json).await,
        RulesCommand::Rm { name } => {
            Token::new("name", name.as_str())?;
            if !quality().await?.remove_rule(&name).await.map_err(service_error)? {
                return Err(not_found(&name));
            }
            let line =
                if json { json!({"name": name, "removed": true}).to_string() } else { format!("removed rule {name}") };
            Lines::new(json, true).line(&line)?;
        }
        RulesCommand::List => {
            let rules = quality().await?.all_rules().await.map_err(service_error)?;
            print_all(&rules, json)?;
        }
        RulesCommand::Get { name } => {
            let rule = quality().await?.rule(&name).await.map_err(service_error)?.ok_or_else(|| not_found(&name))?;
            print_one(&rule, json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn not_found(name: &str) -> anyhow::Error {
    anyhow!("no rule named {name:?} (osp rules list shows the catalog)")
}

/// Whether rules are added or replaced.
#[derive(Clone, Copy)]
enum Definition {
    Add,
    Update,
}

/// Reads the rules of `file` (a mistake in it is a usage error), then adds or replaces
/// them.
async fn define_from(file: &str, definition: Definition, url: &str, json: bool) -> anyhow::Result<ExitCode> {
    let rules = match read_rules(file) {
        Ok(rules) => rules,
        Err(error) => return Ok(usage_error(&error)),
    };
    define(&connect::osp_client(url).await?.quality(), &rules, definition, json).await?;
    Ok(ExitCode::SUCCESS)
}

/// Sends each rule in turn, and says what became of it; stops at the first refusal.
async fn define(quality: &Quality, rules: &[Rule], definition: Definition, json: bool) -> anyhow::Result<()> {
    let mut lines = Lines::new(json, true);
    for rule in rules {
        let answer = match definition {
            Definition::Add => quality.add_rule(rule).await,
            Definition::Update => quality.update_rule(rule).await,
        };
        let view = answer.map_err(|error| service_error(error).context(format!("rule {:?}", rule.name)))?.result;
        let line = if json {
            view_json(&view).to_string()
        } else {
            let verb = match definition {
                Definition::Add => "added",
                Definition::Update => "updated",
            };
            format!("{verb} rule {} (revision {})", view.rule.name, view.revision)
        };
        lines.line(&line)?;
    }
    Ok(())
}

// ----- reading a rule file -----

/// The format a rule file is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Yaml,
}

impl Format {
    /// By the file's name; stdin (or a name that does not say) is JSON when it looks
    /// like JSON, else YAML.
    fn of(arg: &str, text: &str) -> Format {
        let extension = Path::new(arg).extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("yaml" | "yml") => Format::Yaml,
            Some("json") => Format::Json,
            _ if text.trim_start().starts_with(['{', '[']) => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// The rules in the file `arg` (`-`: stdin), each checked as far as it can be without
/// the service.
fn read_rules(arg: &str) -> anyhow::Result<Vec<Rule>> {
    let (text, source) = read_text(arg)?;
    let parsed = match Format::of(arg, &text) {
        Format::Json => serde_json::from_str::<Value>(&text).map_err(|error| error.to_string()),
        Format::Yaml => serde_yaml_ng::from_str::<Value>(&text).map_err(|error| error.to_string()),
    };
    let value = parsed.map_err(|error| anyhow!("{source}: does not parse: {error}"))?;
    let items = match value {
        Value::Array(items) if items.is_empty() => bail!("{source}: the list holds no rule"),
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        other => bail!(
            "{source}: expected a rule (an object) or a list of rules, found {}",
            osp_protocol::json::kind_of(&other)
        ),
    };
    let several = items.len() > 1;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let which = match (several, item.get("name").and_then(Value::as_str)) {
                (true, Some(name)) => format!(": rule {} ({name:?})", i + 1),
                (true, None) => format!(": rule {}", i + 1),
                (false, _) => String::new(),
            };
            rule_of(item).map_err(|error| anyhow!("{source}{which}: {error}"))
        })
        .collect()
}

/// One rule from its JSON form, checked as the service reads it: errors name the field.
fn rule_of(value: Value) -> Result<Rule, String> {
    Rule::from_json(&value).map_err(|error| error.to_string())
}

// ----- printing rules -----

/// A rule of the catalog as one JSON object: the rule (its wire form, camelCase, as a
/// rule file holds it), its revision and when it last changed (RFC 3339).
fn view_json(view: &RuleView) -> Value {
    json!({"rule": view.rule, "revision": view.revision, "updated_at": view.updated_at.to_rfc3339()})
}

/// Prints rules as a table, or one JSON object per line. An empty table is a note on
/// stderr, so stdout holds only rules.
fn print_all(rules: &[RuleView], json: bool) -> std::io::Result<()> {
    let mut lines = Lines::new(json, false);
    if json {
        for view in rules {
            lines.line(&view_json(view).to_string())?;
        }
    } else if rules.is_empty() {
        eprintln!("no rules");
    } else {
        let rows = rules.iter().map(|view| {
            vec![
                view.rule.name.clone(),
                severity_word(view.rule.severity, view.rule.critical),
                view.rule.kind.name().to_owned(),
                view.revision.to_string(),
                crate::clock::time(view.updated_at),
                truncate(&view.rule.description, DESCRIPTION_WIDTH),
            ]
        });
        lines.line(&table(&["NAME", "SEVERITY", "KIND", "REVISION", "UPDATED", "DESCRIPTION"], rows))?;
    }
    lines.flush()
}

/// Prints one rule whole: `key: value` lines, its params as indented JSON; with `json`,
/// one JSON object.
fn print_one(view: &RuleView, json: bool) -> std::io::Result<()> {
    let mut lines = Lines::new(json, false);
    if json {
        lines.line(&view_json(view).to_string())?;
        return lines.flush();
    }
    let rule = &view.rule;
    lines.line(&format!("name: {}", rule.name))?;
    lines.line(&format!("description: {}", rule.description))?;
    lines.line(&format!("severity: {}", severity_word(rule.severity, rule.critical)))?;
    lines.line(&format!("kind: {}", rule.kind.name()))?;
    lines.line(&format!("revision: {}", view.revision))?;
    lines.line(&format!("updated_at: {}", crate::clock::time(view.updated_at)))?;
    let params = serde_json::to_value(&rule.kind).ok().and_then(|kind| kind.get("params").cloned());
    if let Some(params) = params {
        let text = serde_json::to_string_pretty(&params).expect("a JSON value always serializes");
        lines.line(&format!("params: {text}"))?;
    }
    lines.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str, text: &str) -> anyhow::Result<Vec<Rule>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        read_rules(path.to_str().unwrap())
            .map_err(|error| anyhow!("{}", error.to_string().replace(path.to_str().unwrap(), name)))
    }

    const RULES_YAML: &str = "
- name: has-summary
  severity: error
  critical: true
  kind: required-fields
  params: {fields: [/summary]}
- name: short
  description: at most 200 characters
  severity: warning
  kind: length
  params: {max: 200, field: /summary}
";

    #[test]
    fn json_and_yaml_read_the_same_rules() {
        let yaml = read("rules.yaml", RULES_YAML).unwrap();
        assert_eq!(yaml.iter().map(|rule| rule.name.as_str()).collect::<Vec<_>>(), ["has-summary", "short"]);
        assert!(yaml[0].critical);
        let json: Value = serde_yaml_ng::from_str(RULES_YAML).unwrap();
        assert_eq!(read("rules.json", &json.to_string()).unwrap(), yaml);
        assert_eq!(read("rules", &json.to_string()).unwrap(), yaml, "JSON without a telling name");
        assert_eq!(read("rules", RULES_YAML).unwrap(), yaml, "YAML without a telling name");
        let one = read("one.json", &json[1].to_string()).unwrap();
        assert_eq!(one, yaml[1..]);
    }

    #[test]
    fn mistakes_name_the_rule_and_the_field() {
        let cases = [
            (
                "r.json",
                r#"{"name": "r", "kind": "regex", "params": {"pattern": "a"}}"#,
                "r.json: invalid severity: missing",
            ),
            (
                "r.json",
                r#"{"name": "r", "severity": "fatal", "kind": "regex", "params": {"pattern": "a"}}"#,
                "r.json: invalid severity: \"fatal\" is not a severity",
            ),
            (
                "r.json",
                r#"{"name": "r", "severity": "error", "kind": "regex", "params": {}}"#,
                "r.json: invalid params: missing field `pattern`",
            ),
            (
                "r.json",
                r#"{"name": "r", "severity": "error", "kind": "spell-check", "params": {}}"#,
                "r.json: invalid kind: unknown variant `spell-check`",
            ),
            (
                "r.json",
                r#"{"name": "r", "severity": "error", "kind": "regex", "params": {"pattern": "a"}, "severty": 1}"#,
                "r.json: invalid severty: a rule has no such field",
            ),
            (
                "r.json",
                r#"{"name": "a.b", "severity": "error", "kind": "regex", "params": {"pattern": "a"}}"#,
                "r.json: invalid name \"a.b\"",
            ),
            (
                "r.json",
                r#"[{"name": "ok", "severity": "info", "kind": "regex", "params": {"pattern": "a"}}, {"name": "bad", "severity": "info", "kind": "length", "params": {"max": "ten"}}]"#,
                "r.json: rule 2 (\"bad\"): invalid params: invalid type: string \"ten\"",
            ),
            (
                "r.json",
                r#"{"name": "r", "severity": "error", "kind": "regex", "params": {"pattern": "a", "feild": "/x"}}"#,
                "r.json: invalid params.feild: a regex rule has no such parameter",
            ),
            ("r.json", "[]", "r.json: the list holds no rule"),
            ("r.json", "3", "r.json: expected a rule (an object) or a list of rules, found a number"),
            ("r.json", "{\n  \"name\": }", "r.json: does not parse: expected value at line 2"),
            ("r.yaml", "name: r\nseverity: [\n", "r.yaml: does not parse: "),
        ];
        for (name, text, expected) in cases {
            let error = read(name, text).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{text}\n{error}");
        }
        let missing = format!("{:#}", read_rules("/no/such/rules.json").unwrap_err());
        assert!(missing.starts_with("cannot read /no/such/rules.json: "), "{missing}");
    }

    #[test]
    fn a_rule_prints_as_a_rule_file_holds_it() {
        let rule = read("r.yaml", RULES_YAML).unwrap().remove(1);
        let view = RuleView { rule, revision: 2, updated_at: osp_protocol::Timestamp(1_500) };
        let json = view_json(&view);
        assert_eq!(json["revision"], 2);
        assert_eq!(json["updated_at"], "1970-01-01T00:00:01.5Z");
        assert_eq!(serde_json::from_value::<Rule>(json["rule"].clone()).unwrap(), view.rule);
    }
}

//! `osp rules`, `osp check` and `osp audit` as an operator uses them, against a real
//! nats-server with a quality instance running in the test: the catalog's life (add,
//! list, get, update, rm), checks and their exit status by opinion, the audit's filters,
//! markdown export and import; and the mistakes: a bad rule file (exit 2, naming the
//! field), a rule the service refuses, an unknown rule in a check (exit 1, the service's
//! words).

use std::path::{Path, PathBuf};

use osp_local_nats::NatsServer;
use serde_json::{json, Value};

use crate::common::{exits, exits_with_stdin, fails, json_lines, ok};

/// A server and one quality instance on it.
struct Quality {
    url: String,
    instance: osp_quality::Quality,
    _server: NatsServer,
    folder: tempfile::TempDir,
}

impl Quality {
    async fn start() -> Quality {
        let server = NatsServer::start().await.unwrap();
        let url = server.url();
        let instance =
            osp_quality::Quality::start(osp_tests::connect(&url).await, osp_quality::Config::default()).await.unwrap();
        Quality { url, instance, _server: server, folder: tempfile::tempdir().unwrap() }
    }

    /// Writes `text` to the file `name` of the test's folder; its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path: PathBuf = self.folder.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    async fn stop(self) {
        self.instance.shutdown().await;
    }
}

/// Three rules with a failure of each weight: a critical one, a major one, a minor one.
const RULES_YAML: &str = "
- name: no-secret
  description: the output names no secret
  severity: error
  critical: true
  kind: contains
  params: {value: secret, mustContain: false, ignoreCase: true}
- name: has-summary
  severity: error
  kind: required-fields
  params: {fields: [/summary]}
- name: short
  description: a summary of at most 20 characters
  severity: warning
  kind: length
  params: {max: 20, field: /summary}
";

/// Adds [`RULES_YAML`] to the catalog.
async fn add_rules(quality: &Quality) {
    let added = ok(&quality.url, &["rules", "add", &quality.file("rules.yaml", RULES_YAML)]).await;
    assert_eq!(
        added,
        "added rule no-secret (revision 1)\nadded rule has-summary (revision 1)\nadded rule short (revision 1)\n"
    );
}

/// Checks `output` (JSON) against every rule of [`RULES_YAML`] with `extra` flags,
/// expecting exit status `code`; the audit entry `osp check --json` printed.
async fn check(quality: &Quality, code: i32, output: Value, extra: &[&str]) -> Value {
    let file = quality.file("output.json", &output.to_string());
    let mut args = vec!["check", file.as_str(), "--rules", "no-secret,has-summary,short", "--json"];
    args.extend_from_slice(extra);
    let (stdout, _) = exits(code, &quality.url, &args).await;
    json_lines(&stdout).remove(0)
}

/// The ids of the entries `osp audit query --all --json args...` prints.
async fn query_ids(url: String, args: &[&str]) -> Vec<String> {
    let args: Vec<&str> = ["audit", "query", "--all", "--json"].iter().chain(args).copied().collect();
    names(&json_lines(&ok(&url, &args).await), "/id")
}

/// The strings at `pointer` in each of `lines`.
fn names(lines: &[Value], pointer: &str) -> Vec<String> {
    lines.iter().map(|line| line.pointer(pointer).and_then(Value::as_str).unwrap_or("?").to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_are_added_listed_read_updated_and_removed() {
    let quality = Quality::start().await;
    let url = quality.url.clone();
    add_rules(&quality).await;
    // The same rules again change nothing; a rule from stdin, as JSON.
    let again = ok(&url, &["rules", "add", &quality.file("again.yml", RULES_YAML)]).await;
    assert!(again.lines().all(|line| line.ends_with("(revision 1)")), "{again}");
    let tone = json!({"name": "tone", "severity": "info", "kind": "regex", "params": {"pattern": "(?i)please"}});
    let (stdout, _) = exits_with_stdin(0, &url, &["rules", "add", "-"], &tone.to_string()).await;
    assert_eq!(stdout, "added rule tone (revision 1)\n");

    let table = ok(&url, &["rules", "list"]).await;
    let rows: Vec<Vec<&str>> = table.lines().map(|line| line.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "SEVERITY", "KIND", "REVISION", "UPDATED", "DESCRIPTION"]);
    assert_eq!(
        rows.iter().skip(1).map(|row| row[0]).collect::<Vec<_>>(),
        ["has-summary", "no-secret", "short", "tone"]
    );
    assert_eq!(rows[2][..4], ["no-secret", "error", "(critical)", "contains"]);
    let listed = json_lines(&ok(&url, &["rules", "list", "--json"]).await);
    assert_eq!(names(&listed, "/rule/name"), ["has-summary", "no-secret", "short", "tone"]);

    let short = json_lines(&ok(&url, &["rules", "get", "short", "--json"]).await).remove(0);
    assert_eq!(short["revision"], 1);
    assert_eq!(short["rule"]["params"], json!({"max": 20, "field": "/summary"}));
    let text = ok(&url, &["rules", "get", "short"]).await;
    assert!(text.contains("severity: warning\nkind: length\nrevision: 1\n"), "{text}");

    // Another definition under a name in use is refused; update replaces it.
    let longer = RULES_YAML.replace("max: 20", "max: 40");
    let refused = fails(&url, &["rules", "add", &quality.file("longer.yaml", &longer)]).await;
    assert!(refused.contains("no-secret") || refused.contains("short"), "{refused}");
    assert!(refused.contains("conflicts") && refused.contains("update_rule"), "{refused}");
    let updated = ok(&url, &["rules", "update", &quality.file("longer.yaml", &longer)]).await;
    assert!(updated.contains("updated rule short (revision 2)"), "{updated}");
    let short = json_lines(&ok(&url, &["rules", "get", "short", "--json"]).await).remove(0);
    assert_eq!((short["revision"].clone(), short["rule"]["params"]["max"].clone()), (json!(2), json!(40)));

    assert_eq!(ok(&url, &["rules", "rm", "tone"]).await, "removed rule tone\n");
    let gone = fails(&url, &["rules", "rm", "tone"]).await;
    assert!(gone.contains("no rule named \"tone\""), "{gone}");
    let gone = fails(&url, &["rules", "get", "tone"]).await;
    assert!(gone.contains("no rule named \"tone\""), "{gone}");
    let listed = json_lines(&ok(&url, &["rules", "list", "--json"]).await);
    assert_eq!(names(&listed, "/rule/name"), ["has-summary", "no-secret", "short"]);
    quality.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_check_prints_its_results_and_exits_by_its_opinion() {
    let quality = Quality::start().await;
    let url = quality.url.clone();
    add_rules(&quality).await;

    // Unqualified and qualified accept the output (0); adverse does not (1).
    let good = quality.file("good.json", r#"{"summary": "Short."}"#);
    let printed = ok(&url, &["check", &good, "--rules", "no-secret,has-summary,short", "--agent", "writer"]).await;
    assert!(printed.contains("opinion: unqualified\nfindings: 0 critical, 0 major, 0 minor\n"), "{printed}");
    assert!(printed.contains("agent: writer\n"), "{printed}");
    let rows: Vec<Vec<&str>> = printed.lines().map(|line| line.split_whitespace().collect()).collect();
    let results: Vec<&[&str]> =
        rows.iter().skip_while(|row| row.first() != Some(&"RULE")).skip(1).map(|row| &row[..2]).collect();
    assert_eq!(results, [["no-secret", "passed"], ["has-summary", "passed"], ["short", "passed"]]);

    let long = check(&quality, 0, json!({"summary": "A summary far longer than twenty characters."}), &[]).await;
    assert_eq!(long["opinion"], "qualified");
    assert_eq!(long["findings"], json!({"critical": 0, "major": 0, "minor": 1}));
    let passed: Vec<bool> =
        long["ruleResults"].as_array().unwrap().iter().map(|r| r["passed"].as_bool().unwrap()).collect();
    assert_eq!(passed, [true, true, false]);

    let secret = quality.file("secret.json", r#"{"summary": "The Secret is 42."}"#);
    let (printed, _) = exits(1, &url, &["check", &secret, "--rules", "no-secret,has-summary"]).await;
    assert!(printed.contains("opinion: adverse\nfindings: 1 critical, 0 major, 0 minor\n"), "{printed}");
    assert!(printed.lines().any(|line| line.starts_with("no-secret") && line.contains("FAILED")), "{printed}");

    // --text checks the file's text as a JSON string; stdin works too.
    let words = quality.file("words.txt", "no secrets here, honest");
    let entry = json_lines(&exits(1, &url, &["check", &words, "--text", "--rules", "no-secret", "--json"]).await.0);
    assert_eq!(entry[0]["opinion"], "adverse");
    let (stdout, _) = exits_with_stdin(0, &url, &["check", "-", "--rules", "has-summary"], r#"{"summary": 1}"#).await;
    assert!(stdout.contains("opinion: unqualified"), "{stdout}");

    // A rule the catalog does not hold: the service's words, exit 1.
    let unknown = fails(&url, &["check", &good, "--rules", "has-summary,no-such-rule"]).await;
    assert!(unknown.contains("no-such-rule") && unknown.contains("the catalog has no rule by that name"), "{unknown}");
    // An output that is not JSON is a usage error, said before anything is sent.
    let (_, stderr) = exits(2, &url, &["check", &words, "--rules", "no-secret"]).await;
    assert!(stderr.contains("the output is not JSON") && stderr.contains("--text"), "{stderr}");
    quality.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_query_filters_the_entries() {
    let quality = Quality::start().await;
    let url = quality.url.clone();
    add_rules(&quality).await;
    let cases = [
        ("ok-1", json!({"summary": "Short."}), "writer", "run-1", 0),
        ("long-1", json!({"summary": "A summary far longer than twenty characters."}), "writer", "run-2", 0),
        ("secret-1", json!({"summary": "The secret."}), "leaker", "run-3", 1),
        ("empty-1", json!({"title": "no summary, a secret"}), "leaker", "run-3", 1),
    ];
    for (id, output, agent, execution, code) in &cases {
        check(&quality, *code, output.clone(), &["--audit-id", id, "--agent", agent, "--execution", execution]).await;
    }
    let ids = |args: &'static [&'static str]| query_ids(url.clone(), args);
    assert_eq!(ids(&[]).await, ["ok-1", "long-1", "secret-1", "empty-1"]);
    assert_eq!(ids(&["--opinion", "adverse"]).await, ["secret-1", "empty-1"]);
    assert_eq!(ids(&["--opinion", "qualified", "--opinion", "unqualified"]).await, ["ok-1", "long-1"]);
    assert_eq!(ids(&["--min-critical", "1"]).await, ["secret-1", "empty-1"]);
    assert_eq!(ids(&["--min-major", "1"]).await, ["empty-1"]);
    assert_eq!(ids(&["--agent", "writer"]).await, ["ok-1", "long-1"]);
    assert_eq!(ids(&["--execution", "run-3", "--min-critical", "1"]).await, ["secret-1", "empty-1"]);
    assert_eq!(ids(&["--since", "1h"]).await.len(), 4);
    assert!(ids(&["--until", "1h"]).await.is_empty());
    assert!(ids(&["--since", "2000-01-01T00:00:00Z", "--until", "2000-01-02T00:00:00Z"]).await.is_empty());

    // A page at a time: without --all, the rest is said on stderr.
    let (stdout, stderr) = exits(0, &url, &["audit", "query", "--limit", "1"]).await;
    let rows: Vec<Vec<&str>> = stdout.lines().map(|line| line.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["ID", "CREATED", "OPINION", "CRITICAL", "MAJOR", "MINOR", "AGENT", "EXECUTION"]);
    // The time takes three words: date, time of day, offset.
    assert_eq!((rows.len(), rows[1][0], rows[1][4]), (2, "ok-1", "unqualified"));
    assert!(stderr.contains("more entries after ok-1"), "{stderr}");
    let (stdout, _) = exits(0, &url, &["audit", "query", "--limit", "1", "--after", "ok-1", "--json"]).await;
    assert_eq!(names(&json_lines(&stdout), "/id"), ["long-1"]);

    let (_, stderr) = exits(2, &url, &["audit", "query", "--since", "yesterday"]).await;
    assert!(stderr.contains("--since \"yesterday\": expected RFC 3339"), "{stderr}");
    let (_, stderr) = exits(2, &url, &["audit", "query", "--opinion", "fine"]).await;
    assert!(stderr.contains("\"fine\" is not an opinion"), "{stderr}");
    quality.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exported_entry_imports_back_to_the_recorded_one() {
    let quality = Quality::start().await;
    let url = quality.url.clone();
    add_rules(&quality).await;
    let output = json!({"summary": "A summary far longer than twenty characters."});
    let flags = ["--audit-id", "a-rt", "--execution", "run-9", "--objective", "a short summary", "--metadata"];
    let checked = check(&quality, 0, output, &[&flags[..], &[r#"{"team": "docs", "n": 1.5}"#]].concat()).await;

    let shown = json_lines(&ok(&url, &["audit", "show", "a-rt", "--json"]).await).remove(0);
    assert_eq!(shown["entry"], checked);
    assert_eq!(names(shown["rules"].as_array().unwrap(), "/name"), ["no-secret", "has-summary", "short"]);
    let text = ok(&url, &["audit", "show", "a-rt"]).await;
    assert!(text.contains("opinion: qualified") && text.contains("checked against:"), "{text}");

    let exported = quality.folder.path().join("a-rt.md");
    let path = exported.to_str().unwrap();
    let (_, wrote) = exits(0, &url, &["audit", "export", "a-rt", "-o", path]).await;
    assert_eq!(wrote, format!("wrote audit a-rt to {path}\n"));
    let markdown = std::fs::read_to_string(&exported).unwrap();
    assert!(markdown.starts_with("---\nid: a-rt\n"), "{markdown}");
    assert_eq!(ok(&url, &["audit", "export", "a-rt"]).await, markdown, "stdout holds the same file");

    // The entry read back is the one recorded, and --check says so.
    let imported = json_lines(&ok(&url, &["audit", "import", path]).await).remove(0);
    assert_eq!(imported, checked);
    let (stdout, stderr) = exits(0, &url, &["audit", "import", path, "--check"]).await;
    assert_eq!(json_lines(&stdout).remove(0), checked);
    assert!(stderr.contains("equals the recorded entry \"a-rt\""), "{stderr}");
    let (stdout, _) = exits_with_stdin(0, &url, &["audit", "import", "-", "--check"], &markdown).await;
    assert_eq!(json_lines(&stdout).remove(0), checked);

    // The body is generated: editing it changes nothing. The front matter is the truth.
    let body_edit = edited(&exported, "b.md", |text| format!("{text}\nA note of mine.\n"));
    exits(0, &url, &["audit", "import", &body_edit, "--check"]).await;
    let front_edit = edited(&exported, "f.md", |text| text.replacen("opinion: qualified", "opinion: unqualified", 1));
    let differs = fails(&url, &["audit", "import", &front_edit, "--check"]).await;
    assert!(differs.contains("differs from the recorded entry \"a-rt\" in opinion"), "{differs}");
    let other = edited(&exported, "o.md", |text| text.replacen("id: a-rt", "id: a-none", 1));
    let missing = fails(&url, &["audit", "import", &other, "--check"]).await;
    assert!(missing.contains("no audit entry with id \"a-none\""), "{missing}");

    let broken = quality.file("broken.md", "---\nid: a-rt\nfindings: {critical: many}\n---\n");
    let (_, stderr) = exits(2, &url, &["audit", "import", &broken]).await;
    assert!(stderr.contains("not an audit entry") && stderr.contains("findings"), "{stderr}");
    let gone = fails(&url, &["audit", "export", "a-none"]).await;
    assert!(gone.contains("no audit entry with id \"a-none\""), "{gone}");
    quality.stop().await;
}

/// A copy of `file` named `name` beside it, with its text changed by `edit`.
fn edited(file: &Path, name: &str, edit: impl Fn(&str) -> String) -> String {
    let copy = file.with_file_name(name);
    std::fs::write(&copy, edit(&std::fs::read_to_string(file).unwrap())).unwrap();
    copy.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_rules_are_said_by_field() {
    let quality = Quality::start().await;
    let url = quality.url.clone();
    // Mistakes in the file: exit 2 before anything is sent, naming the rule and field.
    let cases = [
        ("a.json", r#"{"name": "r", "kind": "regex", "params": {"pattern": "a"}}"#, "invalid severity: missing"),
        ("b.yaml", "- name: ok\n  severity: info\n  kind: regex\n  params: {pattern: a}\n- name: bad\n  severity: fatal\n  kind: regex\n  params: {pattern: a}\n", "rule 2 (\"bad\"): invalid severity: \"fatal\" is not a severity"),
        ("c.json", r#"{"name": "r", "severity": "error", "kind": "length", "params": {"max": "ten"}}"#, "invalid params: invalid type: string \"ten\""),
        ("d.json", r#"{"name": "r", "severity": "error", "kind": "regex", "params": {"pattern": "a"}, "severty": 1}"#, "invalid severty: a rule has no such field"),
        ("e.yaml", "name: r\nseverity: [\n", "does not parse"),
        ("f.json", r#"{"name": "r", "severity": "error", "kind": "regex", "params": {"pattern": "a", "feild": "/x"}}"#, "invalid params.feild: a regex rule has no such parameter"),
    ];
    for (name, text, expected) in cases {
        let (_, stderr) = exits(2, &url, &["rules", "add", &quality.file(name, text)]).await;
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
    // What only the service can tell (a pattern or a schema that does not compile): its
    // refusal, exit 1, naming the field.
    let service_checks = [
        (r#"{"name": "r", "severity": "error", "kind": "regex", "params": {"pattern": "(?=a)"}}"#, "pattern"),
        (r#"{"name": "r", "severity": "error", "kind": "json-schema", "params": {"schema": {"type": 5}}}"#, "schema"),
    ];
    for (text, expected) in service_checks {
        let refused = fails(&url, &["rules", "add", &quality.file("rule.json", text)]).await;
        assert!(refused.contains(expected), "{text}: {refused}");
    }
    assert!(json_lines(&ok(&url, &["rules", "list", "--json"]).await).is_empty());
    quality.stop().await;
}

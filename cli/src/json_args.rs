//! JSON given on the command line: documents inline, from a file (`@path`) or from stdin
//! (`-`), and the `--where PATH=VALUE` criteria of `find`.
//!
//! Errors name the flag, so a typo in one of several JSON arguments is found at once.

use anyhow::{anyhow, bail, Context};
use osp_protocol::registry::document::{from_json, kind_name};
use osp_protocol::registry::Document;
use serde_json::{Map, Value};

/// The JSON value given to `flag`: `arg` itself, the contents of the file `@path`, or
/// stdin for `-`.
pub fn read(flag: &str, arg: &str) -> anyhow::Result<Value> {
    let (text, source) = match (arg, arg.strip_prefix('@')) {
        ("-", _) => {
            let text = std::io::read_to_string(std::io::stdin()).with_context(|| format!("{flag}: reading stdin"))?;
            (text, " from stdin".to_owned())
        }
        (_, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("{flag}: cannot read {path}"))?;
            (text, format!(" in {path}"))
        }
        (_, None) => (arg.to_owned(), String::new()),
    };
    serde_json::from_str(&text).map_err(|error| anyhow!("{flag}: invalid JSON{source}: {error}"))
}

/// The criteria of `find`: the object given to `--criteria` (if any) with every
/// `--where PATH=VALUE` pair set on it, later pairs winning. Dotted paths stay keys:
/// the registry reads `a.b` as a path into nested maps.
pub fn criteria(criteria: Option<&str>, pairs: &[String]) -> anyhow::Result<Document> {
    let mut map = match criteria.map(|arg| read("--criteria", arg)).transpose()? {
        None => Map::new(),
        Some(Value::Object(map)) => map,
        Some(other) => bail!(
            "--criteria: must be a JSON object of resource fields to match, found {}",
            kind_name(&from_json(&other))
        ),
    };
    for pair in pairs {
        let (path, value) = where_pair(pair)?;
        map.insert(path.to_owned(), value);
    }
    Ok(from_json(&Value::Object(map)))
}

/// Splits `PATH=VALUE`; VALUE is JSON when it parses as JSON (`4`, `true`, `["a","b"]`),
/// else the text as it is (`summarize`).
fn where_pair(pair: &str) -> anyhow::Result<(&str, Value)> {
    match pair.split_once('=') {
        Some((path, value)) if !path.is_empty() => {
            Ok((path, serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()))))
        }
        _ => bail!("--where {pair:?}: expected PATH=VALUE, e.g. capabilities=summarize or endpoint.region=eu"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osp_protocol::json::from_msgpack_value;
    use serde_json::json;

    fn criteria_json(criteria_arg: Option<&str>, pairs: &[&str]) -> anyhow::Result<Value> {
        let pairs: Vec<String> = pairs.iter().map(|p| (*p).to_owned()).collect();
        criteria(criteria_arg, &pairs).map(|doc| from_msgpack_value(&doc))
    }

    #[test]
    fn where_values_are_json_when_they_parse_and_text_otherwise() {
        let got = criteria_json(
            None,
            &["capabilities=summarize", "max_concurrency=4", "gpu=true", "tags=[\"a\",\"b\"]", "endpoint.region=eu"],
        )
        .unwrap();
        assert_eq!(
            got,
            json!({"capabilities": "summarize", "max_concurrency": 4, "gpu": true, "tags": ["a", "b"],
                   "endpoint.region": "eu"})
        );
        assert_eq!(criteria_json(None, &["note=a=b", "empty="]).unwrap(), json!({"note": "a=b", "empty": ""}));
    }

    #[test]
    fn where_pairs_override_the_criteria_object() {
        let got = criteria_json(Some(r#"{"region": "us", "gpu": true}"#), &["region=eu"]).unwrap();
        assert_eq!(got, json!({"region": "eu", "gpu": true}));
        assert_eq!(criteria_json(None, &[]).unwrap(), json!({}));
    }

    #[test]
    fn bad_criteria_name_the_flag() {
        for (criteria_arg, pairs, expected) in [
            (None, &["capabilities"][..], "--where \"capabilities\": expected PATH=VALUE"),
            (None, &["=x"][..], "expected PATH=VALUE"),
            (Some("[1]"), &[][..], "--criteria: must be a JSON object of resource fields to match, found an array"),
            (Some("{nope"), &[][..], "--criteria: invalid JSON: key must be a string"),
        ] {
            let err = criteria_json(criteria_arg, pairs).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn documents_come_inline_or_from_a_file() {
        assert_eq!(read("--resource", r#"{"a": 1}"#).unwrap(), json!({"a": 1}));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("card.json");
        std::fs::write(&file, r#"{"capabilities": ["x"]}"#).unwrap();
        assert_eq!(read("--resource", &format!("@{}", file.display())).unwrap(), json!({"capabilities": ["x"]}));

        std::fs::write(&file, "{").unwrap();
        let err = read("--resource", &format!("@{}", file.display())).unwrap_err().to_string();
        assert!(err.starts_with(&format!("--resource: invalid JSON in {}: ", file.display())), "{err}");
        let err = read("--metadata", "@/no/such/file.json").unwrap_err();
        assert!(format!("{err:#}").starts_with("--metadata: cannot read /no/such/file.json: "), "{err:#}");
        let err = read("--resource", "{capabilities: []}").unwrap_err().to_string();
        assert!(err.starts_with("--resource: invalid JSON: "), "{err}");
    }
}

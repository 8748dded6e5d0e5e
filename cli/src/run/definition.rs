//! The workflow definition of `osp run submit --workflow FILE`: JSON, or YAML for a file
//! named `.yaml`/`.yml`, read and checked whole before anything is sent, so a mistake is
//! named by its line and column (it does not parse) or by its field path (it breaks a
//! rule of the definition), with or without a server.

use std::path::Path;

use anyhow::{anyhow, Context};
use osp_protocol::scheduler::Workflow;

/// The definition in `arg`: a file, or `-` for JSON on stdin, parsed and checked as the
/// scheduler will check it.
pub fn read(arg: &str) -> anyhow::Result<Workflow> {
    let workflow = parse(arg)?;
    workflow.check().map_err(|error| anyhow!("--workflow {arg}: {error}"))?;
    Ok(workflow)
}

/// The format a file is in, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Yaml,
}

impl Format {
    fn of(arg: &str) -> Format {
        let extension = Path::new(arg).extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("yaml" | "yml") => Format::Yaml,
            _ => Format::Json,
        }
    }
}

fn parse(arg: &str) -> anyhow::Result<Workflow> {
    let (text, format, source) = match arg {
        "-" => (std::io::read_to_string(std::io::stdin()).context("--workflow: reading stdin")?, Format::Json, "stdin"),
        path => {
            let text = std::fs::read_to_string(path).with_context(|| format!("--workflow: cannot read {path}"))?;
            (text, Format::of(path), path)
        }
    };
    let parsed = match format {
        Format::Json => serde_json::from_str(&text).map_err(|error| error.to_string()),
        // A pattern is a one-key map (`routing: {...}`), as in JSON, not a YAML tag.
        Format::Yaml => {
            serde_yaml_ng::with::singleton_map_recursive::deserialize(serde_yaml_ng::Deserializer::from_str(&text))
                .map_err(|error| error.to_string())
        }
    };
    parsed.map_err(|error| anyhow!("--workflow {source}: not a workflow definition: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(name: &str, text: &str) -> anyhow::Result<Workflow> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        read(path.to_str().unwrap())
            .map_err(|error| anyhow!("{}", error.to_string().replace(path.to_str().unwrap(), name)))
    }

    const ROUTING_YAML: &str = "
routing:
  classify: {task: {capability: classify}}
  routes:
    billing:
      parallelization:
        subtasks:
          - {id: a, prompt: first}
          - {id: b, prompt: {text: second}}
        worker: {task: {capability: work, options: {retry: {attempts: 2, backoff: linear}}}}
        failureStrategy: collect-all
        options: {timeout: {ms: 60000, onTimeout: cancel}}
    tech: {task: {capability: tech}}
  default: tech
";

    #[test]
    fn json_and_yaml_read_the_same_definition() {
        let yaml = read_text("flow.yaml", ROUTING_YAML).unwrap();
        let json: serde_json::Value = serde_yaml_ng::from_str(ROUTING_YAML).unwrap();
        assert_eq!(read_text("flow.json", &json.to_string()).unwrap(), yaml);
        assert_eq!(read_text("FLOW.YML", ROUTING_YAML).unwrap(), yaml);
        assert_eq!(yaml.capabilities().into_iter().collect::<Vec<_>>(), ["classify", "tech", "work"]);
    }

    #[test]
    fn mistakes_name_the_line_or_the_field() {
        let typo = read_text("flow.yaml", "routing:\n  clasify: {task: {capability: c}}\n").unwrap_err().to_string();
        assert!(typo.starts_with("--workflow flow.yaml: not a workflow definition: "), "{typo}");
        assert!(typo.contains("unknown field `clasify`") && typo.contains("line 2 column 3"), "{typo}");
        let json = read_text("flow.json", "{\"routing\": {\n  \"classify\": 3}}").unwrap_err().to_string();
        assert!(json.contains("line 2 column"), "{json}");
        let rule = read_text("flow.json", r#"{"routing": {"classify": {"task": {"capability": "c"}}, "routes": {"a": {"task": {"capability": "x"}}}, "default": "z"}}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(rule, "--workflow flow.json: invalid workflow.routing.default: \"z\" is not a route (routes: a)");
        let missing = format!("{:#}", read("/no/such/flow.json").unwrap_err());
        assert!(missing.starts_with("--workflow: cannot read /no/such/flow.json: "), "{missing}");
    }
}

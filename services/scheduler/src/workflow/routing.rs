//! Routing: `classify` gets the run's input and names a route; the route's workflow
//! gets the same input, and its output is the run's. An unknown key, or a failed
//! classification, takes the default route when there is one, and fails the run with
//! the key and the known routes when there is none.

use osp_protocol::scheduler::workflow::Routing;
use serde_json::Value;

use super::{failure, start_one, step_failed, Next, Steps};

const CLASSIFY: &str = "classify";

pub(super) fn next(routing: &Routing, input: &Value, steps: &Steps) -> Next {
    let Some(classify) = steps.get(CLASSIFY) else {
        return start_one(CLASSIFY, &routing.classify, input.clone(), 2);
    };
    let Some(classified) = &classify.end else { return Next::Wait };
    if let Some(route) = steps.all().iter().find(|s| s.key.starts_with("route:")) {
        return match &route.end {
            None => Next::Wait,
            Some(end) if end.succeeded() => Next::Complete(end.output_json()),
            Some(end) => step_failed(&route.key, end),
        };
    }
    let key = match classified.succeeded() {
        true => route_key(&classified.output_json()),
        false => Err(format!("classification {}: {}", classified.status, classified.error_or_status().message)),
    };
    let chosen = match &key {
        Ok(key) if routing.routes.contains_key(key) => key.clone(),
        _ => match (&routing.default, key) {
            (Some(default), _) => default.clone(),
            (None, Ok(key)) => {
                return failure(
                    "unknown_route",
                    format!(
                    "the classify step chose route {key:?}, which is not a route (routes: {}) and there is no default",
                    known(routing)
                ),
                )
            }
            (None, Err(why)) if classified.succeeded() => {
                return failure("unknown_route", format!("{why}, and there is no default route"))
            }
            (None, Err(_)) => return step_failed(CLASSIFY, classified),
        },
    };
    start_one(format!("route:{chosen}"), &routing.routes[&chosen], input.clone(), 2)
}

/// The route key of a classification: a string, or an object's `route` (or `key`).
fn route_key(output: &Value) -> Result<String, String> {
    let key = match output {
        Value::String(key) => Some(key.as_str()),
        Value::Object(object) => object.get("route").or_else(|| object.get("key")).and_then(Value::as_str),
        _ => None,
    };
    key.map(str::to_owned).ok_or_else(|| {
        format!("the classify step returned no route key (expected a string or {{\"route\": …}}, got {output})")
    })
}

fn known(routing: &Routing) -> String {
    routing.routes.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::testing::Drive;
    use super::super::Next;
    use serde_json::json;

    fn routing(default: Option<&str>) -> serde_json::Value {
        let mut routing = json!({"classify": {"task": {"capability": "classify"}},
            "routes": {"billing": {"task": {"capability": "billing"}}, "tech": {"task": {"capability": "tech"}}}});
        if let Some(default) = default {
            routing["default"] = json!(default);
        }
        json!({"routing": routing})
    }

    #[test]
    fn the_classified_route_gets_the_input_and_its_output_is_the_runs() {
        let mut run = Drive::new(routing(None), json!({"text": "my invoice"}));
        assert_eq!(run.started(), ["classify"]);
        assert_eq!(run.input_of("classify"), json!({"text": "my invoice"}));
        assert_eq!(run.next(), Next::Wait);
        run.complete("classify", json!({"route": "billing"}));
        assert_eq!(run.started(), ["route:billing"]);
        assert_eq!(run.input_of("route:billing"), json!({"text": "my invoice"}));
        assert_eq!(run.next(), Next::Wait);
        run.complete("route:billing", json!("refunded"));
        assert_eq!(run.next(), Next::Complete(json!("refunded")));
    }

    #[test]
    fn an_unknown_key_takes_the_default_route_or_fails_naming_the_key_and_the_routes() {
        let mut run = Drive::new(routing(Some("tech")), json!(null));
        run.started();
        run.complete("classify", json!("weather"));
        assert_eq!(run.started(), ["route:tech"]);

        let mut run = Drive::new(routing(None), json!(null));
        run.started();
        run.complete("classify", json!("weather"));
        let Next::Fail(error) = run.next() else { panic!() };
        assert_eq!(error.kind, "unknown_route");
        assert!(error.message.contains("\"weather\"") && error.message.contains("billing, tech"), "{}", error.message);

        let mut run = Drive::new(routing(None), json!(null));
        run.started();
        run.complete("classify", json!({"score": 3}));
        let Next::Fail(error) = run.next() else { panic!() };
        assert!(error.message.contains("no route key"), "{}", error.message);
    }

    #[test]
    fn a_failed_classification_takes_the_default_or_fails_the_run() {
        let mut run = Drive::new(routing(Some("billing")), json!(null));
        run.started();
        run.fail("classify", "model down");
        assert_eq!(run.started(), ["route:billing"]);

        let mut run = Drive::new(routing(None), json!(null));
        run.started();
        run.fail("classify", "model down");
        let Next::Fail(error) = run.next() else { panic!() };
        assert!(error.message.contains("step classify failed: model down"), "{}", error.message);
    }

    #[test]
    fn a_failed_route_fails_the_run() {
        let mut run = Drive::new(routing(None), json!(null));
        run.started();
        run.complete("classify", json!("tech"));
        run.started();
        run.fail("route:tech", "no idea");
        let Next::Fail(error) = run.next() else { panic!() };
        assert!(error.message.starts_with("step route:tech failed"), "{}", error.message);
    }
}

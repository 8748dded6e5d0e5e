//! The events of a run tree as the replay reads them: typed by the service that wrote
//! them, so that what the timeline, the causes and the diff look at is a field of a
//! type, not a string looked up in a JSON payload.

use osp_protocol::context::ContextEvent;
use osp_protocol::quality::QualityEvent;
use osp_protocol::scheduler::RunEvent;
use osp_protocol::AnyPayload;

/// An event's payload, typed.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A run's.
    Run(RunEvent),
    /// A context scope's, or its embeddings'.
    Context(ContextEvent),
    /// An audit entry's, or a rule's.
    Quality(QualityEvent),
    /// One the replay only shows, as written: of another kind (an agent's registry
    /// entry), of a type this build does not know (a newer writer's), or that does not
    /// read as its type. Never dropped.
    Other,
}

impl Event {
    /// `payload`, typed by the service whose events have its type.
    pub fn of(payload: &AnyPayload) -> Event {
        payload
            .read()
            .map(Event::Run)
            .or_else(|| payload.read().map(Event::Context))
            .or_else(|| payload.read().map(Event::Quality))
            .unwrap_or(Event::Other)
    }

    /// The run event it is, if it is one.
    pub fn run(&self) -> Option<&RunEvent> {
        match self {
            Event::Run(event) => Some(event),
            _ => None,
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// The event of `event_type` with `payload` (as JSON), as the replay reads it from the log.
    pub fn read(event_type: &str, payload: &serde_json::Value) -> Event {
        Event::of(&written(event_type, payload))
    }

    /// The payload of `event_type` as written on the log.
    pub fn written(event_type: &str, payload: &serde_json::Value) -> AnyPayload {
        AnyPayload { event_type: event_type.into(), schema: 1, body: rmpv::ext::to_value(payload).unwrap() }
    }

    #[test]
    fn each_service_reads_its_own_events_and_others_are_kept_untyped() {
        let started = read("run.started", &serde_json::json!({"attempt": 1, "agent": "a1"}));
        assert!(matches!(started, Event::Run(RunEvent::Started(_))), "{started:?}");
        let removed = read("scope.entry_removed", &serde_json::json!({"section": "kv", "key": "k"}));
        assert!(matches!(removed, Event::Context(ContextEvent::EntryRemoved(_))), "{removed:?}");
        assert!(matches!(read("rule.removed", &serde_json::json!({})), Event::Quality(QualityEvent::RuleRemoved(_))));
        assert_eq!(read("entry.online", &serde_json::json!({})), Event::Other, "an agent's: only shown");
        assert_eq!(read("run.rewound", &serde_json::json!({"attempt": 1})), Event::Other, "a newer writer's");
        assert_eq!(read("run.started", &serde_json::json!({"attempt": "one"})), Event::Other, "unreadable");
    }
}

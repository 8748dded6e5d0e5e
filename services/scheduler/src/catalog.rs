//! What the scheduler knows of the quality service's rule catalog, read from its events
//! on the log (`osp.v1.evt.rule.*`): which rule names exist, so a submit whose `checks`
//! name a rule nobody defined is refused at once, not after the checks' deadline. The
//! scheduler never asks the quality service: it folds the same log.

use std::collections::BTreeSet;

use osp_eventlog::Recorded;
use osp_protocol::quality::QualityEvent;
use osp_runtime::{Snapshot, View};

/// The names of the rules in the catalog.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct CatalogView {
    rules: BTreeSet<String>,
}

impl Snapshot for CatalogView {
    const NAME: &'static str = "scheduler-catalog";
    const SHAPE: u32 = 1;
}

impl View for CatalogView {
    type Event = QualityEvent;

    fn apply(&mut self, event: &Recorded<QualityEvent>) {
        let name = event.envelope.aggregate.id.to_string();
        match &event.envelope.payload {
            QualityEvent::RuleAdded(_) | QualityEvent::RuleUpdated(_) => {
                self.rules.insert(name);
            }
            QualityEvent::RuleRemoved(_) => {
                self.rules.remove(&name);
            }
            _ => {}
        }
    }
}

impl CatalogView {
    /// The first of `names` the catalog does not hold.
    pub fn missing<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
        names.into_iter().find(|name| !self.rules.contains(*name))
    }

    /// The names it holds, for error messages.
    pub fn names(&self) -> Vec<&str> {
        self.rules.iter().map(String::as_str).collect()
    }
}

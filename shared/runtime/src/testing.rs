//! Given / when / then for aggregates: tests of the pure core that need no server.
//!
//! ```
//! # use osp_runtime::testing::given;
//! # fn demo<A: osp_runtime::Aggregate + PartialEq + std::fmt::Debug>(history: Vec<A::Event>, command: A::Command, expected: Vec<A::Event>)
//! # where A::Event: PartialEq + std::fmt::Debug {
//! given::<A>(history).when(&command).then(expected);
//! # }
//! ```
//!
//! Every `when` also checks what event sourcing relies on: the state after applying the
//! decided events is the state a replay of the whole history reaches.

use osp_protocol::{AggregateRef, Envelope, Timestamp};
use uuid::Uuid;

use crate::Aggregate;

/// The instant every test event claims to have happened at.
pub const TEST_TIME: Timestamp = Timestamp(1_700_000_000_000);

/// A history to start from.
pub struct Given<A: Aggregate> {
    history: Vec<A::Event>,
    state: A,
}

/// `history` applied to a new aggregate.
pub fn given<A: Aggregate>(history: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let history: Vec<A::Event> = history.into_iter().collect();
    let state = fold::<A>(&history);
    Given { history, state }
}

/// The state after `events`, applied to a new aggregate.
pub fn fold<A: Aggregate>(events: &[A::Event]) -> A {
    let mut state = A::default();
    for (i, event) in events.iter().enumerate() {
        state.evolve(&envelope(event.clone(), i as u64 + 1));
    }
    state
}

/// `payload` in an envelope with fixed test metadata, at `version`.
pub fn envelope<P>(payload: P, version: u64) -> Envelope<P> {
    Envelope {
        id: Uuid::nil(),
        aggregate: AggregateRef::new("test", "test").expect("valid"),
        version,
        occurred_at: Timestamp(TEST_TIME.millis() + version as i64),
        actor: "test".into(),
        correlation_id: None,
        causation_id: None,
        prev_hash: None,
        payload,
    }
}

impl<A: Aggregate + PartialEq + std::fmt::Debug> Given<A> {
    /// The state the history folds to.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Decides `command` on that state, at [`TEST_TIME`].
    pub fn when(self, command: &A::Command) -> Then<A> {
        self.when_at(command, TEST_TIME)
    }

    /// Decides `command` on that state at `now` (for decisions that depend on the time).
    pub fn when_at(self, command: &A::Command, now: Timestamp) -> Then<A> {
        let decided = self.state.decide(command, now);
        if let Ok(events) = &decided {
            let mut continued = self.state.clone();
            for (i, event) in events.iter().enumerate() {
                continued.evolve(&envelope(event.clone(), (self.history.len() + i) as u64 + 1));
            }
            let mut all = self.history.clone();
            all.extend(events.iter().cloned());
            let replayed = fold::<A>(&all);
            assert_eq!(continued, replayed, "applying the decided events must reach the state a replay reaches");
        }
        Then { decided }
    }
}

/// What a decision came to.
pub struct Then<A: Aggregate> {
    decided: Result<Vec<A::Event>, osp_protocol::Error>,
}

impl<A: Aggregate> Then<A>
where
    A::Event: PartialEq + std::fmt::Debug,
{
    /// Expects exactly `expected` (empty: nothing to do).
    #[track_caller]
    pub fn then(self, expected: Vec<A::Event>) {
        match self.decided {
            Ok(events) => assert_eq!(events, expected),
            Err(error) => panic!("expected {expected:?}, the command was refused: {error}"),
        }
    }

    /// The decided events, for a test that looks at them itself; a refusal fails it.
    #[track_caller]
    pub fn events(self) -> Vec<A::Event> {
        match self.decided {
            Ok(events) => events,
            Err(error) => panic!("the command was refused: {error}"),
        }
    }

    /// Expects a refusal whose message contains `text`; returns the error.
    #[track_caller]
    pub fn then_refused(self, text: &str) -> osp_protocol::Error {
        match self.decided {
            Ok(events) => panic!("expected a refusal containing {text:?}, got {events:?}"),
            Err(error) => {
                assert!(error.to_string().contains(text), "expected {text:?} in: {error}");
                error
            }
        }
    }
}

//! The aggregate as two pure functions, and its state as folded from the log.
//!
//! A service's protocol semantics live in [`Aggregate::decide`] (may this command
//! happen, and what does it cause) and [`Aggregate::evolve`] (what an event does to the
//! state). Neither does I/O, so both are tested exhaustively without a server; the shell
//! ([`crate::Executor`]) loads, decides and appends around them.

use std::collections::VecDeque;

use osp_protocol::{Envelope, EventPayload, Timestamp};

use osp_eventlog::{Head, Recorded};

/// One aggregate type of a service: a run, a registry entry, a context scope.
pub trait Aggregate: Clone + Default + Send + Sync + 'static {
    /// What can happen to it.
    type Event: EventPayload + Clone + Send + Sync + 'static;
    /// What may be asked of it.
    type Command: Send + Sync;

    /// Applies one event. Never fails and never decides: an event is a fact.
    fn evolve(&mut self, event: &Envelope<Self::Event>);

    /// Decides what `command` causes in this state: the events to append (none when
    /// there is nothing to do), or the reason it is refused, naming the field at fault.
    fn decide(&self, command: &Self::Command, now: Timestamp) -> Result<Vec<Self::Event>, osp_protocol::Error>;
}

/// How many recent causes an aggregate remembers to recognise a command it has
/// already applied (a redelivery after the dedupe window, or after a crash between
/// append and acknowledgement).
pub const REMEMBERED_CAUSES: usize = 64;

/// An aggregate's state folded from its events, with what the shell needs to append
/// after them: the head, and the commands that caused its latest events. It serialises
/// whole (for snapshots) when its state does.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Folded<A> {
    /// What `evolve` made of every event up to `head`.
    pub state: A,
    /// Where its history ends.
    pub head: Head,
    causes: VecDeque<(String, u64)>,
}

impl<A: Aggregate> Folded<A> {
    /// The state after `events`, oldest first.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Recorded<A::Event>>) -> Folded<A> {
        let mut folded = Folded::default();
        for event in events {
            folded.apply(event);
        }
        folded
    }

    /// Applies the next event of this aggregate.
    pub fn apply(&mut self, event: &Recorded<A::Event>) {
        self.state.evolve(&event.envelope);
        self.head = Head::after(event);
        if let Some(cause) = &event.envelope.causation_id {
            match self.causes.back_mut() {
                // The next event of the same decision: remember where the decision ends.
                Some((last, seq)) if last == cause => *seq = event.seq,
                _ => {
                    if self.causes.len() == REMEMBERED_CAUSES {
                        self.causes.pop_front();
                    }
                    self.causes.push_back((cause.clone(), event.seq));
                }
            }
        }
    }

    /// The sequence of the last event caused by `command_id`, if it is among the
    /// recent causes: the command was applied already.
    pub fn applied(&self, command_id: &str) -> Option<u64> {
        self.causes.iter().rev().find(|(cause, _)| cause == command_id).map(|(_, seq)| *seq)
    }
}

//! Snapshots: a projection's state saved in JetStream, so an instance starts from the
//! newest one and replays only the events after it.
//!
//! A snapshot is a cache, never the truth. It is an object of the `OSP_SNAPSHOTS` object
//! store (chunked, so a state far larger than a message fits), named
//! `<view>/<shape>/<seq>`, holding a header and the view's state (MessagePack with named
//! fields). The header says which view and which version of its state's shape it is, the
//! log sequence it covers, the subject filters it folded, the last event it applied (its
//! sequence and hash) and a BLAKE3 hash of the state's bytes. A snapshot is used only when
//! every one of these matches: this view and shape, these filters, a covered sequence the
//! log has reached, a last event the log holds with that very hash (so a snapshot of
//! another log, or of a log since rebuilt, is not taken for this one), and a state whose
//! bytes hash right and decode. Any other is ignored with a warning, and the next older
//! one is tried; with none, the view is folded from the first event.
//!
//! A view opts in by serialising its state ([`Snapshot`]); the [`Projection`] saves one
//! every [`Snapshots::every`] events applied (after its start-up replay too, so the next
//! instance need not repeat it) and keeps the newest [`KEPT`] per view and shape.
//!
//! [`Projection`]: crate::Projection

use std::time::Duration;

use async_nats::jetstream::object_store::{self, ObjectMetadata, ObjectStore};
use async_nats::jetstream::stream::StorageType;
use futures::StreamExt;
use osp_protocol::{EventHash, Partitions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::ownership::Share;
use crate::View;
use osp_eventlog::{Error, EventLog, Result};

/// The object store that holds every service's snapshots.
pub const SNAPSHOTS_BUCKET: &str = "OSP_SNAPSHOTS";
/// Snapshots kept per view and shape; older ones are deleted after a new one is saved.
pub const KEPT: usize = 2;
/// What the first bytes of every snapshot say.
const FORMAT: &str = "osp-snapshot";
/// Chunks of the object: under the 1 MiB message limit with room for headers.
const CHUNK_SIZE: usize = 512 * 1024;

/// A view whose state can be saved and restored: opting in is serialising it.
///
/// The state must be the whole of what [`View::apply`] built (indexes may be rebuilt on
/// decode), so that a view restored from a snapshot and then fed the rest of the log is
/// the view folded from the first event.
pub trait Snapshot: View + Serialize + DeserializeOwned {
    /// Names the view's snapshots (`scheduler-runs`): one name per view type.
    const NAME: &'static str;
    /// The version of the state's serialized shape. Bump it whenever the state's types
    /// change: snapshots of another shape are then ignored, never misread.
    const SHAPE: u32;
}

/// A view whose instances may each hold a share of the partitions
/// ([`crate::ownership`]): saved and restored per partition, so an instance gaining a
/// partition starts from that partition's snapshot and the events after it.
pub trait Partitioned: Snapshot {
    /// A view holding (a copy of) what this one holds of the partitions of `share`.
    fn part(&self, share: &Share) -> Self;

    /// Takes in `part`: a view of partitions this one holds nothing of.
    fn absorb(&mut self, part: Self);
}

/// When a projection saves snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshots {
    /// Save one once this many events were applied since the last (0: never save; the
    /// newest valid one is still read at start-up).
    pub every: u64,
    /// Read the newest valid snapshot at start-up (false: always fold from the start).
    pub read: bool,
}

impl Default for Snapshots {
    /// Every 50,000 events: a few seconds of replay saved per snapshot, at the cost of
    /// encoding the state that often.
    fn default() -> Snapshots {
        Snapshots { every: 50_000, read: true }
    }
}

impl Snapshots {
    /// Neither read nor saved: the view is always folded from the first event.
    pub const OFF: Snapshots = Snapshots { every: 0, read: false };

    /// `text` as a service binary's `--snapshot-every` takes it: a number of events
    /// between snapshots (0: never save), or `off` (neither read nor save).
    pub fn parse(text: &str) -> Result<Snapshots> {
        match text.trim() {
            "off" => Ok(Snapshots::OFF),
            number => number.parse().map(|every| Snapshots { every, read: true }).map_err(|_| Error::Definition {
                file: "--snapshot-every".into(),
                reason: format!("{text:?} is not a number of events (or `off`)"),
            }),
        }
    }
}

/// What a snapshot covers: enough to check it against the log and the view reading it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`Snapshot::NAME`].
    pub view: String,
    /// [`Snapshot::SHAPE`].
    pub shape: u32,
    /// Every matching event up to this stream sequence is in the state.
    pub seq: u64,
    /// The subject filters folded.
    pub filters: Vec<String>,
    /// The last event applied: its sequence and the hash of its bytes.
    pub last_event: Option<(u64, EventHash)>,
    /// BLAKE3 of the state's bytes.
    pub state_hash: EventHash,
    /// Length of the state's bytes.
    pub state_len: u64,
}

/// A snapshot's header and the bytes of the state it holds.
pub struct SnapshotBytes {
    /// What it covers.
    pub header: SnapshotHeader,
    /// The state, encoded.
    pub state: Vec<u8>,
}

/// A view restored from a snapshot, and where it ends.
pub struct Restored<V> {
    /// The state.
    pub view: V,
    /// The sequence it covers.
    pub seq: u64,
    /// The last event it applied.
    pub last_event: Option<(u64, EventHash)>,
}

/// The object name of a snapshot: `<view>/<shape>/<seq>` (zero-padded, so names sort as
/// sequences do).
pub fn object_name(view: &str, shape: u32, seq: u64) -> String {
    format!("{view}/{shape}/{seq:020}")
}

/// Reads an object name back: (view, shape, seq), if it is one.
fn parse_name(name: &str) -> Option<(&str, u32, u64)> {
    let mut parts = name.rsplitn(3, '/');
    let seq = parts.next()?.parse().ok()?;
    let shape = parts.next()?.parse().ok()?;
    Some((parts.next()?, shape, seq))
}

/// The last event a view applied: its sequence and the hash of its bytes.
pub type LastEvent = Option<(u64, EventHash)>;

/// Encodes `view` as a snapshot covering `seq` (pure: what [`save`] stores).
pub fn encode<V: Snapshot>(view: &V, seq: u64, filters: &[String], last_event: LastEvent) -> Result<Vec<u8>> {
    encode_as(V::NAME, V::SHAPE, view, seq, filters, last_event)
}

/// The name the snapshots of partition `partition` of `partitions` of view `view` go by,
/// in place of the view's name: `<view>/<P>/<p>`.
pub fn part_name(view: &str, partitions: Partitions, partition: u32) -> String {
    format!("{view}/{partitions}/{partition}")
}

/// Encodes what `view` holds of partition `partition` as that partition's snapshot,
/// covering `seq`.
pub fn encode_part<V: Partitioned>(
    view: &V,
    partitions: Partitions,
    partition: u32,
    seq: u64,
    filters: &[String],
    last_event: LastEvent,
) -> Result<Vec<u8>> {
    let part = view.part(&Share::new(partitions, [partition]));
    encode_as(&part_name(V::NAME, partitions, partition), V::SHAPE, &part, seq, filters, last_event)
}

fn encode_as<V: Serialize>(
    name: &str,
    shape: u32,
    view: &V,
    seq: u64,
    filters: &[String],
    last_event: LastEvent,
) -> Result<Vec<u8>> {
    let state = rmp_serde::to_vec_named(view)
        .map_err(|e| Error::Protocol(osp_protocol::Error::Encode { reason: format!("snapshot of {name}: {e}") }))?;
    let header = SnapshotHeader {
        format: FORMAT.into(),
        view: name.into(),
        shape,
        seq,
        filters: filters.to_vec(),
        last_event,
        state_hash: EventHash::of(&state),
        state_len: state.len() as u64,
    };
    let header = rmp_serde::to_vec_named(&header)
        .map_err(|e| Error::Protocol(osp_protocol::Error::Encode { reason: e.to_string() }))?;
    let mut bytes = Vec::with_capacity(4 + header.len() + state.len());
    bytes.extend_from_slice(&(header.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&state);
    Ok(bytes)
}

/// Splits a stored snapshot into its header and state, checking the state's hash.
pub fn unpack(mut bytes: Vec<u8>) -> Result<SnapshotBytes, String> {
    let header_len = bytes.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let header_len = header_len.ok_or("shorter than its header")?;
    let header_bytes = bytes.get(4..4 + header_len).ok_or("shorter than its header")?;
    let header: SnapshotHeader = rmp_serde::from_slice(header_bytes).map_err(|e| format!("unreadable header: {e}"))?;
    if header.format != FORMAT {
        return Err(format!("not a snapshot (format {:?})", header.format));
    }
    let state = bytes.split_off(4 + header_len);
    if state.len() as u64 != header.state_len || EventHash::of(&state) != header.state_hash {
        return Err(format!(
            "the state's bytes do not match the hash in its header ({} bytes, {} expected)",
            state.len(),
            header.state_len
        ));
    }
    Ok(SnapshotBytes { header, state })
}

/// Checks a snapshot's header against the view reading it; decodes the state.
pub fn decode<V: Snapshot>(snapshot: SnapshotBytes, filters: &[String]) -> Result<Restored<V>, String> {
    decode_as(V::NAME, snapshot, filters)
}

/// [`decode`], of a snapshot going by `name` ([`part_name`]).
fn decode_as<V: Snapshot>(name: &str, snapshot: SnapshotBytes, filters: &[String]) -> Result<Restored<V>, String> {
    let header = &snapshot.header;
    if header.view != name {
        return Err(format!("it is a snapshot of view {:?}, not {name:?}", header.view));
    }
    if header.shape != V::SHAPE {
        return Err(format!("its state has shape {}, this build reads shape {}", header.shape, V::SHAPE));
    }
    if header.filters != filters {
        return Err(format!("it folded {:?}, this view folds {:?}", header.filters, filters));
    }
    let view = rmp_serde::from_slice(&snapshot.state).map_err(|e| format!("its state does not decode: {e}"))?;
    Ok(Restored { view, seq: header.seq, last_event: header.last_event })
}

/// The snapshot store, opened (or created) on the log's server.
pub(crate) async fn store(log: &EventLog) -> Result<ObjectStore> {
    let js = log.jetstream();
    if let Ok(store) = js.get_object_store(SNAPSHOTS_BUCKET).await {
        return Ok(store);
    }
    // As many replicas as the log itself has: a cluster keeps its cache as it keeps its log.
    let replicas = log.replicas();
    let config = object_store::Config {
        bucket: SNAPSHOTS_BUCKET.into(),
        description: Some("OSP projection snapshots: a cache of folded state, never the truth".into()),
        storage: StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    js.create_object_store(config)
        .await
        .map_err(|e| Error::Nats { operation: "create the snapshot store", source: Box::new(e) })
}

/// Saves `bytes` (from [`encode`]) as `view`'s snapshot of `shape` at `seq`, then deletes
/// all but the newest [`KEPT`] of that view and shape.
pub(crate) async fn save(log: &EventLog, view: &str, shape: u32, seq: u64, bytes: &[u8]) -> Result<()> {
    let store = store(log).await?;
    let name = object_name(view, shape, seq);
    let meta = ObjectMetadata { name: name.clone(), chunk_size: Some(CHUNK_SIZE), ..Default::default() };
    let mut reader = bytes;
    store
        .put(meta, &mut reader)
        .await
        .map_err(|e| Error::Nats { operation: "save a snapshot", source: Box::new(e) })?;
    tracing::info!(view, shape, seq, bytes = bytes.len(), "snapshot saved");
    let mut names: Vec<(u64, String)> = list(&store)
        .await?
        .into_iter()
        .filter(|(v, s, _, _)| v == view && *s == shape)
        .map(|(_, _, seq, name)| (seq, name))
        .collect();
    names.sort_unstable_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    for (_, old) in names.into_iter().skip(KEPT) {
        if let Err(error) = store.delete(&old).await {
            tracing::debug!(%error, name = old, "could not delete an old snapshot");
        }
    }
    Ok(())
}

/// Every snapshot in the store: (view, shape, seq, object name).
async fn list(store: &ObjectStore) -> Result<Vec<(String, u32, u64, String)>> {
    let mut objects =
        store.list().await.map_err(|e| Error::Nats { operation: "list snapshots", source: Box::new(e) })?;
    let mut found = Vec::new();
    // The listing ends once it has seen every object; a bound keeps a stuck one from
    // holding a start-up.
    while let Ok(Some(object)) = tokio::time::timeout(Duration::from_secs(5), objects.next()).await {
        let object = object.map_err(|e| Error::Nats { operation: "list snapshots", source: Box::new(e) })?;
        if object.deleted {
            continue;
        }
        if let Some((view, shape, seq)) = parse_name(&object.name) {
            found.push((view.to_owned(), shape, seq, object.name.clone()));
        }
    }
    Ok(found)
}

/// The newest snapshot of `V` that holds up (see the module's doc), or none. Each one
/// passed over is named in a warning with why.
pub(crate) async fn newest_valid<V: Snapshot>(
    log: &EventLog,
    filters: &[String],
    at_most: u64,
) -> Result<Option<Restored<V>>> {
    let store = match log.jetstream().get_object_store(SNAPSHOTS_BUCKET).await {
        Ok(store) => store,
        Err(_) => return Ok(None),
    };
    let mut candidates: Vec<(u64, String)> =
        list(&store).await?.into_iter().filter(|(view, ..)| view == V::NAME).map(|(_, _, seq, n)| (seq, n)).collect();
    candidates.retain(|(seq, name)| {
        let covered = *seq <= at_most;
        if !covered {
            tracing::info!(view = V::NAME, name, at_most, "snapshot ignored: the listing index does not cover it");
        }
        covered
    });
    candidates.sort_unstable_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    let last = log.last_sequence().await?;
    for (_, name) in candidates {
        match read_one::<V>(log, &store, V::NAME, &name, filters, last).await {
            Ok(restored) => {
                tracing::info!(view = V::NAME, seq = restored.seq, name, "starting from a snapshot");
                return Ok(Some(restored));
            }
            Err(why) => tracing::warn!(view = V::NAME, name, %why, "snapshot ignored"),
        }
    }
    Ok(None)
}

/// The newest snapshot that holds up of each of `wanted` partitions of `partitions`
/// covering the log at most up to `at_most`: (partition, its view).
pub(crate) async fn newest_parts<V: Snapshot>(
    log: &EventLog,
    partitions: Partitions,
    wanted: &[u32],
    filters: &[String],
    at_most: u64,
) -> Result<Vec<(u32, Restored<V>)>> {
    let store = match log.jetstream().get_object_store(SNAPSHOTS_BUCKET).await {
        Ok(store) => store,
        Err(_) => return Ok(Vec::new()),
    };
    let stored = list(&store).await?;
    let last = log.last_sequence().await?;
    let mut found = Vec::new();
    for partition in wanted {
        let view = part_name(V::NAME, partitions, *partition);
        let mut candidates: Vec<(u64, &str)> = stored
            .iter()
            .filter(|(name, shape, seq, _)| *name == view && *shape == V::SHAPE && *seq <= at_most)
            .map(|(_, _, seq, object)| (*seq, object.as_str()))
            .collect();
        candidates.sort_unstable_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        for (_, object) in candidates {
            match read_one::<V>(log, &store, &view, object, filters, last).await {
                Ok(restored) => {
                    found.push((*partition, restored));
                    break;
                }
                Err(why) => tracing::warn!(view, object, %why, "snapshot ignored"),
            }
        }
    }
    Ok(found)
}

/// Reads the snapshot `name` of view `view` (its name or a [`part_name`]) and checks it.
async fn read_one<V: Snapshot>(
    log: &EventLog,
    store: &ObjectStore,
    view: &str,
    name: &str,
    filters: &[String],
    last: u64,
) -> Result<Restored<V>, String> {
    let mut object = store.get(name).await.map_err(|e| format!("cannot be read: {e}"))?;
    let mut bytes = Vec::with_capacity(object.info().size);
    object.read_to_end(&mut bytes).await.map_err(|e| format!("cannot be read: {e}"))?;
    let snapshot = unpack(bytes)?;
    let header = &snapshot.header;
    if parse_name(name) != Some((header.view.as_str(), header.shape, header.seq)) {
        return Err(format!(
            "it holds view {:?} shape {} at seq {}, not what its name says",
            header.view, header.shape, header.seq
        ));
    }
    if snapshot.header.seq > last {
        return Err(format!("it covers the log up to seq {}, but the log ends at {last}", snapshot.header.seq));
    }
    if let Some((seq, hash)) = snapshot.header.last_event {
        let stored = log.stored_hash(seq).await.map_err(|e| format!("its last event cannot be checked: {e}"))?;
        if stored != Some(hash) {
            return Err(format!("its last event (seq {seq}) is not the one the log holds there"));
        }
    }
    decode_as::<V>(view, snapshot, filters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use osp_eventlog::Recorded;

    #[derive(Default, Debug, PartialEq, Serialize, Deserialize)]
    struct Sum {
        total: i64,
    }

    osp_protocol::event_payload! {
        #[derive(Clone, Debug, PartialEq)]
        enum SumEvent {
            Added(i64) = ("sum.added", 1),
        }
    }

    impl View for Sum {
        type Event = SumEvent;
        fn apply(&mut self, event: &Recorded<SumEvent>) {
            let SumEvent::Added(by) = event.envelope.payload;
            self.total += by;
        }
    }

    impl Snapshot for Sum {
        const NAME: &'static str = "sum";
        const SHAPE: u32 = 3;
    }

    fn filters() -> Vec<String> {
        vec!["osp.v1.evt.sum.*".to_owned()]
    }

    #[test]
    fn a_snapshot_round_trips_with_what_it_covers() {
        let last = Some((41, EventHash::of(b"event 41")));
        let bytes = encode(&Sum { total: 7 }, 42, &filters(), last).unwrap();
        let snapshot = unpack(bytes).unwrap();
        assert_eq!(snapshot.header.seq, 42);
        assert_eq!(snapshot.header.last_event, last);
        let restored = decode::<Sum>(snapshot, &filters()).unwrap();
        assert_eq!((restored.view, restored.seq), (Sum { total: 7 }, 42));
    }

    #[test]
    fn a_snapshot_that_does_not_match_is_refused_with_why() {
        let bytes = encode(&Sum { total: 7 }, 42, &filters(), None).unwrap();
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(unpack(flipped).err().unwrap().contains("do not match the hash"));
        assert!(unpack(bytes[..bytes.len() - 1].to_vec()).err().unwrap().contains("do not match the hash"));
        assert!(unpack(b"\x00\x00".to_vec()).err().unwrap().contains("shorter than its header"));
        assert!(unpack(b"\x00\x00\x00\x01\xc1".to_vec()).err().unwrap().contains("unreadable header"));
        let other = vec!["osp.v1.evt.other.*".to_owned()];
        let error = decode::<Sum>(unpack(bytes.clone()).unwrap(), &other).err().unwrap();
        assert!(error.contains("this view folds"), "{error}");
        let mut older = unpack(bytes).unwrap();
        older.header.shape = 2;
        let error = decode::<Sum>(older, &filters()).err().unwrap();
        assert_eq!(error, "its state has shape 2, this build reads shape 3");
    }

    #[test]
    fn names_sort_and_read_back_as_sequences() {
        let name = object_name("scheduler-runs", 1, 1_000_000);
        assert_eq!(name, "scheduler-runs/1/00000000000001000000");
        assert_eq!(parse_name(&name), Some(("scheduler-runs", 1, 1_000_000)));
        assert!(object_name("v", 1, 99) < object_name("v", 1, 100));
        assert_eq!(parse_name("not a snapshot"), None);
    }
}

//! A listing index: what a service lists and filters of every aggregate of a kind, kept on
//! local disk and derived from the log, so a listing of all history needs none of it in
//! memory ([`crate::resident`]).
//!
//! One entry per aggregate: the summary a listing shows (encoded by the service) and its
//! *tags*, the filters it can be found by (`status:completed`). Entries are listed in id
//! order, from after an id, optionally under one tag. The projection notes which aggregates
//! the events it applies change, and builds and stages their entries
//! ([`crate::View::indexed`]) once per batch, not once per event; each batch is one redb
//! transaction. A listing writes what is changed first, so it sees every event the view
//! has applied.
//!
//! redb rather than a JetStream KV bucket: a KV bucket would cost a stored write on the
//! servers per change (the writes per run are what a run costs), and has no ordered range
//! reads to page by id under a tag. The index is a cache like a snapshot, rebuilt from the
//! log when missing; it records how far it covers the log, and a snapshot of the view is
//! used only if the index covers it ([`Index::covers`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

/// How often a write is made durable (the others are written without a sync, and a crash
/// loses at most this much, which the log gives back).
const SYNC_EVERY: Duration = Duration::from_secs(5);
/// Memory redb may cache pages in: little, since the resident memory of an instance must
/// not grow with history (the operating system caches the file too).
const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// id → (tags, summary), MessagePack.
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
/// (tag, id) → nothing: the ids under each tag, in order.
const TAGGED: TableDefinition<(&str, &str), ()> = TableDefinition::new("tagged");
/// `covers` → the log sequence the index covers.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// What the index holds of one aggregate.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Indexed {
    /// The filters it is found by.
    pub tags: Vec<String>,
    /// What a listing shows of it, encoded by the service.
    pub summary: Vec<u8>,
    /// The log sequence of the aggregate's last event it shows: an entry is never replaced
    /// by one showing an earlier state (a partition's history folded again, in the
    /// background, after its later events: [`crate::Projection`]). Set by the projection.
    #[serde(default)]
    seq: u64,
}

impl Indexed {
    pub fn new(tags: Vec<String>, summary: Vec<u8>) -> Indexed {
        Indexed { tags, summary, seq: 0 }
    }
}

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
#[error("the listing index {path}: {reason}")]
pub struct IndexError {
    path: String,
    reason: String,
}

/// A page of summaries, and the id to list after for the next page when there is one.
pub type Page = (Vec<Vec<u8>>, Option<String>);

/// One view's listing index.
pub struct Index {
    db: Database,
    path: String,
    /// What the view has staged since the last write. Held only briefly: the view stages
    /// under its own write lock.
    staged: Mutex<Staged>,
    /// Held while a batch is written: one write at a time, and a listing (which writes
    /// first) reads only after every batch taken before it is in.
    writing: Mutex<Written>,
    /// The folder of an index kept only for the life of the process.
    _temporary: Option<tempfile::TempDir>,
}

#[derive(Default)]
struct Staged {
    entries: BTreeMap<String, Indexed>,
    /// The view had applied the log up to here when it last staged or advanced.
    covers: u64,
}

#[derive(Default)]
struct Written {
    /// What the last write recorded as covered.
    covers: u64,
    synced_at: Option<Instant>,
    /// A write since the last sync was not synced.
    unsynced: bool,
}

impl Index {
    /// Opens (or creates) index `name` in folder `dir`; in a temporary folder, removed
    /// when the index is dropped, when `dir` is `None`.
    pub fn open(dir: Option<&Path>, name: &str) -> Result<Index, IndexError> {
        let (temporary, dir) = match dir {
            Some(dir) => (None, dir.to_owned()),
            None => {
                let temporary = tempfile::tempdir().map_err(|e| error(name, e))?;
                let dir = temporary.path().to_owned();
                (Some(temporary), dir)
            }
        };
        std::fs::create_dir_all(&dir).map_err(|e| error(&dir.display().to_string(), e))?;
        let file = dir.join(format!("{name}.redb"));
        let path = file.display().to_string();
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(&file).map_err(|e| error(&path, e))?;
        let index = Index { db, path, staged: Mutex::default(), writing: Mutex::default(), _temporary: temporary };
        let covers = index.covers()?;
        index.staged().covers = covers;
        index.written().covers = covers;
        Ok(index)
    }

    /// How far the index covers the log: every event up to this sequence is in it, on disk.
    pub fn covers(&self) -> Result<u64, IndexError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let meta = match read.open_table(META) {
            Ok(meta) => meta,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(self.error(e)),
        };
        let covers = meta.get("covers").map_err(|e| self.error(e))?.map_or(0, |covers| covers.value());
        Ok(covers)
    }

    /// Empties it: the view is folded again from the first event.
    pub fn clear(&self) -> Result<(), IndexError> {
        let mut written = self.written();
        *self.staged() = Staged::default();
        let write = self.db.begin_write().map_err(|e| self.error(e))?;
        write.delete_table(ENTRIES).map_err(|e| self.error(e))?;
        write.delete_table(TAGGED).map_err(|e| self.error(e))?;
        write.delete_table(META).map_err(|e| self.error(e))?;
        write.commit().map_err(|e| self.error(e))?;
        *written = Written::default();
        Ok(())
    }

    /// Stages the entry of aggregate `id`, whose last event is at `seq`, as of the view
    /// having applied the log up to `covers`; unless an entry of a later event is there.
    pub fn stage(&self, id: String, mut entry: Indexed, seq: u64, covers: u64) {
        entry.seq = seq;
        let mut staged = self.staged();
        match staged.entries.get_mut(&id) {
            Some(newer) if newer.seq > seq => {}
            Some(older) => *older = entry,
            None => {
                staged.entries.insert(id, entry);
            }
        }
        staged.covers = staged.covers.max(covers);
    }

    /// The view has applied the log up to `covers`, with nothing to stage.
    pub fn advance(&self, covers: u64) {
        let mut staged = self.staged();
        staged.covers = staged.covers.max(covers);
    }

    /// Writes what is staged in one transaction; synced to disk when `durable` (before a
    /// snapshot that relies on it) or when the last sync is [`SYNC_EVERY`] old. Staged
    /// entries that could not be written stay staged.
    pub fn flush(&self, durable: bool) -> Result<(), IndexError> {
        let mut written = self.written();
        let (entries, covers) = {
            let mut staged = self.staged();
            (std::mem::take(&mut staged.entries), staged.covers)
        };
        let sync = durable || written.synced_at.is_none_or(|at| at.elapsed() >= SYNC_EVERY);
        if entries.is_empty() && covers == written.covers && !(sync && written.unsynced) {
            return Ok(());
        }
        if let Err(error) = self.write(&entries, covers, sync) {
            let mut staged = self.staged();
            for (id, entry) in entries {
                staged.entries.entry(id).or_insert(entry);
            }
            return Err(error);
        }
        written.covers = covers;
        written.unsynced = !sync;
        if sync {
            written.synced_at = Some(Instant::now());
        }
        Ok(())
    }

    fn write(&self, staged: &BTreeMap<String, Indexed>, covers: u64, sync: bool) -> Result<(), IndexError> {
        let mut write = self.db.begin_write().map_err(|e| self.error(e))?;
        if !sync {
            write.set_durability(Durability::None).map_err(|e| self.error(e))?;
        }
        {
            let mut entries = write.open_table(ENTRIES).map_err(|e| self.error(e))?;
            let mut tagged = write.open_table(TAGGED).map_err(|e| self.error(e))?;
            for (id, entry) in staged {
                let old: Option<Indexed> = match entries.get(id.as_str()).map_err(|e| self.error(e))? {
                    Some(bytes) => Some(rmp_serde::from_slice(bytes.value()).map_err(|e| self.error(e))?),
                    None => None,
                };
                if old.as_ref().is_some_and(|old| old == entry || old.seq > entry.seq) {
                    continue;
                }
                for tag in old.iter().flat_map(|old| &old.tags).filter(|tag| !entry.tags.contains(tag)) {
                    tagged.remove((tag.as_str(), id.as_str())).map_err(|e| self.error(e))?;
                }
                for tag in &entry.tags {
                    tagged.insert((tag.as_str(), id.as_str()), ()).map_err(|e| self.error(e))?;
                }
                let bytes = rmp_serde::to_vec(entry).map_err(|e| self.error(e))?;
                entries.insert(id.as_str(), bytes.as_slice()).map_err(|e| self.error(e))?;
            }
            let mut meta = write.open_table(META).map_err(|e| self.error(e))?;
            meta.insert("covers", covers).map_err(|e| self.error(e))?;
        }
        write.commit().map_err(|e| self.error(e))
    }

    /// Up to `limit` summaries in id order, after `after`, under `tag` (every entry when
    /// `None`) and kept by `keep` (given the id and the summary).
    pub fn page(
        &self,
        tag: Option<&str>,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&str, &[u8]) -> bool,
    ) -> Result<Page, IndexError> {
        self.flush(false)?;
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let (entries, tagged) = match (read.open_table(ENTRIES), read.open_table(TAGGED)) {
            (Ok(entries), Ok(tagged)) => (entries, tagged),
            (Err(redb::TableError::TableDoesNotExist(_)), _) | (_, Err(redb::TableError::TableDoesNotExist(_))) => {
                return Ok((Vec::new(), None))
            }
            (Err(e), _) | (_, Err(e)) => return Err(self.error(e)),
        };
        let mut page: Vec<(String, Vec<u8>)> = Vec::new();
        // Adds the entry to the page if kept; false once the page is full and another
        // entry is kept: there is a next page.
        let mut add = |id: &str, bytes: &[u8]| -> Result<bool, IndexError> {
            let entry: Indexed = rmp_serde::from_slice(bytes).map_err(|e| self.error(e))?;
            if !keep(id, &entry.summary) {
                return Ok(true);
            }
            if page.len() == limit {
                return Ok(false);
            }
            page.push((id.to_owned(), entry.summary));
            Ok(true)
        };
        let mut more = false;
        let after_id = after.unwrap_or("");
        match tag {
            Some(tag) => {
                for item in tagged.range((tag, after_id)..).map_err(|e| self.error(e))? {
                    let (key, _) = item.map_err(|e| self.error(e))?;
                    let (key_tag, id) = key.value();
                    if key_tag != tag {
                        break;
                    }
                    let Some(bytes) = entries.get(id).map_err(|e| self.error(e))? else { continue };
                    if Some(id) != after && !add(id, bytes.value())? {
                        more = true;
                        break;
                    }
                }
            }
            None => {
                for item in entries.range(after_id..).map_err(|e| self.error(e))? {
                    let (key, bytes) = item.map_err(|e| self.error(e))?;
                    let id = key.value();
                    if Some(id) != after && !add(id, bytes.value())? {
                        more = true;
                        break;
                    }
                }
            }
        }
        let next = if more { page.last().map(|(id, _)| id.clone()) } else { None };
        Ok((page.into_iter().map(|(_, summary)| summary).collect(), next))
    }

    fn staged(&self) -> MutexGuard<'_, Staged> {
        self.staged.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn written(&self) -> MutexGuard<'_, Written> {
        self.writing.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn error(&self, reason: impl std::fmt::Display) -> IndexError {
        error(&self.path, reason)
    }
}

fn error(path: &str, reason: impl std::fmt::Display) -> IndexError {
    IndexError { path: path.to_owned(), reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tags: &[&str], summary: &str) -> Indexed {
        Indexed::new(tags.iter().map(|tag| (*tag).to_owned()).collect(), summary.as_bytes().to_vec())
    }

    fn texts((page, next): Page) -> (Vec<String>, Option<String>) {
        (page.into_iter().map(|bytes| String::from_utf8(bytes).unwrap()).collect(), next)
    }

    #[test]
    fn pages_in_id_order_under_a_tag_follow_each_entrys_latest_tags() {
        let index = Index::open(None, "test").unwrap();
        for (n, id) in ["r1", "r2", "r3", "r4", "r5"].into_iter().enumerate() {
            index.stage(
                id.to_owned(),
                entry(&["status:running"], &format!("{id} running")),
                n as u64 + 1,
                n as u64 + 1,
            );
        }
        index.stage("r2".into(), entry(&["status:done"], "r2 done"), 6, 6);
        index.stage("r4".into(), entry(&["status:done"], "r4 done"), 7, 7);
        let all = |tag, after, limit| texts(index.page(tag, after, limit, |_, _| true).unwrap());

        assert_eq!(all(Some("status:done"), None, 10), (vec!["r2 done".into(), "r4 done".into()], None));
        assert_eq!(
            all(Some("status:running"), None, 2),
            (vec!["r1 running".into(), "r3 running".into()], Some("r3".into())),
            "r2 is no longer running"
        );
        assert_eq!(all(Some("status:running"), Some("r3"), 2), (vec!["r5 running".into()], None));
        assert_eq!(all(None, Some("r1"), 2), (vec!["r2 done".into(), "r3 running".into()], Some("r3".into())));
        assert_eq!(all(Some("status:unknown"), None, 2), (vec![], None));
        let kept = texts(index.page(None, None, 10, |_, summary| summary.ends_with(b"done")).unwrap());
        assert_eq!(kept, (vec!["r2 done".into(), "r4 done".into()], None));
    }

    #[test]
    fn it_covers_what_was_flushed_survives_a_reopen_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = Index::open(Some(dir.path()), "test").unwrap();
            index.stage("a".into(), entry(&["x"], "a"), 10, 10);
            index.advance(12);
            assert_eq!(index.covers().unwrap(), 0, "nothing written yet");
            index.flush(true).unwrap();
            assert_eq!(index.covers().unwrap(), 12);
        }
        let index = Index::open(Some(dir.path()), "test").unwrap();
        assert_eq!(index.covers().unwrap(), 12);
        assert_eq!(texts(index.page(Some("x"), None, 5, |_, _| true).unwrap()).0, vec!["a".to_owned()]);
        index.clear().unwrap();
        assert_eq!(index.covers().unwrap(), 0);
        assert_eq!(texts(index.page(None, None, 5, |_, _| true).unwrap()).0, Vec::<String>::new());
    }

    #[test]
    fn an_entry_is_never_replaced_by_one_of_an_earlier_event() {
        let index = Index::open(None, "test").unwrap();
        let listed = |index: &Index| texts(index.page(None, None, 5, |_, _| true).unwrap()).0;
        index.stage("a".into(), entry(&["done"], "a done"), 9, 9);
        index.stage("a".into(), entry(&["running"], "a running"), 4, 9);
        assert_eq!(listed(&index), vec!["a done".to_owned()], "staged together");
        index.stage("a".into(), entry(&["running"], "a running"), 4, 9);
        index.flush(false).unwrap();
        assert_eq!(listed(&index), vec!["a done".to_owned()], "staged after the later one was written");
        assert!(texts(index.page(Some("running"), None, 5, |_, _| true).unwrap()).0.is_empty());
        index.stage("a".into(), entry(&["reopened"], "a reopened"), 12, 12);
        assert_eq!(listed(&index), vec!["a reopened".to_owned()]);
    }
}

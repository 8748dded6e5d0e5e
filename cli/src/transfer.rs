//! `osp log export` and `osp log import`: a run (with its descendants) or the whole log
//! as a portable file, and back into an empty server, with the same bytes and so the same
//! hashes.
//!
//! The file is NDJSON. The first line says what it is:
//! `{"format": "osp-log-export", "version": 1, "exported_at", "what": "log" | "run:<id>",
//! "events", "first_seq", "last_seq"}`. Each further line is one event, in log order:
//! `{"seq", "subject", "stored_at", "type", "hash", "msgpack"}`, where `msgpack` is the
//! event's stored bytes in base64 (exactly as stored, so `hash` — BLAKE3 of those bytes —
//! and every `prev_hash` link hold after an import) and `type` is there for people
//! reading the file. An export holds whole aggregates: every event of each aggregate it
//! names, so every hash chain in it is complete.
//!
//! An import checks the file first (each line's hash, then every chain), then appends the
//! events in order to an empty log (a log that holds events is refused: the imported
//! history must not interleave with another). Imported whole, the log gets back its very
//! sequences, and services started on it reach the very states they had.

use std::future::IntoFuture;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use osp_eventlog::{ChainVerifier, EventLog, FromStored, LogItem, Recorded, Start, StoredMessage};
use osp_protocol::subject::ALL_EVENTS;
use osp_protocol::{AnyPayload, EventHash, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{connect, output};

/// What the file's first line says.
const FORMAT: &str = "osp-log-export";
/// The version of the format this build writes and reads.
const VERSION: u32 = 1;
/// Appends in flight during an import.
const IN_FLIGHT: usize = 1024;

/// Options of `osp log export`.
#[derive(Args)]
pub struct ExportArgs {
    /// Export this run and its descendants (its whole tree, as `osp replay run` reads
    /// it); without it, the whole log.
    #[arg(long, value_name = "RUN_ID")]
    run: Option<String>,
    /// Write to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Options of `osp log import`.
#[derive(Args)]
pub struct ImportArgs {
    /// A file written by `osp log export`.
    pub file: PathBuf,
}

/// The first line of an export.
#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    /// Always `osp-log-export`.
    pub format: String,
    /// The format's version.
    pub version: u32,
    /// When it was written.
    pub exported_at: String,
    /// `log`, or `run:<id>`.
    pub what: String,
    /// Events in the file.
    pub events: u64,
    /// The first event's sequence in the log it came from.
    pub first_seq: u64,
    /// The last one's.
    pub last_seq: u64,
}

/// One event of an export.
#[derive(Debug, Serialize, Deserialize)]
pub struct Line {
    /// Its sequence in the log it came from.
    pub seq: u64,
    /// Where it was stored (`osp.v1.evt.<kind>.<id>`); an import publishes it there again.
    pub subject: String,
    /// When that log stored it.
    pub stored_at: String,
    /// Its type, for people reading the file.
    #[serde(rename = "type")]
    pub event_type: String,
    /// BLAKE3 of its bytes, hex.
    pub hash: String,
    /// Its bytes as stored, base64.
    pub msgpack: String,
}

impl Line {
    /// The line of a stored event.
    fn of(message: &StoredMessage) -> Line {
        let event_type = Recorded::<AnyPayload>::from_stored(message)
            .map_or_else(|_| "(malformed)".to_owned(), |event| event.envelope.payload.event_type);
        Line {
            seq: message.seq,
            subject: message.subject.clone(),
            stored_at: message.stored_at.to_rfc3339(),
            event_type,
            hash: EventHash::of(&message.payload).to_hex(),
            msgpack: base64::engine::general_purpose::STANDARD.encode(&message.payload),
        }
    }

    /// The stored event it holds, its bytes checked against its hash.
    fn stored(&self) -> Result<StoredMessage, String> {
        let payload =
            base64::engine::general_purpose::STANDARD.decode(&self.msgpack).map_err(|e| format!("msgpack: {e}"))?;
        if EventHash::of(&payload).to_hex() != self.hash {
            return Err("its bytes do not hash to its hash".into());
        }
        Ok(StoredMessage {
            seq: self.seq,
            subject: self.subject.clone(),
            stored_at: Timestamp::default(),
            payload: payload.into(),
        })
    }
}

/// Runs `osp log export`.
pub async fn export(args: ExportArgs, url: &str) -> anyhow::Result<ExitCode> {
    let log = connect::event_log(url).await?;
    let (what, messages) = match &args.run {
        Some(run) => (format!("run:{run}"), crate::replay::run_tree(&log, run).await?.stored),
        None => ("log".to_owned(), whole_log(&log).await?),
    };
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        exported_at: Timestamp::now().to_rfc3339(),
        what,
        events: messages.len() as u64,
        first_seq: messages.first().map_or(0, |m| m.seq),
        last_seq: messages.last().map_or(0, |m| m.seq),
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    writeln!(out, "{}", serde_json::to_string(&header)?)?;
    let bar = output::progress(messages.len() as u64, "writing");
    for message in &messages {
        writeln!(out, "{}", serde_json::to_string(&Line::of(message))?)?;
        bar.inc(1);
    }
    out.flush()?;
    bar.finish_and_clear();
    if let Some(path) = &args.output {
        eprintln!("exported {} events ({}) to {}", header.events, header.what, path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Every event of the log, in order.
async fn whole_log(log: &EventLog) -> anyhow::Result<Vec<StoredMessage>> {
    let mut follow = log.follow::<StoredMessage>(ALL_EVENTS, Start::All).await?;
    let bar = output::progress(follow.pending(), "reading the log");
    let mut messages = Vec::new();
    while let Some(item) = follow.next().await {
        match item? {
            LogItem::Event(message) => {
                messages.push(message);
                bar.inc(1);
            }
            LogItem::Malformed(_) => {}
            LogItem::CaughtUp(_) => break,
        }
    }
    bar.finish_and_clear();
    Ok(messages)
}

/// Reads an export: its header and events, every line and chain checked.
pub fn read(path: &Path) -> anyhow::Result<(Header, Vec<StoredMessage>)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut lines = std::io::BufReader::new(file).lines();
    let first = lines.next().context("the file is empty")??;
    let header: Header = serde_json::from_str(&first).context("line 1 is not an export's header")?;
    if header.format != FORMAT || header.version != VERSION {
        bail!(
            "not an export this build reads: format {:?} version {} (expected {FORMAT:?} {VERSION})",
            header.format,
            header.version
        );
    }
    let mut messages = Vec::with_capacity(header.events as usize);
    let mut chains = ChainVerifier::new();
    for (number, line) in lines.enumerate() {
        let at = number + 2;
        let line: Line = serde_json::from_str(&line?).with_context(|| format!("line {at} is not an event"))?;
        let message = line.stored().map_err(|why| anyhow::anyhow!("line {at} (seq {}): {why}", line.seq))?;
        chains.observe(&message);
        messages.push(message);
    }
    if messages.len() as u64 != header.events {
        bail!("the file holds {} events; its header says {}", messages.len(), header.events);
    }
    let report = chains.finish();
    if !report.is_clean() {
        let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        bail!("the file's hash chains do not hold:\n  {}", problems.join("\n  "));
    }
    Ok((header, messages))
}

/// Runs `osp log import`.
pub async fn import(args: ImportArgs, url: &str) -> anyhow::Result<ExitCode> {
    let (header, messages) = read(&args.file)?;
    // A server of its own may be new: the streams are created as a service would.
    let log = EventLog::start(connect::client(url).await?, &osp_eventlog::Definitions::builtin())
        .await
        .with_context(|| format!("opening the OSP event log on {url}"))?;
    let held = log.last_sequence().await?;
    if held > 0 {
        bail!("the log on {url} is not empty (it holds events up to seq {held}): import into a server of its own, e.g. `osp dev --data <new folder>`");
    }
    let bar = output::progress(messages.len() as u64, "importing");
    let mut acks: FuturesOrdered<<PublishAckFuture as IntoFuture>::IntoFuture> = FuturesOrdered::new();
    let (mut same_seqs, mut imported) = (true, 0u64);
    let mut check = |seq: u64, original: u64| {
        same_seqs &= seq == original;
        imported += 1;
    };
    let mut originals = messages.iter().map(|m| m.seq);
    for message in &messages {
        let id = Recorded::<AnyPayload>::from_stored(message).map(|event| event.envelope.id.to_string()).ok();
        let mut publish = PublishMessage::build().payload(Bytes::clone(&message.payload));
        if let Some(id) = id {
            publish = publish.message_id(id);
        }
        acks.push_back(log.jetstream().send_publish(message.subject.clone(), publish).await?.into_future());
        if acks.len() >= IN_FLIGHT {
            let ack = acks.next().await.expect("an ack in flight")?;
            check(ack.sequence, originals.next().unwrap_or_default());
            bar.inc(1);
        }
    }
    while let Some(ack) = acks.next().await {
        check(ack?.sequence, originals.next().unwrap_or_default());
        bar.inc(1);
    }
    bar.finish_and_clear();
    // The file's own words when its time does not read (it was written by hand, say).
    let exported = match header.exported_at.parse::<jiff::Timestamp>() {
        Ok(at) => crate::clock::time(Timestamp(at.as_millisecond())),
        Err(_) => header.exported_at.clone(),
    };
    println!(
        "imported {imported} events ({}, exported {exported}); {}",
        header.what,
        match same_seqs {
            true => "every event has its original sequence",
            false => "sequences differ from the original log (a part of it was exported); hashes are the same",
        }
    );
    Ok(ExitCode::SUCCESS)
}

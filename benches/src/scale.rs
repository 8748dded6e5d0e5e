//! `osp bench scale`: what an `osp-scheduler` process holds in memory as runs go through
//! it, with ended runs leaving memory after `--keep-finished`, next to the same binary
//! keeping every run (`--keep-finished` of a year), in the same run of the benchmark.
//!
//! Each instance is its own process (the `osp-scheduler` beside `osp-bench`), on a
//! nats-server of its own; its resident memory (`VmRSS`) is read at checkpoints, once
//! every run so far has ended and the grace period has passed. Runs are single tasks whose
//! agent (in this process) answers a `--output-bytes` output at once, `--in-flight` at a
//! time. Before them, `--active` runs are submitted that wait for an approval (and stay in
//! memory throughout), to measure what a run in hand costs.
//!
//! Then the CPU a run costs as instances are added: rows of `--instances` processes
//! sharing the runs in `--partitions` (each folding only its partitions' events), each on
//! a fresh server, after a row of one instance holding every run, all measured alike: the
//! runs' wall clock, and each instance's CPU time (`/proc/<pid>/stat`) over the runs.
//!
//! Last, the takeover of a dead instance's partitions: of 3 instances sharing them, one is
//! killed with SIGKILL (it gives nothing up, so its leases must lapse), and the time until
//! every partition it owned has a new owner in the leases bucket is noted; a fresh
//! instance takes its place, `--takeovers` times, with `--takeover-load` runs in flight
//! throughout.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream::kv;
use clap::Args;
use futures::stream::{self, StreamExt, TryStreamExt};
use osp_client::{Agent, Client, Submission, Task, TaskFailure, Worker};
use osp_protocol::scheduler::queries::{ListQuery, RunStatus};
use osp_protocol::scheduler::{RunOptions, SERVICE};
use osp_protocol::Partitions;
use osp_runtime::ownership::LEASES_BUCKET;
use serde_json::json;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Options of `osp bench scale`.
#[derive(Args)]
pub struct ScaleArgs {
    /// Runs through the instance that lets ended runs go.
    #[arg(long, default_value_t = 200_000)]
    runs: u64,
    /// Runs through the instance that keeps every run (the baseline).
    #[arg(long, default_value_t = 10_000)]
    baseline_runs: u64,
    /// Memory is read after this many runs, then at every tenfold, and at the end.
    #[arg(long, default_value_t = 10_000)]
    first: u64,
    /// Bytes of each run's output.
    #[arg(long, default_value_t = 4096)]
    output_bytes: usize,
    /// Runs submitted and not ended yet.
    #[arg(long, default_value_t = 128)]
    in_flight: usize,
    /// Runs kept waiting for an approval, to measure a run in hand.
    #[arg(long, default_value_t = 10_000)]
    active: u64,
    /// How long ended runs stay in memory in the measured instance.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    keep_finished: Duration,
    /// Instances of each row of CPU per run, comma-separated (empty: no rows), sharing the
    /// runs in `--partitions`. A row of one instance holding every run, without
    /// partitions, comes first as the baseline.
    #[arg(long, default_value = "1,2,4", value_parser = parse_counts)]
    instances: Counts,
    /// Partitions the instances share the runs in.
    #[arg(long, default_value = "16")]
    partitions: Partitions,
    /// Runs through each row of instances.
    #[arg(long, default_value_t = 20_000)]
    scale_runs: u64,
    /// Takeovers measured: one of 3 instances sharing `--partitions` killed (SIGKILL), until
    /// the others own its partitions, then replaced (0: none).
    #[arg(long, default_value_t = 5)]
    takeovers: usize,
    /// Runs kept in flight throughout the takeovers, so they happen under load (0: none).
    #[arg(long, default_value_t = 16)]
    takeover_load: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Numbers of instances, as `--instances` lists them.
#[derive(Clone, Debug)]
struct Counts(Vec<usize>);

fn parse_counts(text: &str) -> Result<Counts, String> {
    let counts = text.split(',').map(str::trim).filter(|count| !count.is_empty()).map(|count| match count.parse() {
        Ok(0) | Err(_) => Err(format!("{count:?} is not a number of instances (1 or more)")),
        Ok(count) => Ok(count),
    });
    counts.collect::<Result<_, _>>().map(Counts)
}

const CAPABILITY: &str = "bench-scale";
const AGENT: &str = "bench-scale-agent";
/// The baseline's grace period: longer than any benchmark.
const KEEP_ALL: &str = "8760h";

/// How the `osp-scheduler` processes of a setup are started.
#[derive(Clone)]
struct Launch {
    binary: PathBuf,
    /// `--keep-finished`, as the scheduler reads it.
    keep_finished: String,
    /// `--partitions`, or none: each instance holds every run.
    partitions: Option<Partitions>,
}

impl Launch {
    fn partitioned(&self, partitions: Partitions) -> Launch {
        Launch { partitions: Some(partitions), ..self.clone() }
    }
}

/// An `osp-scheduler` process, killed when dropped.
struct Instance {
    child: Child,
    /// Its name among the members sharing partitions, as written in the leases.
    member: Option<String>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Instance {
    fn start(launch: &Launch, url: &str) -> anyhow::Result<Instance> {
        let partitions = launch.partitions.map(|p| p.to_string());
        let child = Command::new(&launch.binary)
            .args(["--nats-url", url, "--keep-finished", &launch.keep_finished, "--snapshot-every", "off"])
            .args(partitions.iter().flat_map(|p| ["--partitions", p]))
            .env("OSP_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", launch.binary.display()))?;
        Ok(Instance { child, member: None })
    }

    /// Resident memory, in bytes.
    fn resident(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .context("no VmRSS in the process status")?;
        Ok(kib * 1024)
    }

    /// CPU time used so far, user and system: `utime` and `stime` of `/proc/<pid>/stat`.
    fn cpu(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // The command name, in parentheses, may hold spaces: count the fields after it,
        // from the state (field 3); utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        let ticks = |field: usize| fields.get(field - 3).and_then(|ticks| ticks.parse::<u64>().ok());
        let (user, system) = ticks(14).zip(ticks(15)).context("no CPU times in the process stat")?;
        Ok(Duration::from_micros((user + system) * 1_000_000 / clock_ticks()))
    }
}

/// The unit of the CPU times in `/proc`, clock ticks per second: what
/// `sysconf(_SC_CLK_TCK)` answers, which it reads from the process's auxiliary vector
/// (`AT_CLKTCK`). Read here from `/proc/self/auxv`, as osp-bench does not depend on
/// `libc`; 100, the kernel's value on common configurations, if it cannot be read.
fn clock_ticks() -> u64 {
    const AT_CLKTCK: usize = 17;
    const WORD: usize = std::mem::size_of::<usize>();
    let word = |bytes: &[u8]| usize::from_ne_bytes(bytes.try_into().expect("a word"));
    let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
    let mut pairs = auxv.chunks_exact(2 * WORD).map(|pair| (word(&pair[..WORD]), word(&pair[WORD..])));
    pairs.find(|(key, _)| *key == AT_CLKTCK).map_or(100, |(_, ticks)| ticks.max(1) as u64)
}

/// The scheduler's keys in the leases bucket, as this process last heard them.
#[derive(Clone, Debug, Default)]
struct Table {
    members: BTreeSet<String>,
    /// The owner of each partition with one.
    owners: BTreeMap<u32, Owner>,
}

/// A partition's owner, and when this process heard it became the owner (its renewals
/// leave that as it was): a takeover's end, however late a wait on the table is woken.
#[derive(Clone, Debug)]
struct Owner {
    member: String,
    since: Instant,
}

impl Table {
    /// Takes in a change of the bucket (a deletion or an expiry leaves a marker, which is
    /// no `Put`).
    fn note(&mut self, entry: &kv::Entry) {
        let Some(rest) = entry.key.strip_prefix(SERVICE).and_then(|rest| rest.strip_prefix('.')) else { return };
        let present = entry.operation == kv::Operation::Put;
        if let Some(member) = rest.strip_prefix("member.") {
            match present {
                true => self.members.insert(member.to_owned()),
                false => self.members.remove(member),
            };
        } else if let Some(partition) = rest.strip_prefix("part.").and_then(|p| p.parse().ok()) {
            match present {
                true => self.own(partition, String::from_utf8_lossy(&entry.value).into_owned()),
                false => drop(self.owners.remove(&partition)),
            };
        }
    }

    fn own(&mut self, partition: u32, member: String) {
        if self.owner(partition) != Some(member.as_str()) {
            self.owners.insert(partition, Owner { member, since: Instant::now() });
        }
    }

    fn owner(&self, partition: u32) -> Option<&str> {
        self.owners.get(&partition).map(|owner| owner.member.as_str())
    }

    /// Every partition is owned by one of `members`, each holding its even share (the
    /// partitions over the members, rounded down or up), as the plan of the instances
    /// has it once it settled.
    fn spread_over(&self, members: &BTreeSet<String>, partitions: Partitions) -> bool {
        let mut held: BTreeMap<&str, u32> = members.iter().map(|member| (member.as_str(), 0)).collect();
        for partition in partitions.all() {
            match self.owner(partition).and_then(|owner| held.get_mut(owner)) {
                Some(count) => *count += 1,
                None => return false,
            }
        }
        let count = members.len().max(1) as u32;
        let even = partitions.count() / count..=partitions.count().div_ceil(count);
        held.values().all(|held| even.contains(held))
    }
}

/// Follows the leases bucket, keeping [`Table`] up to date.
struct Leases {
    table: watch::Receiver<Table>,
    follower: JoinHandle<()>,
}

impl Drop for Leases {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl Leases {
    /// Follows the scheduler's leases, once the bucket exists (the first instance
    /// sharing partitions creates it).
    async fn follow(url: &str) -> anyhow::Result<Leases> {
        let js = async_nats::jetstream::new(osp_cli::connect::client(url).await?);
        let started = Instant::now();
        let store = loop {
            match js.get_key_value(LEASES_BUCKET).await {
                Ok(store) => break store,
                Err(error) if started.elapsed() > READY_WITHIN => bail!("no bucket {LEASES_BUCKET}: {error}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let mut entries = store.watch_with_history(format!("{SERVICE}.>")).await?;
        let (changes, table) = watch::channel(Table::default());
        let follower = tokio::spawn(async move {
            while let Some(Ok(entry)) = entries.next().await {
                changes.send_modify(|table| table.note(&entry));
            }
        });
        Ok(Leases { table, follower })
    }

    /// The table as last heard.
    fn now(&self) -> Table {
        self.table.borrow().clone()
    }

    /// Waits until `done` holds of the table, at most `within`; returns the table then.
    async fn until(&self, what: &str, within: Duration, done: impl FnMut(&Table) -> bool) -> anyhow::Result<Table> {
        let mut table = self.table.clone();
        let waited = tokio::time::timeout(within, async { table.wait_for(done).await.map(|table| table.clone()) });
        match waited.await {
            Ok(Ok(table)) => Ok(table),
            Ok(Err(_)) => bail!("the watch of {LEASES_BUCKET} ended, waiting for {what}"),
            Err(_) => bail!("waited {within:?} for {what} in {LEASES_BUCKET}; it has {:?}", self.now()),
        }
    }
}

/// The `osp-scheduler` processes of a setup, all started alike, and the leases they hold
/// when they share partitions.
struct Instances {
    launch: Launch,
    url: String,
    running: Vec<Instance>,
    leases: Option<Leases>,
}

impl Instances {
    fn new(launch: &Launch, url: &str) -> Instances {
        Instances { launch: launch.clone(), url: url.to_owned(), running: Vec::new(), leases: None }
    }

    /// Starts one more instance. Sharing partitions, it returns once the instance has
    /// joined the members: the one new member id is its, which tells the processes apart
    /// in the leases.
    async fn add(&mut self) -> anyhow::Result<()> {
        let known = self.leases.as_ref().map(|leases| leases.now().members).unwrap_or_default();
        let mut instance = Instance::start(&self.launch, &self.url)?;
        if self.launch.partitions.is_some() {
            if self.leases.is_none() {
                self.leases = Some(Leases::follow(&self.url).await?);
            }
            let leases = self.leases.as_ref().expect("followed");
            let joined = leases.until("a new member", READY_WITHIN, |t| !t.members.is_subset(&known)).await?;
            instance.member = joined.members.difference(&known).next().cloned();
        }
        self.running.push(instance);
        Ok(())
    }

    /// The member ids of the running instances.
    fn members(&self) -> BTreeSet<String> {
        self.running.iter().filter_map(|instance| instance.member.clone()).collect()
    }

    /// Returns once the partitions are shared out evenly among the running instances:
    /// the state the figures are measured in, after instances joined or one died.
    async fn spread(&self) -> anyhow::Result<()> {
        let (Some(leases), Some(partitions)) = (&self.leases, self.launch.partitions) else { return Ok(()) };
        let members = self.members();
        let what = format!("{partitions} partitions spread over {} instances", members.len());
        leases.until(&what, READY_WITHIN, |table| table.spread_over(&members, partitions)).await.map(drop)
    }

    /// The CPU time each instance has used so far.
    fn cpu(&self) -> anyhow::Result<Vec<Duration>> {
        self.running.iter().map(Instance::cpu).collect()
    }

    /// Kills the oldest instance with SIGKILL, so it gives nothing up and its leases must
    /// lapse; returns how long until every partition it owned had another owner, as
    /// heard here.
    async fn kill_oldest(&mut self) -> anyhow::Result<Duration> {
        let leases = self.leases.as_ref().context("a takeover needs instances sharing partitions")?;
        if self.running.is_empty() {
            bail!("no instance to kill");
        }
        let mut oldest = self.running.remove(0);
        let member = oldest.member.clone().context("the member id of the instance to kill is unknown")?;
        let table = leases.now();
        let owned: Vec<u32> = table.owners.iter().filter(|(_, o)| o.member == member).map(|(p, _)| *p).collect();
        if owned.is_empty() {
            bail!("the instance to kill owns no partition");
        }
        oldest.child.kill()?;
        let killed = Instant::now();
        let what = format!("partitions {owned:?} of the killed member {member} taken over");
        let others_own = |table: &Table| owned.iter().all(|p| table.owner(*p).is_some_and(|owner| owner != member));
        let taken = leases.until(&what, TAKEOVER_WITHIN, others_own).await?;
        let last = owned.iter().filter_map(|p| taken.owners.get(p)).map(|owner| owner.since).max();
        Ok(last.map_or(Duration::ZERO, |last| last.saturating_duration_since(killed)))
    }

    /// Returns once the scheduler answers a `digest`: with partitions, gathered from
    /// instances whose views hold every partition between them. Each try is cut short:
    /// asked while a partition moves to an instance still starting, a gather waits
    /// seconds for its part before answering that it cannot, where a new try soon succeeds.
    async fn serving(&self, client: &Client) -> anyhow::Result<()> {
        let ready = Instant::now();
        let client = client.clone().with_timeout(Duration::from_secs(1));
        while client.scheduler().digest().await.is_err() {
            if ready.elapsed() > READY_WITHIN {
                bail!("{} did not answer within {READY_WITHIN:?}", self.launch.binary.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// How long a starting scheduler has to answer.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long a takeover may take before the benchmark gives up: the lease's 3 s many
/// times over.
const TAKEOVER_WITHIN: Duration = Duration::from_secs(60);
/// The instances sharing the partitions when one is killed.
const TAKEOVER_INSTANCES: usize = 3;
/// The target: a dead instance's partitions have new owners within this.
const TAKEOVER_TARGET: Duration = Duration::from_secs(5);

/// Run ids waiting for the agent to be called with them.
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

/// What pushes runs through the schedulers: the submitting client, and the runs whose
/// call to the agent is awaited.
#[derive(Clone)]
struct Runner {
    client: Client,
    waiting: Waiting,
}

/// Scheduler processes on a server of their own, with the agent registered and working.
/// The instances are declared first, so they are stopped before the server.
struct Setup {
    instances: Instances,
    runner: Runner,
    /// When the agent was last called.
    calls: Arc<Calls>,
    _worker: Worker,
    _server: osp_local_nats::NatsServer,
}

/// A fresh server with `count` instances started as `launch` says, serving.
async fn setup(launch: &Launch, count: usize, args: &ScaleArgs) -> anyhow::Result<Setup> {
    let (_, server) = crate::start_server().await?;
    let url = server.url();
    let client = register_agent(&url).await?;
    let mut instances = Instances::new(launch, &url);
    for _ in 0..count {
        instances.add().await?;
    }
    instances.spread().await?;
    instances.serving(&client).await?;
    let waiting: Waiting = Arc::default();
    let calls = Arc::new(Calls::default());
    let worker = start_agent(&url, waiting.clone(), calls.clone(), args).await?;
    Ok(Setup { instances, runner: Runner { client, waiting }, calls, _worker: worker, _server: server })
}

/// Registers the benchmark's agent (through a registry in this process, stopped once it
/// has recorded it); returns the client that submits the runs.
async fn register_agent(url: &str) -> anyhow::Result<Client> {
    let registry_config =
        osp_registry::Config { offline_after: Duration::from_secs(3600), ..osp_registry::Config::default() };
    let registry = osp_registry::Registry::start(osp_cli::connect::client(url).await?, registry_config).await?;
    let client = Client::new(osp_cli::connect::client(url).await?).with_actor("service:bench");
    let entry = Agent::builder(AGENT).description("benchmark agent").capabilities([CAPABILITY]).entry()?;
    client.registry().register(&entry).await?;
    registry.shutdown().await;
    Ok(client)
}

/// When the agent was last called: a task dispatched.
struct Calls {
    since: Instant,
    /// Milliseconds after `since`.
    last: AtomicU64,
}

impl Default for Calls {
    fn default() -> Calls {
        Calls { since: Instant::now(), last: AtomicU64::new(0) }
    }
}

impl Calls {
    fn called(&self) {
        self.last.store(self.since.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long since the agent was last called.
    fn quiet_for(&self) -> Duration {
        self.since.elapsed().saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }

    /// Does `work`, and returns with it the longest the agent went without a call from its
    /// start until [`PAUSE_TAIL`] after it ended: the pause in dispatch it caused.
    async fn longest_pause<T>(&self, work: impl std::future::Future<Output = T>) -> (T, Duration) {
        let mut longest = Duration::ZERO;
        let mut sample = tokio::time::interval(Duration::from_millis(5));
        tokio::pin!(work);
        let done = loop {
            tokio::select! {
                done = &mut work => break done,
                _ = sample.tick() => longest = longest.max(self.quiet_for()),
            }
        };
        let tail = Instant::now() + PAUSE_TAIL;
        while Instant::now() < tail {
            sample.tick().await;
            longest = longest.max(self.quiet_for());
        }
        (done, longest)
    }
}

/// How long after a member joined its effect on dispatch is still watched.
const PAUSE_TAIL: Duration = Duration::from_secs(1);

/// The agent, in this process: answers every task at once with `--output-bytes` of
/// output, tells `waiting` it was called, and notes the call in `calls`.
async fn start_agent(url: &str, waiting: Waiting, calls: Arc<Calls>, args: &ScaleArgs) -> anyhow::Result<Worker> {
    let output = "o".repeat(args.output_bytes);
    let worker = Worker::builder(&Client::new(osp_cli::connect::client(url).await?), AGENT)
        .capability(CAPABILITY)
        .max_concurrency(args.in_flight as u32)
        .start(move |task: Task| {
            calls.called();
            if let Some(called) = waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(task.run_id()) {
                let _ = called.send(());
            }
            std::future::ready(Ok::<_, TaskFailure>(json!({"text": output})))
        })
        .await?;
    Ok(worker)
}

impl Runner {
    /// Runs `from..to` through, `in_flight` at a time; returns once every one has ended.
    async fn runs(&self, from: u64, to: u64, in_flight: usize) -> anyhow::Result<()> {
        stream::iter(from..to)
            .map(Ok)
            .try_for_each_concurrent(in_flight, |n| async move {
                let id = format!("run-{n:09}");
                let called = self.expect(&id);
                self.submit(&id, n).await?;
                Runner::called(called).await
            })
            .await?;
        self.settled().await
    }

    /// Notes that run `id` is awaited: returns what hears the agent was called for it.
    fn expect(&self, id: &str) -> oneshot::Receiver<()> {
        let (called, heard) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_owned(), called);
        heard
    }

    async fn submit(&self, id: &str, n: u64) -> osp_client::Result<()> {
        self.client.scheduler().submit(&Submission::new(CAPABILITY, json!({"n": n})).run_id(id)).await.map(drop)
    }

    /// Returns once the agent was called for the run, within a minute.
    async fn called(heard: oneshot::Receiver<()>) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(60), heard).await.context("the agent was not called")??;
        Ok(())
    }

    /// Keeps `in_flight` runs going until `stop`, and counts them; those still awaited
    /// then are left as they are.
    async fn keep_going(self, in_flight: usize, stop: CancellationToken) -> Load {
        let started = Instant::now();
        let counts = LoadCounts::default();
        stream::iter(0..)
            .take_until(stop.cancelled())
            .for_each_concurrent(in_flight, |n| {
                let (runner, counts, stop) = (&self, &counts, &stop);
                async move {
                    tokio::select! {
                        outcome = runner.one_of_load(n, counts) => LoadCounts::count(outcome),
                        () = stop.cancelled() => LoadCounts::count(&counts.unfinished),
                    }
                }
            })
            .await;
        let counts = [counts.answered, counts.late, counts.failed, counts.unfinished].map(AtomicU64::into_inner);
        let [answered, late, failed, unfinished] = counts;
        Load { in_flight, answered, late, failed, unfinished, elapsed: started.elapsed() }
    }

    /// Run `n` of a load: returns whether the agent was called for it (`answered`) or not
    /// (`failed`). A run whose submission timed out, stored (taken by an instance killed
    /// before it answered, it comes back to another after the ack wait), is still
    /// awaited, and counted as `late` too.
    async fn one_of_load<'a>(&self, n: u64, counts: &'a LoadCounts) -> &'a AtomicU64 {
        let id = format!("load-{n:09}");
        let called = self.expect(&id);
        match self.submit(&id, n).await {
            Ok(()) => {}
            Err(osp_client::Error::Timeout { stored: true, .. }) => LoadCounts::count(&counts.late),
            Err(_) => return &counts.failed,
        }
        match Runner::called(called).await {
            Ok(()) => &counts.answered,
            Err(_) => &counts.failed,
        }
    }

    /// Returns once no run is pending or in progress.
    async fn settled(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        for status in [RunStatus::Pending, RunStatus::InProgress] {
            let open = ListQuery { status: Some(status), children: true, limit: Some(1), ..ListQuery::default() };
            while !self.client.scheduler().list(&open).await?.runs.is_empty() {
                if started.elapsed() > Duration::from_secs(120) {
                    bail!("runs still {status} two minutes after the last was submitted");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

impl Setup {
    /// Resident memory of the (only) instance, for the memory figures.
    fn resident(&self) -> anyhow::Result<u64> {
        self.instances.running.first().context("no instance running")?.resident()
    }

    /// Resident memory once ended runs have had `grace` (and the once-a-second eviction) to leave.
    async fn resident_after(&self, grace: Duration) -> anyhow::Result<u64> {
        tokio::time::sleep(grace + Duration::from_secs(2)).await;
        self.resident()
    }
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: ScaleArgs) -> anyhow::Result<ExitCode> {
    if args.runs < args.first || args.first == 0 || args.in_flight == 0 {
        bail!("--first must be at least 1 and at most --runs, and --in-flight at least 1");
    }
    if args.scale_runs == 0 && !args.instances.0.is_empty() {
        bail!("--scale-runs must be at least 1 (--instances \"\" leaves the rows of instances out)");
    }
    if args.takeovers > 0 && args.partitions.count() < TAKEOVER_INSTANCES as u32 {
        bail!(
            "--partitions must be at least {TAKEOVER_INSTANCES} for --takeovers, so that the instance killed owns one \
             (--takeovers 0 leaves the takeovers out)"
        );
    }
    let binary = std::env::current_exe()?.with_file_name("osp-scheduler");
    if !binary.exists() {
        bail!("{} is missing: build it beside osp-bench (cargo build --release -p osp-scheduler)", binary.display());
    }
    let keep = humantime::format_duration(args.keep_finished).to_string();
    eprintln!(
        "bench scale: {} runs ({} B outputs, {} in flight) through an osp-scheduler keeping ended runs {keep}, \
         {} through one keeping them all",
        args.runs, args.output_bytes, args.in_flight, args.baseline_runs
    );

    let launch = Launch { binary, keep_finished: keep, partitions: None };
    let memory = memory(&launch, &args).await?;
    let rows = rows(&launch, &args).await?;
    let takeovers = match args.takeovers {
        0 => None,
        _ => Some(takeovers(&launch.partitioned(args.partitions), &args).await?),
    };
    if args.json {
        let mut report = memory.json(&args);
        report["partitions"] = json!(args.partitions.count());
        report["scale_runs"] = json!(args.scale_runs);
        report["instances"] = rows.iter().map(Row::json).collect();
        report["takeover_ms"] = takeovers.as_ref().map(Takeovers::json).unwrap_or_default();
        report["takeover_load"] = json!(takeovers.as_ref().and_then(|t| t.load.as_ref()).map(Load::json));
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        memory.print(&args);
        print_rows(&rows, &args);
        if let Some(takeovers) = &takeovers {
            takeovers.print(&args);
        }
    }
    let met = memory.meets_target() && takeovers.as_ref().is_none_or(Takeovers::meets_target);
    Ok(if met { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

/// One row of CPU per run: instances on a server of their own, and the runs through them.
struct Row {
    instances: usize,
    /// What they share the runs in; none for the one instance holding every run.
    partitions: Option<Partitions>,
    runs: u64,
    elapsed: Duration,
    /// Per instance, the CPU time it used over the runs.
    cpu: Vec<Duration>,
}

/// The rows of `--instances`, after the one instance holding every run they are
/// compared with, all measured in this run of the benchmark.
async fn rows(launch: &Launch, args: &ScaleArgs) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    if args.instances.0.is_empty() {
        return Ok(rows);
    }
    let partitioned = launch.partitioned(args.partitions);
    let counts = args.instances.0.iter().map(|count| (&partitioned, *count));
    for (launch, count) in std::iter::once((launch, 1)).chain(counts) {
        let row = row(launch, count, args).await?;
        eprintln!("  {}: {:.0} runs/s, {:.0} us CPU per run per instance", row.label(), row.runs_per_s(), row.mean());
        rows.push(row);
    }
    Ok(rows)
}

/// Starts `count` instances on a fresh server, as `launch` says, and measures
/// `--scale-runs` runs through them: the wall clock, and each instance's CPU time from
/// just before the first run to just after the last ended.
async fn row(launch: &Launch, count: usize, args: &ScaleArgs) -> anyhow::Result<Row> {
    let setup = setup(launch, count, args).await?;
    let before = setup.instances.cpu()?;
    let started = Instant::now();
    setup.runner.runs(0, args.scale_runs, args.in_flight).await?;
    let elapsed = started.elapsed();
    let after = setup.instances.cpu()?;
    let cpu = after.iter().zip(&before).map(|(after, before)| after.saturating_sub(*before)).collect();
    Ok(Row { instances: count, partitions: launch.partitions, runs: args.scale_runs, elapsed, cpu })
}

impl Row {
    fn label(&self) -> String {
        match self.partitions {
            Some(partitions) => format!("{} over {partitions} partitions", self.instances),
            None => format!("{}, whole", self.instances),
        }
    }

    fn runs_per_s(&self) -> f64 {
        crate::stats::rate(self.runs as usize, self.elapsed)
    }

    /// Each instance's CPU per run, in microseconds.
    fn per_run(&self) -> impl Iterator<Item = f64> + '_ {
        self.cpu.iter().map(|cpu| cpu.as_secs_f64() * 1e6 / self.runs.max(1) as f64)
    }

    fn mean(&self) -> f64 {
        self.total() / self.cpu.len().max(1) as f64
    }

    fn max(&self) -> f64 {
        self.per_run().fold(0.0, f64::max)
    }

    fn total(&self) -> f64 {
        self.per_run().sum()
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "instances": self.instances,
            "partitioned": self.partitions.is_some(),
            "partitions": self.partitions.map(Partitions::count),
            "runs": self.runs,
            "runs_per_s": round(self.runs_per_s()),
            "cpu_us_per_run_mean": round(self.mean()),
            "cpu_us_per_run_max": round(self.max()),
            "cpu_us_per_run_total": round(self.total()),
            "cpu_us_per_run_each": self.per_run().map(round).collect::<Vec<_>>(),
        })
    }
}

/// The rows as a table, CPU time in microseconds per run.
fn print_rows(rows: &[Row], args: &ScaleArgs) {
    if rows.is_empty() {
        return;
    }
    println!("CPU per run as instances are added ({} runs per row, {} in flight)", args.scale_runs, args.in_flight);
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING).set_header([
        "instances",
        "partitions",
        "runs/s",
        "CPU us/run per instance: mean",
        "max",
        "all instances",
    ]);
    for row in rows {
        let partitions = row.partitions.map_or("whole".to_owned(), |p| p.to_string());
        let figures = [row.runs_per_s(), row.mean(), row.max(), row.total()].map(|figure| format!("{figure:.0}"));
        table.add_row([row.instances.to_string(), partitions].into_iter().chain(figures));
    }
    for (at, column) in table.column_iter_mut().enumerate() {
        column.set_padding((2, 0));
        if at >= 2 {
            column.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    println!("{}", table.trim_fmt());
}

/// The memory figures: of one instance letting ended runs go, and of one keeping them all.
struct Memory {
    /// The baseline keeping every run: idle, after its runs, and per run.
    idle_all: u64,
    kept_all: u64,
    kept_per_run: f64,
    /// The measured instance: idle, per run in hand, and after each checkpoint's runs.
    idle: u64,
    active_per_run: f64,
    checkpoints: Vec<(u64, u64)>,
    /// How long the measured instance's runs took, checkpoints included.
    elapsed: Duration,
}

/// Measures the baseline keeping every run, then the instance `launch` says.
async fn memory(launch: &Launch, args: &ScaleArgs) -> anyhow::Result<Memory> {
    // The baseline: the same binary, keeping every run.
    let baseline = setup(&Launch { keep_finished: KEEP_ALL.into(), ..launch.clone() }, 1, args).await?;
    let idle_all = baseline.resident()?;
    baseline.runner.runs(0, args.baseline_runs, args.in_flight).await?;
    let kept_all = baseline.resident_after(Duration::ZERO).await?;
    drop(baseline);
    let kept_per_run = (kept_all.saturating_sub(idle_all)) as f64 / args.baseline_runs.max(1) as f64;

    let measured = setup(launch, 1, args).await?;
    let idle = measured.resident()?;
    // Runs in hand first, on a fresh process: measured later, the allocator's memory
    // kept from the finished runs' traffic would hide them.
    let approval = serde_json::from_value::<RunOptions>(json!({"approval": {"message": "hold"}}))?;
    let scheduler = measured.runner.client.scheduler();
    stream::iter(0..args.active)
        .map(Ok)
        .try_for_each_concurrent(args.in_flight, |n| {
            let (scheduler, approval) = (scheduler.clone(), approval.clone());
            async move {
                let submission =
                    Submission::new(CAPABILITY, json!({"n": n})).run_id(format!("held-{n:09}")).options(approval);
                scheduler.submit(&submission).await.map(drop)
            }
        })
        .await?;
    let holding = measured.resident_after(args.keep_finished).await?;
    let active_per_run = (holding as f64 - idle as f64) / args.active.max(1) as f64;
    let mut checkpoints = Vec::new();
    let mut at = args.first;
    let mut done = 0;
    let started = Instant::now();
    loop {
        measured.runner.runs(done, at, args.in_flight).await?;
        done = at;
        let resident = measured.resident_after(args.keep_finished).await?;
        eprintln!("  after {done} runs: {:.1} MiB", mib(resident));
        checkpoints.push((done, resident));
        if done == args.runs {
            break;
        }
        at = (at * 10).min(args.runs);
    }
    let elapsed = started.elapsed();
    Ok(Memory { idle_all, kept_all, kept_per_run, idle, active_per_run, checkpoints, elapsed })
}

impl Memory {
    fn first(&self) -> (u64, u64) {
        self.checkpoints[0]
    }

    fn last(&self) -> (u64, u64) {
        *self.checkpoints.last().expect("one checkpoint at least")
    }

    fn finished_per_run(&self) -> f64 {
        let ((first_runs, first), (last_runs, last)) = (self.first(), self.last());
        (last as f64 - first as f64) / (last_runs - first_runs).max(1) as f64
    }

    fn growth(&self) -> f64 {
        self.last().1 as f64 / self.first().1 as f64
    }

    fn runs_per_s(&self) -> f64 {
        self.last().0 as f64 / self.elapsed.as_secs_f64()
    }

    /// Memory grew from the first checkpoint to the last by at most a fifth.
    fn meets_target(&self) -> bool {
        self.growth() <= 1.2
    }

    fn json(&self, args: &ScaleArgs) -> serde_json::Value {
        json!({
            "benchmark": "scale",
            "runs": args.runs,
            "output_bytes": args.output_bytes,
            "keep_finished_ms": args.keep_finished.as_millis() as u64,
            "runs_per_s": round(self.runs_per_s()),
            "resident_bytes_idle": self.idle,
            "resident_bytes_after": self.checkpoints.iter().map(|(runs, bytes)| json!({"runs": runs, "bytes": bytes})).collect::<Vec<_>>(),
            "growth_first_to_last": round(self.growth()),
            "bytes_per_finished_run": round(self.finished_per_run()),
            "bytes_per_active_run": round(self.active_per_run),
            "baseline_keeping_all": {"runs": args.baseline_runs, "resident_bytes_idle": self.idle_all, "resident_bytes_after": self.kept_all, "bytes_per_finished_run": round(self.kept_per_run)},
        })
    }

    fn print(&self, args: &ScaleArgs) {
        let ((first_runs, _), (last_runs, _)) = (self.first(), self.last());
        println!("resident memory of one osp-scheduler ({} B outputs)", args.output_bytes);
        println!("  idle: {:.1} MiB", mib(self.idle));
        for (runs, bytes) in &self.checkpoints {
            println!("  after {runs:>9} finished runs: {:>8.1} MiB", mib(*bytes));
        }
        println!("  growth from {first_runs} to {last_runs} runs: {:.2}x (target: at most 1.20x)", self.growth());
        println!(
            "  per finished run: {:>8.0} B   baseline keeping every run: {:.0} B",
            self.finished_per_run(),
            self.kept_per_run
        );
        println!("  per active run (awaiting approval): {:.0} B", self.active_per_run);
        println!("  runs/s while measured: {:.0}", self.runs_per_s());
    }
}

/// Takeovers of the partitions of an instance killed, and the runs kept going meanwhile.
struct Takeovers {
    samples: Vec<Duration>,
    /// With a load: the longest the agent went without a task while a fresh instance
    /// joined and was given its share, once per takeover.
    join_pauses: Vec<Duration>,
    load: Option<Load>,
}

/// Runs kept going in the background: answered by the agent, failed, and still awaited
/// when the load stopped; and how many of them had their submission time out, stored.
struct Load {
    in_flight: usize,
    answered: u64,
    late: u64,
    failed: u64,
    unfinished: u64,
    elapsed: Duration,
}

/// [`Load`]'s counts as the runs go.
#[derive(Default)]
struct LoadCounts {
    answered: AtomicU64,
    late: AtomicU64,
    failed: AtomicU64,
    unfinished: AtomicU64,
}

impl LoadCounts {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts [`TAKEOVER_INSTANCES`] instances sharing the partitions on a fresh server, and
/// `--takeovers` times kills the oldest and times the takeover of its partitions, then
/// starts a fresh instance in its place and waits for the partitions to spread again.
async fn takeovers(launch: &Launch, args: &ScaleArgs) -> anyhow::Result<Takeovers> {
    let mut setup = setup(launch, TAKEOVER_INSTANCES, args).await?;
    let stop = CancellationToken::new();
    // Stops the load however this returns.
    let _stopping = stop.clone().drop_guard();
    let load = (args.takeover_load > 0)
        .then(|| tokio::spawn(setup.runner.clone().keep_going(args.takeover_load, stop.clone())));
    let (mut samples, mut join_pauses) = (Vec::new(), Vec::new());
    for _ in 0..args.takeovers {
        let took = setup.instances.kill_oldest().await?;
        eprintln!("  takeover of the partitions of a killed instance: {:.0} ms", ms(took));
        samples.push(took);
        let joining = async {
            setup.instances.add().await?;
            setup.instances.spread().await
        };
        let (joined, pause) = setup.calls.longest_pause(joining).await;
        joined?;
        if load.is_some() {
            eprintln!("  longest pause in dispatch while a fresh instance joined: {:.0} ms", ms(pause));
            join_pauses.push(pause);
        }
    }
    stop.cancel();
    let load = match load {
        Some(load) => Some(load.await?),
        None => None,
    };
    Ok(Takeovers { samples, join_pauses, load })
}

impl Takeovers {
    /// p50 and p99 (nearest rank), and the longest, in milliseconds.
    fn figures(&self) -> (f64, f64, f64) {
        let percentiles = crate::stats::percentiles(&mut self.samples.clone());
        let max = self.samples.iter().max().copied().unwrap_or_default();
        (percentiles.p50 / 1e3, percentiles.p99 / 1e3, ms(max))
    }

    /// Every takeover was within the target.
    fn meets_target(&self) -> bool {
        self.samples.iter().all(|took| *took < TAKEOVER_TARGET)
    }

    fn json(&self) -> serde_json::Value {
        let (p50, p99, max) = self.figures();
        json!({
            "samples": self.samples.iter().map(|took| round(ms(*took))).collect::<Vec<_>>(),
            "p50": round(p50),
            "p99": round(p99),
            "max": round(max),
            "target_under": ms(TAKEOVER_TARGET),
            "instances": TAKEOVER_INSTANCES,
            "join_pause_ms": self.join_pauses.iter().map(|pause| round(ms(*pause))).collect::<Vec<_>>(),
        })
    }

    fn print(&self, args: &ScaleArgs) {
        let (p50, p99, max) = self.figures();
        let samples: Vec<String> = self.samples.iter().map(|took| format!("{:.0}", ms(*took))).collect();
        println!(
            "takeover of the partitions of one of {TAKEOVER_INSTANCES} instances killed (SIGKILL), over {} partitions",
            args.partitions
        );
        println!("  samples: {} ms", samples.join(", "));
        println!(
            "  p50 {p50:.0} ms   p99 {p99:.0} ms   max {max:.0} ms   (target: under {:.0} ms)",
            ms(TAKEOVER_TARGET)
        );
        if let Some(load) = &self.load {
            let rate = load.runs_per_s();
            let (in_flight, answered, failed, unfinished) =
                (load.in_flight, load.answered, load.failed, load.unfinished);
            println!(
                "  runs meanwhile ({in_flight} in flight): {answered} answered, {failed} failed, {unfinished} still \
                 awaited at the end, {rate:.0}/s"
            );
            println!("  of which submissions timed out, stored (taken by an instance killed): {}", load.late);
            let pauses: Vec<String> = self.join_pauses.iter().map(|pause| format!("{:.0}", ms(*pause))).collect();
            println!("  longest pause in dispatch while a fresh instance joined: {} ms", pauses.join(", "));
        }
    }
}

impl Load {
    fn runs_per_s(&self) -> f64 {
        crate::stats::rate(self.answered as usize, self.elapsed)
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "in_flight": self.in_flight,
            "answered": self.answered,
            "submissions_timed_out": self.late,
            "failed": self.failed,
            "unfinished": self.unfinished,
            "runs_per_s": round(self.runs_per_s()),
        })
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

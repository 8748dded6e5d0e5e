//! One way to start a service: the start-up every service shares, and the command line
//! every service binary shares.
//!
//! A service's `start` opens a [`Service`] (apply the stream definitions, open the log),
//! plugs in its parts — views, executors, the inbox, queries, reactors, timers, tasks of
//! its own — and calls [`Service::running`]:
//!
//! ```ignore
//! let mut service = Service::open(client, SERVICE, env!("CARGO_PKG_VERSION"), config).await?;
//! let view = service.view::<RegistryView>(&[ENTRY_KIND]).await?;
//! let executor = service.executor(&view);
//! service.commands(Commands, executor);
//! service.queries(view, queries::all()).await?;
//! let running = service.running().await?;
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use osp_eventlog::{Definitions, EventLog, Timers};
use osp_protocol::{subject, Partitions, Token};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ownership::{self, Ownership, Timing};
use crate::projection::Parts;
use crate::reactor::{serve_reactor, serve_timers};
use crate::snapshot::Partitioned;
use crate::{
    serve_queries, Aggregate, CommandHandler, Executor, Holds, Inbox, Index, Keeping, Projection, Query, Reactor,
    Running, Snapshot, Snapshots, TimerHandler, DEFAULT_ACK_WAIT, KEEP_FINISHED,
};

/// What every service instance is configured with, whatever its domain.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// How long an instance has to handle a command, an event's effects or a fired timer
    /// before another instance gets it: how soon a crashed instance's work is taken up
    /// again.
    pub ack_wait: Duration,
    /// The streams and consumers to apply at start-up (a deployment's own replicas and
    /// limits, or the built-in ones).
    pub definitions: Definitions,
    /// When views start from snapshots and save them.
    pub snapshots: Snapshots,
    /// How long a finished aggregate stays in memory after it finished; then it is read
    /// from the log when asked for ([`crate::resident`]).
    pub keep_finished: Duration,
    /// Where the instance keeps its listing indexes ([`crate::index`]); `None`: in a
    /// temporary folder, so they are built again from the log at every start (and the
    /// views of services that keep one start from the first event).
    pub state_dir: Option<PathBuf>,
    /// The partitions the service's aggregates are shared out in among its instances
    /// ([`crate::ownership`]), for its [`Service::partitioned_view`]; `None`: every
    /// instance holds every aggregate.
    pub partitions: Option<Partitions>,
}

impl Default for ServiceConfig {
    fn default() -> ServiceConfig {
        ServiceConfig {
            ack_wait: DEFAULT_ACK_WAIT,
            definitions: Definitions::builtin(),
            snapshots: Snapshots::default(),
            keep_finished: KEEP_FINISHED,
            state_dir: None,
            partitions: None,
        }
    }
}

/// The command-line arguments every service binary takes; flatten it into the binary's
/// own (`#[command(flatten)]`).
#[derive(clap::Args, Clone, Debug)]
pub struct ServiceArgs {
    /// NATS server(s) to use; several, comma-separated, for a cluster.
    #[arg(long, env = "OSP_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Apply the stream definitions in this folder (replicas, limits) instead of the
    /// built-in ones.
    #[arg(long, env = "OSP_STREAMS")]
    pub streams: Option<PathBuf>,
    /// Keep every stream on this many servers (3 in a 3-node cluster).
    #[arg(long, env = "OSP_REPLICAS")]
    pub replicas: Option<usize>,
    /// How long an instance has to handle a command, an event's effects or a timer before
    /// another gets it (how soon the work of a crashed instance is taken up again).
    #[arg(long, env = "OSP_ACK_WAIT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub ack_wait: Duration,
    /// Save a snapshot of each view every this many events (`off`: neither read nor save
    /// snapshots).
    #[arg(long, env = "OSP_SNAPSHOT_EVERY", value_parser = parse_snapshots)]
    pub snapshot_every: Option<Snapshots>,
    /// How long a finished run (audit, scope) stays in memory after it ended; then it is
    /// read from the log when asked for.
    #[arg(long, env = "OSP_KEEP_FINISHED", default_value = "10s", value_parser = humantime::parse_duration)]
    pub keep_finished: Duration,
    /// Keep this instance's listing indexes in this folder (one folder per instance), so
    /// a restart resumes from its snapshot instead of folding the whole log again.
    #[arg(long, env = "OSP_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Share the aggregates among the instances in this many partitions, each instance
    /// holding and folding only those it owns (leases in the KV bucket OSP_LEASES). The
    /// same number for every instance, fixed for the deployment. The scheduler's runs so
    /// far; the other services hold everything (docs/operations.md).
    #[arg(long, env = "OSP_PARTITIONS")]
    pub partitions: Option<Partitions>,
}

fn parse_snapshots(text: &str) -> Result<Snapshots, String> {
    Snapshots::parse(text).map_err(|e| e.to_string())
}

impl ServiceArgs {
    /// The configuration these arguments give.
    pub fn config(&self) -> anyhow::Result<ServiceConfig> {
        Ok(ServiceConfig {
            ack_wait: self.ack_wait,
            definitions: Definitions::for_deployment(self.streams.as_deref(), self.replicas)?,
            snapshots: self.snapshot_every.unwrap_or_default(),
            keep_finished: self.keep_finished,
            state_dir: self.state_dir.clone(),
            partitions: self.partitions,
        })
    }

    /// Connects process `name` to the servers of `--nats-url`.
    pub async fn connect(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        Ok(osp_eventlog::connect(name, &self.nats_url).await?)
    }
}

/// The whole life of a service binary after its arguments are read: tracing, connect, start, run until Ctrl-C or
/// SIGTERM, stop gracefully. `start` is the service's own start function.
pub async fn main<S, F, Fut>(name: &str, args: &ServiceArgs, start: F) -> anyhow::Result<()>
where
    S: Stop,
    F: FnOnce(async_nats::Client, ServiceConfig) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<S>>,
{
    crate::init_tracing("info");
    let config = args.config()?;
    let client = args.connect(name).await?;
    let service = start(client, config).await.with_context(|| format!("starting {name} on {}", args.nats_url))?;
    crate::stop_requested().await?;
    tracing::info!("stopping");
    service.stop().await;
    Ok(())
}

/// A running service that stops gracefully.
pub trait Stop {
    /// Stops taking work, finishes what is in hand, and returns.
    fn stop(self) -> impl std::future::Future<Output = ()>;
}

/// A service being put together from its parts; [`Service::running`] once all are in.
pub struct Service {
    name: Token,
    version: &'static str,
    log: EventLog,
    config: ServiceConfig,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// Served once every part is in ([`running`](Self::running)).
    inbox: Option<Inbox>,
    /// The partitions this instance owns, and the aggregate kinds shared out in them
    /// ([`partitioned_view`](Self::partitioned_view)).
    owned: Option<(Ownership, Vec<String>)>,
}

/// How long a starting instance waits for its first partitions before it folds its
/// views: one lease lifetime, by which the others have given it its share.
const FIRST_SHARE_WITHIN: Duration = Duration::from_secs(3);

/// The parts a service starts are boxed where it awaits them: a start is awaited inside
/// its callers' futures (a test starting several services), and each part's future would
/// otherwise be carried, and moved through the stack, by all of them.
impl Service {
    /// Applies the stream definitions (refusing a server that is too old first) and opens
    /// the log, for service `name` at `version` (what `$SRV.INFO` reports).
    pub async fn open(
        client: async_nats::Client,
        name: &'static str,
        version: &'static str,
        config: ServiceConfig,
    ) -> anyhow::Result<Service> {
        anyhow::ensure!(!config.ack_wait.is_zero(), "the ack wait must be more than zero");
        let name = Token::new("service", name)?;
        let log = EventLog::start(client, &config.definitions).await?;
        Ok(Service {
            name,
            version,
            log,
            config,
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
            inbox: None,
            owned: None,
        })
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// The token that stops this instance: for tasks of the service's own, which must
    /// finish what they hold and return once it is cancelled.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// A view of the events of aggregate kinds `kinds`, replayed (from a snapshot, as
    /// configured) and followed live until shutdown; returns once caught up.
    pub async fn view<V: Snapshot>(&mut self, kinds: &[&str]) -> anyhow::Result<Projection<V>> {
        self.view_keeping(kinds, None, None, None).await
    }

    /// Like [`view`](Self::view), for a view that keeps a listing index of the aggregates
    /// it lets go of ([`crate::index`]), in the instance's state folder.
    pub async fn indexed_view<V: Snapshot>(&mut self, kinds: &[&str]) -> anyhow::Result<Projection<V>> {
        let index = Index::open(self.config.state_dir.as_deref(), V::NAME)?;
        self.view_keeping(kinds, Some(Arc::new(index)), None, None).await
    }

    /// Like [`indexed_view`](Self::indexed_view), holding only the partitions this
    /// instance owns when the configuration shares the aggregates out
    /// ([`ServiceConfig::partitions`]): the instance joins the members of the service,
    /// waits a moment for its first share, and takes in just that (from each partition's
    /// snapshot and the events after it). For a view whose every aggregate kind is
    /// partitioned (a query over all of them is gathered, [`Query::gathered`]).
    pub async fn partitioned_view<V: Partitioned>(&mut self, kinds: &[&str]) -> anyhow::Result<Projection<V>> {
        let Some(partitions) = self.config.partitions else { return self.indexed_view(kinds).await };
        let (owned, keeper) =
            ownership::start(&self.log, self.name.as_str(), partitions, Timing::default(), self.shutdown.clone())
                .await?;
        self.tasks.push(keeper);
        // Folding the first share at once spares a second replay when it arrives.
        let mut changes = owned.changes();
        let _ = tokio::time::timeout(FIRST_SHARE_WITHIN, changes.wait_for(|owned| !owned.is_empty())).await;
        let index = Index::open(self.config.state_dir.as_deref(), V::NAME)?;
        let parts = Parts::of(self.config.snapshots);
        self.owned = Some((owned.clone(), kinds.iter().map(|kind| (*kind).to_owned()).collect()));
        self.view_keeping(kinds, Some(Arc::new(index)), Some(owned), Some(parts)).await
    }

    async fn view_keeping<V: Snapshot>(
        &mut self,
        kinds: &[&str],
        index: Option<Arc<Index>>,
        owned: Option<Ownership>,
        parts: Option<Parts<V>>,
    ) -> anyhow::Result<Projection<V>> {
        let filters = kinds
            .iter()
            .map(|kind| Ok(subject::events_of_kind(&Token::new("kind", *kind)?)))
            .collect::<anyhow::Result<Vec<String>>>()?;
        let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
        let keeping = Keeping { keep_finished: self.config.keep_finished, index, owned };
        let (snapshots, shutdown) = (self.config.snapshots, self.shutdown.clone());
        let (projection, follower) =
            Box::pin(Projection::start_followed(&self.log, &filters, snapshots, keeping, parts, shutdown)).await?;
        self.tasks.push(follower);
        Ok(projection)
    }

    /// An executor deciding aggregates of type `A` held in `view`.
    pub fn executor<A: Aggregate, V: Holds<A>>(&self, view: &Projection<V>) -> Arc<Executor<A, V>> {
        Arc::new(Executor::new(self.log.clone(), view.clone()))
    }

    /// The service's durable timers.
    pub async fn timers(&self) -> anyhow::Result<Timers> {
        Ok(Timers::open(self.log.jetstream(), self.name.clone()).await?)
    }

    /// Takes the commands `handler` reads (into the service's one inbox), decided by
    /// `executor`: once for each kind of aggregate the service keeps.
    pub fn commands<H: CommandHandler>(&mut self, handler: H, executor: Arc<Executor<H::Aggregate, H::View>>) {
        let inbox = self
            .inbox
            .take()
            .unwrap_or_else(|| Inbox::new(self.name.clone(), self.log.clone()).with_ack_wait(self.config.ack_wait));
        self.inbox = Some(inbox.route(handler, executor));
    }

    /// Serves `queries` over `view` as the micro service `osp-<name>`.
    pub async fn queries<V: crate::View>(&mut self, view: Projection<V>, queries: Vec<Query<V>>) -> anyhow::Result<()> {
        let client = self.log.client().clone();
        let serving = serve_queries(&client, &self.name, self.version, view, queries, self.shutdown.clone());
        let task = Box::pin(serving).await?;
        self.tasks.push(task);
        Ok(())
    }

    /// Performs the effects `reactor` finds in the events of its kind; those of an
    /// aggregate kind shared out in partitions, by the owner of the event's partition.
    pub async fn react<R: Reactor>(&mut self, reactor: Arc<R>) -> anyhow::Result<()> {
        let ack_wait = self.config.ack_wait;
        let owned = self.owned.as_ref().filter(|(_, kinds)| kinds.iter().any(|kind| kind == R::KIND));
        let owned = owned.map(|(owned, _)| owned.clone());
        let serving = serve_reactor(&self.log, &self.name, reactor, ack_wait, owned, self.shutdown.clone());
        let served = Box::pin(serving).await?;
        self.tasks.extend(served);
        Ok(())
    }

    /// Decides the fired timers of `timers` with `handler`, up to `in_flight` at once.
    pub async fn on_timers<H: TimerHandler>(
        &mut self,
        timers: &Timers,
        handler: Arc<H>,
        in_flight: usize,
    ) -> anyhow::Result<()> {
        let ack_wait = self.config.ack_wait;
        self.tasks.push(serve_timers(timers, handler, in_flight, ack_wait, self.shutdown.clone()).await?);
        Ok(())
    }

    /// Adds tasks of the service's own, stopped by [`shutdown`](Self::shutdown).
    pub fn spawned(&mut self, tasks: impl IntoIterator<Item = JoinHandle<()>>) {
        self.tasks.extend(tasks);
    }

    /// Every part is in: once the server has every subscription, queries find responders
    /// and the instance is running.
    pub async fn running(mut self) -> anyhow::Result<Running> {
        let mut counts = Arc::default();
        if let Some(inbox) = self.inbox.take() {
            counts = inbox.counts();
            self.tasks.push(Box::pin(inbox.serve(self.shutdown.clone())).await?);
        }
        self.log.client().flush().await?;
        tracing::info!("{} started", self.name);
        Ok(Running::new(self.shutdown, self.tasks, counts))
    }
}

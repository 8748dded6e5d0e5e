//! Integration tests against the real nats-server (install it with
//! `scripts/install-nats-server`). Every test starts its own isolated server(s).

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use osp_local_nats::{
    find, find_in, install, Binary, Cluster, Error, NatsServer, Rejected, ServerOptions, Source, PINNED_VERSION,
};
use osp_protocol::nats_server::MIN_VERSION;

type TestResult = Result<(), async_nats::Error>;

fn stream_config(name: &str, subject: &str, replicas: usize) -> stream::Config {
    stream::Config { name: name.into(), subjects: vec![subject.into()], num_replicas: replicas, ..Default::default() }
}

/// The payload of message `seq` in `stream`, read through the server at `url`.
async fn read_message(url: &str, stream: &str, seq: u64) -> Result<String, async_nats::Error> {
    let js = jetstream::new(async_nats::connect(url).await?);
    let message = js.get_stream(stream).await?.get_raw_message(seq).await?;
    Ok(String::from_utf8(message.payload.to_vec())?)
}

#[tokio::test]
async fn data_survives_kill_and_restart_on_the_same_url() -> TestResult {
    let mut server = NatsServer::start().await?;
    let url = server.url();
    assert_eq!(url, format!("nats://127.0.0.1:{}", server.port()));

    let js = jetstream::new(async_nats::connect(&url).await?);
    js.create_stream(stream_config("ORDERS", "orders.>", 1)).await?;
    js.publish("orders.1", "first order".into()).await?.await?;

    server.kill();
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);

    server.restart().await?;
    assert!(server.is_running());
    assert_eq!(server.url(), url);
    assert_eq!(read_message(&url, "ORDERS", 1).await?, "first order");
    Ok(())
}

#[tokio::test]
async fn restart_while_running_replaces_the_process() -> TestResult {
    let mut server = NatsServer::start().await?;
    let old_pid = server.pid();
    server.restart().await?;
    assert!(server.is_running());
    assert_ne!(server.pid(), old_pid);
    Ok(())
}

#[tokio::test]
async fn stop_leaves_no_process_and_drop_removes_the_temp_store() -> TestResult {
    let mut server = NatsServer::start().await?;
    let pid = server.pid().expect("running server has a pid");
    let store_dir = server.store_dir().to_path_buf();
    assert!(store_dir.join("jetstream").is_dir(), "JetStream store created in {store_dir:?}");

    server.stop().await?;
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    // The child was reaped, so the pid no longer names any process.
    let probe = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None);
    assert_eq!(probe, Err(nix::errno::Errno::ESRCH));
    server.stop().await?; // stopping twice is harmless

    drop(server);
    assert!(!store_dir.exists(), "temp store dir {store_dir:?} removed on drop");
    Ok(())
}

#[tokio::test]
async fn explicit_options_are_used_and_the_store_dir_is_kept() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store_dir = dir.path().join("store");
    let log_file = dir.path().join("server.log");
    std::fs::create_dir(&store_dir)?;
    let opts = ServerOptions {
        store_dir: Some(store_dir.clone()),
        server_name: Some("solo".into()),
        log_file: Some(log_file.clone()),
        ..Default::default()
    };
    let server = NatsServer::start_with(&find()?, opts).await?;
    let client = async_nats::connect(server.url()).await?;
    assert_eq!(client.server_info().server_name, "solo");
    assert_eq!(server.store_dir(), store_dir);
    drop(server);

    assert!(store_dir.join("jetstream").is_dir(), "caller-owned store dir kept");
    let log = std::fs::read_to_string(&log_file)?;
    assert!(log.contains("Server is ready"), "log written to the requested file:\n{log}");
    Ok(())
}

#[tokio::test]
async fn cluster_replicates_and_keeps_quorum_with_one_node_down() -> TestResult {
    let mut cluster = Cluster::start(3).await?;
    let urls = cluster.urls();
    assert_eq!(urls.len(), 3);

    let js = jetstream::new(async_nats::connect(&urls[0]).await?);
    let mut events = js.create_stream(stream_config("EVENTS", "events.>", 3)).await?;
    js.publish("events.1", "replicated".into()).await?.await?;
    assert_eq!(read_message(&urls[1], "EVENTS", 1).await?, "replicated");

    // Kill a follower of the stream (not node 0, which our client is connected to), so
    // the publish below tests quorum rather than leader election timing.
    let leader = events.info().await?.cluster.clone().and_then(|c| c.leader).expect("stream has a leader");
    let victim = (1..3).find(|i| format!("n{}", i + 1) != leader).expect("two non-zero nodes, one leader");
    cluster.node(victim).kill();
    assert!(!cluster.node(victim).is_running());

    js.publish("events.2", "with one node down".into()).await?.await?;

    cluster.node(victim).restart().await?;
    assert_eq!(read_message(&urls[victim], "EVENTS", 2).await?, "with one node down");
    Ok(())
}

#[test]
fn find_uses_the_pinned_project_local_install() {
    // $PATH holds only the too-old Debian server here (if anything), so the project-local
    // install must win; the cwd has no install, so it comes from the workspace root.
    let cwd = tempfile::tempdir().unwrap();
    let binary = find_in(None, Some(cwd.path()), Some("/usr/sbin:/sbin".into())).unwrap();
    assert_eq!(binary.source, Source::ProjectLocal);
    assert_eq!(binary.version.to_string(), PINNED_VERSION);
}

#[test]
fn find_reports_a_missing_env_binary_by_variable_name() {
    let missing = OsString::from("/nonexistent/nats-server");
    let err = find_in(Some(missing), None, None).unwrap_err();
    assert!(matches!(err, Error::EnvMissing { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("OSP_NATS_SERVER=/nonexistent/nats-server"), "{message}");
}

#[test]
fn find_accepts_any_env_binary_at_least_min_version() {
    let pinned = find().unwrap();
    let found = find_in(Some(pinned.path.clone().into()), None, None).unwrap();
    assert_eq!(found, Binary { source: Source::Env, ..pinned });
}

#[test]
fn find_rejects_an_env_binary_older_than_min_version() {
    // A stand-in that only answers --version; the real 2.9 server is not installed everywhere.
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("nats-server");
    std::fs::write(&old, "#!/bin/sh\necho 'nats-server: v2.9.10'\n").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();

    let err = find_in(Some(old.clone().into()), None, None).unwrap_err();
    let expected = format!("OSP_NATS_SERVER is set but unusable: {} is v2.9.10, older than 2.12.0", old.display());
    assert_eq!(err.to_string(), expected);
}

#[test]
fn not_found_says_what_to_run_and_why_each_candidate_failed() {
    let err = Error::NotFound {
        tried: vec![Rejected {
            source: Source::Path,
            reason: "/usr/sbin/nats-server is v2.9.10, older than 2.12.0".into(),
        }],
    };
    let message = err.to_string();
    assert!(message.contains("scripts/install-nats-server"), "{message}");
    assert!(message.contains("OSP_NATS_SERVER=/path/to/nats-server"), "{message}");
    assert!(message.contains("\n  - PATH: /usr/sbin/nats-server is v2.9.10, older than 2.12.0"), "{message}");
    assert_eq!(MIN_VERSION.to_string(), "2.12.0");
}

#[test]
fn install_puts_the_pinned_server_in_the_project() {
    let project = tempfile::tempdir().unwrap();
    let binary = install(project.path()).unwrap();
    assert_eq!(binary.source, Source::ProjectLocal);
    assert_eq!(binary.version.to_string(), PINNED_VERSION);
    assert!(binary.path.starts_with(project.path().join(".osp/tools")));
    let found = find_in(None, Some(&project.path().join("sub")), None).unwrap();
    assert_eq!(found.path, binary.path);
    // Second call skips pip.
    let again = install(Path::new(project.path())).unwrap();
    assert_eq!(again, binary);
}

#[tokio::test]
async fn startup_failure_quotes_the_server_log() -> TestResult {
    // An explicit port is never swapped for another, so a taken one is a startup error.
    let first = NatsServer::start().await?;
    let opts = ServerOptions { port: Some(first.port()), ..Default::default() };
    let started = Instant::now();
    let err = NatsServer::start_with(&find()?, opts).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "failed fast, not by timeout");
    assert!(matches!(err, Error::Exited { .. }), "{err:?}");
    assert!(err.to_string().contains("address already in use"), "{err}");
    Ok(())
}

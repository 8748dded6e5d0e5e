//! The checks of the server itself: the connection, its version, JetStream on this
//! account, and the credentials the connection uses.

use std::time::Instant;

use async_nats::jetstream::context::AccountErrorKind;
use async_nats::jetstream::ErrorCode;
use async_nats::{ConnectErrorKind, ServerAddr, ServerInfo};
use osp_protocol::nats_server::MIN_VERSION;

use super::{count, Check, CHECK_WITHIN};
use crate::connect;

/// Connects as every command does, and sees the server answer a round trip.
pub(super) async fn connection(url: &str) -> (Check, Option<async_nats::Client>) {
    const NAME: &str = "connection";
    let started = Instant::now();
    let connected = async {
        let client = connect::client(url).await?;
        client.flush().await?;
        anyhow::Ok(client)
    };
    let client = match tokio::time::timeout(CHECK_WITHIN, connected).await {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => return (refused(&redacted(url), &error), None),
        Err(_) => return (super::no_answer(NAME), None),
    };
    let info = client.server_info();
    let detail = format!(
        "{} answers: server {} ({} ms)",
        redacted(url),
        if info.server_name.is_empty() { &info.server_id } else { &info.server_name },
        started.elapsed().as_millis()
    );
    (Check::ok(NAME, detail), Some(client))
}

/// `url` with any password in it masked: a report gets pasted into issues.
fn redacted(url: &str) -> String {
    let one = |url: &str| match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if scheme + 3 < at => {
            let (start, userinfo) = (scheme + 3, &url[scheme + 3..at]);
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..start], &url[at..]),
                None => format!("{}***{}", &url[..start], &url[at..]),
            }
        }
        _ => url.to_owned(),
    };
    url.split(',').map(one).collect::<Vec<_>>().join(",")
}

/// Why the connection to `url` failed, and what to do: nothing listens (start one), or
/// the server wants credentials (which `osp` cannot send).
fn refused(url: &str, error: &anyhow::Error) -> Check {
    let kind = error.chain().find_map(|cause| cause.downcast_ref::<async_nats::ConnectError>()).map(|e| e.kind());
    let cause = error.root_cause();
    match kind {
        Some(ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication) => Check::fail(
            "connection",
            format!("{url} refuses this connection: {cause}"),
            "the server requires credentials and `osp` connects without any: run it against a server (or an account) that admits it, see docs/operations.md#protecting-the-log",
        ),
        _ => Check::fail(
            "connection",
            format!("nothing answers at {url}: {cause}"),
            "start a server with `osp dev`, or point OSP_NATS_URL / --nats-url at yours",
        ),
    }
}

/// The server is one the services start on: the same check they make at start-up.
pub(super) fn server_version(client: &async_nats::Client) -> Check {
    const NAME: &str = "server version";
    let version = client.server_info().version;
    match osp_eventlog::check_server_version(&version) {
        Ok(()) => Check::ok(NAME, format!("nats-server {version} (OSP needs {MIN_VERSION} or newer)")),
        Err(error) => Check::fail(
            NAME,
            error.to_string(),
            format!(
                "if this is not the server you meant (`osp dev` takes the next free port when another server holds 4222), point OSP_NATS_URL / --nats-url at the URL `osp dev` printed; else upgrade it: `scripts/install-nats-server` installs {}, the version OSP is tested with",
                osp_local_nats::PINNED_VERSION
            ),
        ),
    }
}

/// JetStream answers for this connection's account.
pub(super) async fn jetstream(jetstream: &async_nats::jetstream::Context) -> Check {
    const NAME: &str = "jetstream";
    const ENABLE: &str =
        "run nats-server with JetStream (`nats-server -js`, or a `jetstream {}` block in its configuration); `osp dev` runs one that has it";
    let error = match jetstream.query_account().await {
        Ok(account) => {
            let detail = format!(
                "enabled: {}, {}, {} on file, {} in memory",
                count(account.streams as u64, "stream"),
                count(account.consumers as u64, "consumer"),
                count(account.storage, "byte"),
                count(account.memory, "byte")
            );
            return Check::ok(NAME, detail);
        }
        Err(error) => error,
    };
    match error.kind() {
        AccountErrorKind::JetStreamUnavailable => Check::fail(NAME, "the server runs without JetStream", ENABLE),
        AccountErrorKind::JetStream(e) if e.error_code() == ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT => {
            Check::fail(
                NAME,
                "not enabled for this connection's account",
                "give the account JetStream (`jetstream: enabled` in its block of the server configuration)",
            )
        }
        _ => Check::fail(NAME, format!("cannot read this account's JetStream information: {error}"), super::RETRY),
    }
}

/// What the connection authenticates with. `osp` has no option for credentials and the
/// NATS client does not send a user and password written in the URL, so today this is
/// always none: worth a warning, for then anyone who reaches the server can act as
/// anyone. `server` is the server's greeting, when it answered.
pub(super) fn credentials(url: &str, server: Option<&ServerInfo>) -> Check {
    const NAME: &str = "credentials";
    const FIX: &str =
        "require users on the server and deny each what it must not do: docs/operations.md#protecting-the-log";
    let in_url =
        url.split(',').filter_map(|one| one.trim().parse::<ServerAddr>().ok()).any(|addr| addr.has_user_pass());
    let ignored = match in_url {
        true => " (the user in the URL is not sent: the NATS client ignores it)",
        false => "",
    };
    let detail = match server {
        Some(server) if !server.auth_required => format!(
            "none{ignored}: the server admits anyone, so anyone who reaches it can act as anyone (an Osp-Actor is a claim)"
        ),
        Some(_) => format!(
            "none{ignored}: the server requires authentication and admitted this connection without any (its no_auth_user)"
        ),
        None => format!("none{ignored}"),
    };
    Check::warn(NAME, detail, FIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_in_a_url_are_masked() {
        assert_eq!(redacted("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redacted("nats://alice:s3cr@t@h:4222"), "nats://alice:***@h:4222");
        assert_eq!(redacted("nats://token@h:4222,tls://bob:pw@g"), "nats://***@h:4222,tls://bob:***@g");
    }

    #[test]
    fn credentials_are_none_and_a_user_in_the_url_is_said_to_be_ignored() {
        let plain = credentials("nats://127.0.0.1:4222", None);
        assert_eq!((plain.status, plain.detail.as_str()), (super::super::Status::Warn, "none"));
        let with_user = credentials("nats://alice:secret@127.0.0.1:4222", None);
        assert!(with_user.detail.contains("not sent"), "{}", with_user.detail);
        assert!(!with_user.detail.contains("secret"), "{}", with_user.detail);
    }
}

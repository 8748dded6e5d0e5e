#!/usr/bin/env python3
"""An OSP agent in Python, speaking the wire protocol with nothing but nats-py.

It shows the whole life of an agent in the registry:

1. **register**: a command, published through JetStream to the registry's inbox
   ``osp.v1.in.registry.register``; the registry answers on a subject we choose;
2. **heartbeat**: a core NATS message to ``osp.v1.hb.<name>`` every few seconds, so the
   registry keeps the agent online (silent for its timeout, 15 s by default, it goes
   offline);
3. **find**: a query, a core NATS request to ``osp.v1.q.registry.find``, answered with
   read-your-writes so the agent sees its own registration;
4. **unregister**: on SIGTERM / SIGINT (or after ``--run-for``), stop beating and
   remove the entry.

Every message here is JSON (``Content-Type: application/json``); the services also
speak MessagePack, their default. The reference is docs/protocol.md and the Rust client
(shared/client), which does the same things.

    python3 examples/python/agent.py --name py-1 --capability echo
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import signal
import sys
import uuid
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NATS

# --- The wire protocol, as constants -------------------------------------------------

# Every subject starts with the protocol version.
PREFIX = "osp.v1"
# Commands go to the service's inbox stream (OSP_INBOX): osp.v1.in.<service>.<command>.
REGISTER = f"{PREFIX}.in.registry.register"
UNREGISTER = f"{PREFIX}.in.registry.unregister"
# Queries are NATS micro-service endpoints: osp.v1.q.<service>.<query>.
FIND = f"{PREFIX}.q.registry.find"
# Heartbeats: core NATS, never stored; the last token is the agent's name.
HEARTBEAT = PREFIX + ".hb.{name}"

# Headers (shared/protocol/src/headers.rs).
CONTENT_TYPE = "Content-Type"  # absent means MessagePack; we send JSON
JSON = "application/json"
COMMAND_ID = "Osp-Command-Id"  # the command's identity: a resend with the same id is applied once
# Not sent: Nats-Msg-Id, JetStream's dedupe header. The service falls back to it as the
# command id, but JetStream drops a message whose Nats-Msg-Id it stored in the last two
# minutes, so a resend with it would never reach the service and never be answered.
ACTOR = "Osp-Actor"  # who we are; recorded as the `actor` of every event the command causes
REPLY_TO = "Osp-Reply-To"  # where the service answers the command
MIN_SEQ = "Osp-Min-Seq"  # on a query: answer only once the log is applied this far

# The registry whose entries are agents (their resource is an "agent card").
AGENTS = "agents"
AGENT_VERSION = "0.1.0"

# How long to wait for the inbox to store a command, and then for the service's answer.
TIMEOUT_SECONDS = 10.0
# How long to keep trying to reach the NATS server at start.
CONNECT_SECONDS = 10.0


class Refused(Exception):
    """The service answered ``{"ok": false, ...}``: the command or query was refused.

    ``error`` is the wire error, a map tagged by ``error`` (the code, e.g.
    ``invalid_token``) with the fields of that code and ``message``, the whole error in
    words, ready to show.
    """

    def __init__(self, seq: int | None, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", error.get("error", "refused")))
        self.seq = seq
        self.error = error
        self.code: str = error.get("error", "")


def say(line: str) -> None:
    """Prints one progress line at once (the output may be a pipe, read as it comes)."""
    print(line, flush=True)


def complain(message: str) -> None:
    """Reports a problem on stderr."""
    print(f"agent: {message}", file=sys.stderr, flush=True)


def read_reply(data: bytes) -> tuple[int, Any]:
    """Reads a service's reply, ``{"ok": true, "seq": N, "result": ...}``, into (seq, result).

    ``seq`` is a position in the event log: for a command, its last event; for a query,
    how far the answering instance had read. Send it back as ``Osp-Min-Seq`` to read
    your own writes. A refusal, ``{"ok": false, "seq": N, "error": {...}}``, raises
    :class:`Refused` (``seq`` is then where the refusal was recorded, or absent).
    """
    reply = json.loads(data)
    if reply.get("ok"):
        return reply["seq"], reply["result"]
    raise Refused(reply.get("seq"), reply["error"])


async def command(nc: NATS, subject: str, body: dict[str, Any], actor: str) -> tuple[int, Any]:
    """Sends a command and waits for its outcome: (seq, result), or raises :class:`Refused`.

    A command is stored in the inbox stream, so it survives until a service instance
    takes it. JetStream's own reply only says "stored"; the service's answer needs a
    subject of its own, named in ``Osp-Reply-To``. Subscribe to it *before* publishing,
    or the answer may come before anyone listens.
    """
    reply_to = nc.new_inbox()
    answers = await nc.subscribe(reply_to)
    headers = {
        CONTENT_TYPE: JSON,
        # A fresh id per command. To resend after a timeout, send the same body with the
        # same id: the service applies it once and answers every copy with that outcome.
        COMMAND_ID: str(uuid.uuid4()),
        ACTOR: actor,
        REPLY_TO: reply_to,
    }
    try:
        # JetStream publish: waits for the stream's acknowledgement that it is stored.
        await nc.jetstream().publish(subject, json.dumps(body).encode(), timeout=TIMEOUT_SECONDS, headers=headers)
        # The service answers once the command's outcome (its events, or the record of
        # its refusal) is on the log, in the command's encoding.
        answer = await answers.next_msg(timeout=TIMEOUT_SECONDS)
    finally:
        await answers.unsubscribe()
    return read_reply(answer.data)


async def query(nc: NATS, subject: str, body: dict[str, Any], min_seq: int = 0) -> tuple[int, Any]:
    """Asks a query: a plain NATS request, answered by any instance of the service.

    With ``min_seq`` (the ``seq`` of an earlier reply), the instance first waits until
    it has applied the log that far (a few seconds at most, then it answers
    ``lagging``), so a query sees what an earlier command did.
    """
    headers = {CONTENT_TYPE: JSON, MIN_SEQ: str(min_seq)}
    reply = await nc.request(subject, json.dumps(body).encode(), timeout=TIMEOUT_SECONDS, headers=headers)
    return read_reply(reply.data)


async def heartbeat(nc: NATS, name: str, every: float) -> None:
    """Beats every `every` seconds, at once first, until cancelled.

    A beat is a core NATS publish with any payload (here none): fire and forget. A beat
    lost while disconnected is simply not heard; the next one counts.
    """
    subject = HEARTBEAT.format(name=name)
    while True:
        try:
            await nc.publish(subject, b"")
        except nats.errors.Error as error:
            complain(f"heartbeat not sent: {error}")
        await asyncio.sleep(every)


async def find_live(nc: NATS, capability: str, min_seq: int) -> list[str]:
    """The names of the online agents that have `capability`, page after page.

    Criteria match the card partially: a scalar matches an array holding it, so
    ``{"capabilities": "echo"}`` finds every agent that lists ``echo``. With ``min_seq``
    the register's ``seq``, whichever instance answers has applied that registration.
    Each answer is one page, ``{"entries": [<entry>...], "next": <cursor>}``, ``next``
    absent on the last; an entry is ``{registry, name, description, resource, metadata,
    status ("online" / "offline"), revision, registered_at, updated_at, seq}``.
    """
    request: dict[str, Any] = {"registry": AGENTS, "criteria": {"capabilities": capability}, "live": True}
    names: list[str] = []
    while True:
        _, page = await query(nc, FIND, request, min_seq=min_seq)
        names += [entry["name"] for entry in page["entries"]]
        if "next" not in page:
            return names
        request["after"] = page["next"]


async def connect(url: str, name: str) -> NATS:
    """Connects to NATS, giving up after `CONNECT_SECONDS` (nats-py would otherwise keep
    trying for minutes). Once connected, nats-py reconnects on its own."""
    last_error: list[Exception] = []

    async def on_error(error: Exception) -> None:
        last_error.append(error)
        if nc_ready.is_set():
            print(f"agent: nats: {type(error).__name__}: {error}", file=sys.stderr, flush=True)

    nc_ready = asyncio.Event()
    try:
        nc = await asyncio.wait_for(
            nats.connect(url, name=name, connect_timeout=2, max_reconnect_attempts=-1, error_cb=on_error),
            timeout=CONNECT_SECONDS,
        )
    except asyncio.TimeoutError:
        raise ConnectionError(f"cannot connect to NATS at {url}: {last_error[-1] if last_error else 'timed out'}")
    nc_ready.set()
    return nc


async def run(args: argparse.Namespace) -> int:
    """The agent's life: register, beat, find itself, wait for the end, unregister.

    Returns the exit status: 0 when it ran and unregistered, 2 when the registry refused
    a command or query, 1 when it could not find itself.
    """
    actor = f"agent:{args.name}"
    # SIGTERM (what `kill` and service managers send) and Ctrl-C end the agent cleanly:
    # listen from the start, so a signal that comes early is not lost.
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)

    nc = await connect(args.nats_url, actor)
    beating: asyncio.Task[None] | None = None
    try:
        # 1. Register. The resource of an `agents` entry is the agent card:
        #    `capabilities` (required; each names the work queue osp.v1.work.<capability>),
        #    `max_concurrency` (1 to 10,000, default 1) and `version` are checked; any other
        #    field is kept as given and can be matched by `find`. Unknown top-level fields
        #    are refused, so a typo is an error rather than lost.
        entry = {
            "registry": AGENTS,
            "name": args.name,
            "description": args.description,
            "resource": {
                "capabilities": args.capability,
                "max_concurrency": args.max_concurrency,
                "version": AGENT_VERSION,
            },
            "metadata": {
                "language": "python",
                "runtime": f"python {platform.python_version()}",
                "client": f"nats-py {importlib.metadata.version('nats-py')}",
            },
        }
        try:
            seq, outcome = await command(nc, REGISTER, entry, actor)
        except Refused as refused:
            # e.g. `invalid resource.capabilities[0] "a.b": must not contain '.' ...`
            complain(f"registration refused ({refused.code}): {refused}")
            return 2
        # The result: {"registry", "name", "revision" (1 when new), "created"}.
        said = "new" if outcome["created"] else f"updated to revision {outcome['revision']}"
        say(f"registered {outcome['registry']}/{outcome['name']} at seq {seq} ({said})")

        # 2. Heartbeat from now on. The registry counts the agent online from its
        #    registration, and keeps it online while the beats come.
        beating = asyncio.create_task(heartbeat(nc, args.name, args.heartbeat))

        # 3. Find the online agents with our first capability; we must be among them.
        status = 0
        try:
            names = await find_live(nc, args.capability[0], min_seq=seq)
            say(f"found in find: {json.dumps(names)}")
            if args.name not in names:
                complain(f"{args.name} is not among the agents found with capability {args.capability[0]!r}")
                status = 1
        except Refused as refused:
            complain(f"find refused ({refused.code}): {refused}")
            status = 2

        # 4. Run until told to stop (a real agent would take tasks from
        #    osp.v1.work.<capability> meanwhile).
        if status == 0:
            try:
                await asyncio.wait_for(stop.wait(), timeout=args.run_for)
            except asyncio.TimeoutError:
                pass  # --run-for has passed

        # 5. Stop beating, then remove the entry (the reason is kept in the log).
        beating.cancel()
        try:
            await command(nc, UNREGISTER, {"registry": AGENTS, "name": args.name, "reason": "shut down"}, actor)
        except Refused as refused:
            # not_found when someone else has unregistered it already.
            complain(f"unregister refused ({refused.code}): {refused}")
            return 2
        say("unregistered")
        return status
    finally:
        if beating is not None:
            beating.cancel()
        if not nc.is_closed:
            await nc.drain()  # sends what is buffered, then closes


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description="An OSP agent that registers, heartbeats and unregisters.")
    parser.add_argument("--nats-url", default=os.environ.get("OSP_NATS_URL", "nats://127.0.0.1:4222"),
                        help="NATS server (default: $OSP_NATS_URL or nats://127.0.0.1:4222)")
    parser.add_argument("--name", default="python-agent-1",
                        help="agent name, unique among agents (no '.', '*', '>' or spaces)")
    parser.add_argument("--description", default="An example agent written in Python", help="for people")
    parser.add_argument("--capability", action="append",
                        help="what it can do; repeat for several (default: echo)")
    parser.add_argument("--max-concurrency", type=int, default=1, help="tasks it runs at once (default: 1)")
    parser.add_argument("--heartbeat", type=float, default=5.0, metavar="SECONDS",
                        help="seconds between heartbeats (default: 5; keep it well under the registry's 15 s)")
    parser.add_argument("--run-for", type=float, metavar="SECONDS",
                        help="unregister and exit after this long (default: until SIGTERM or Ctrl-C)")
    args = parser.parse_args()
    args.capability = args.capability or ["echo"]
    if args.heartbeat <= 0:
        parser.error("--heartbeat must be more than 0")
    return args


def main() -> None:
    """Runs the agent; exits 0 when it unregistered, 2 when refused, 1 on other failures."""
    args = parse_args()
    try:
        status = asyncio.run(run(args))
    except ConnectionError as error:
        complain(str(error))
        status = 1
    except (nats.errors.Error, asyncio.TimeoutError) as error:
        # nats.errors.TimeoutError: no answer in time; nats.errors.NoRespondersError: no
        # one answers queries; nats.js.errors.NoStreamResponseError: no inbox stream. A
        # command that timed out waiting for its answer is still in the inbox: a registry
        # that starts later applies it (an agent registered that way, never beating, is
        # marked offline after the timeout).
        complain(f"{type(error).__name__}: {error} (is the registry running at {args.nats_url}?)")
        status = 1
    sys.exit(status)


if __name__ == "__main__":
    main()

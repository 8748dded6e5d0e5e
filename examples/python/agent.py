#!/usr/bin/env python3
"""An OSP agent in Python, speaking the wire protocol with nothing but nats-py.

It shows the whole life of an agent in the registry, and the tasks it executes:

1. **register**: a command, published through JetStream to the registry's inbox
   ``osp.v1.in.registry.register``; the registry answers on a subject we choose;
2. **heartbeat**: a core NATS message to ``osp.v1.hb.<name>`` every few seconds, so the
   registry keeps the agent online (silent for its timeout, 15 s by default, it goes
   offline);
3. **join the work queues**: one shared durable pull consumer ``work-<capability>`` on
   the stream ``OSP_WORK`` per capability; every agent of the capability reads from it;
4. **find**: a query, a core NATS request to ``osp.v1.q.registry.find``, answered with
   read-your-writes so the agent sees its own registration;
5. **take tasks**, at most ``--max-concurrency`` at once (see :class:`TaskRun`): report
   ``started`` to the scheduler and go on only if it says so, heartbeat the task, report
   progress and log lines, ask a person a question, obey cancel signals, and report
   ``completed`` or ``failed``;
6. **unregister**: on SIGTERM / SIGINT (or after ``--run-for``), stop taking tasks,
   let the tasks in hand finish (or stop them), stop beating and remove the entry.

Every message here is JSON (``Content-Type: application/json``); the services also
speak MessagePack, their default. The reference is docs/protocol.md, the scheduler's
wire types (shared/protocol/src/scheduler) and the Rust client (shared/client).

    python3 examples/python/agent.py --name py-1 --capability summarize

What it does with a task of capability ``summarize``, input ``{"text": ...}``: output
``{"summary": <the first 5 words>, "words": <how many>}``. The input may also hold
``"sleep_ms": N`` (work that long, stopping early if cancelled), ``"ask": <question>``
(ask a person; the answer goes into the output as ``"answer"``) and ``"fail": <kind>``
(report a retryable failure of that kind). Capability ``echo`` outputs its input.
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
from typing import Any, Awaitable, Callable

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

# --- The wire protocol, as constants -------------------------------------------------

# Every subject starts with the protocol version.
PREFIX = "osp.v1"
# Commands go to the service's inbox stream (OSP_INBOX): osp.v1.in.<service>.<command>.
REGISTER = f"{PREFIX}.in.registry.register"
UNREGISTER = f"{PREFIX}.in.registry.unregister"
# The reports of an agent about a task are commands to the scheduler: started, progress,
# log, ask, completed, failed.
SCHEDULER = PREFIX + ".in.scheduler.{command}"
# Queries are NATS micro-service endpoints: osp.v1.q.<service>.<query>.
FIND = f"{PREFIX}.q.registry.find"
GET_RUN = f"{PREFIX}.q.scheduler.get"
# Heartbeats: core NATS, never stored; the last token is the agent's name.
HEARTBEAT = PREFIX + ".hb.{name}"
# Tasks: JSON messages on the work-queue stream OSP_WORK, one subject per capability,
# read by all the agents of the capability through one shared durable consumer.
WORK_STREAM = "OSP_WORK"
WORK = PREFIX + ".work.{capability}"
WORK_CONSUMER = "work-{capability}"

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
# How often to heartbeat a task in hand, at most (the scheduler's clients use 2 s); a
# task whose heartbeat_ms asks for more often gets heartbeat_ms / 3.
TASK_HEARTBEAT_SECONDS = 2.0
# How long one pull request for a task waits on the server before we ask again. It also
# bounds how long shutting down waits for the pull requests out.
FETCH_SECONDS = 2.0
# The delay before an unanswered task comes back; also how often to ask the scheduler
# for an answer to our question when the answer signal did not arrive.
RETRY_SECONDS = 1.0
# How often to try again to join a work queue whose stream is not there yet.
JOIN_RETRY_SECONDS = 5.0
# Sends of one report (with the same command id) before giving the task up.
REPORT_TRIES = 3
# A sleeping task checks for a cancel this often.
SLEEP_STEP_SECONDS = 0.1
# On shutdown, how long the tasks in hand may take to finish before they are stopped.
SHUTDOWN_GRACE_SECONDS = 10.0
# Refusals of `started` that mean the task is not to be worked on: the run ended or moved
# on to another attempt, or another agent started this one.
NOT_OURS = ("illegal_transition", "not_found", "conflict")
# Final states of a run (the scheduler's RunStatus).
FINAL = ("completed", "failed", "cancelled")


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


async def command(
    nc: NATS, subject: str, body: dict[str, Any], actor: str, command_id: str | None = None
) -> tuple[int, Any]:
    """Sends a command and waits for its outcome: (seq, result), or raises :class:`Refused`.

    A command is stored in the inbox stream, so it survives until a service instance
    takes it. JetStream's own reply only says "stored"; the service's answer needs a
    subject of its own, named in ``Osp-Reply-To``. Subscribe to it *before* publishing,
    or the answer may come before anyone listens.

    ``command_id`` (default: a fresh one) is the idempotency key: to resend after a
    timeout, send the same body with the same id; the service applies it once and
    answers every copy with that outcome.
    """
    reply_to = nc.new_inbox()
    answers = await nc.subscribe(reply_to)
    headers = {
        CONTENT_TYPE: JSON,
        COMMAND_ID: command_id or str(uuid.uuid4()),
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


async def wait_for(event: asyncio.Event, seconds: float) -> bool:
    """Waits until `event` is set or `seconds` pass; True if it was set."""
    try:
        await asyncio.wait_for(event.wait(), timeout=seconds)
        return True
    except asyncio.TimeoutError:
        return False


# --- Tasks ---------------------------------------------------------------------------
#
# The scheduler puts each attempt of a run on the work queue as a TaskMessage (JSON):
#
#   {"run_id": "r-1", "attempt": 1, "dispatch": 1, "capability": "summarize",
#    "input": {...}, "deadline": <unix ms, optional>, "heartbeat_ms": 15000,
#    "signal_subject": "osp.v1.task.r-1.signal",
#    "heartbeat_subject": "osp.v1.task.r-1.heartbeat"}
#
# Taking the message is not enough to own the attempt: the agent reports `started`, and
# only a reply with `go: true` makes the attempt its own. Every later report names the
# run and the attempt; the scheduler refuses reports about an attempt that is no longer
# the agent's (cancelled, timed out, given to another agent).


class TaskFailed(Exception):
    """The task failed: reported as ``failed`` with ``{kind, message}`` and ``retryable``.

    ``kind`` is what a run's ``retryOn`` matches; ``retryable`` says whether another
    attempt may succeed (the run's retry policy then decides whether there is one).
    """

    def __init__(self, kind: str, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable


class Stop(Exception):
    """The task must stop now: cancelled, or the agent is shutting down.

    ``failure`` is what to report, or None to report nothing (a forced cancel: the run
    is already cancelled, the scheduler wants no more reports).
    """

    def __init__(self, failure: TaskFailed | None) -> None:
        super().__init__(failure.message if failure else "stopped")
        self.failure = failure


class Lost(Exception):
    """The attempt is no longer ours: the scheduler refused a report about it, or never
    answered one, or the run has moved on. Stop without reporting anything more."""


# Nothing found yet (None is a valid answer).
MISSING = object()


class TaskRun:
    """One task in hand: one attempt of one run, from ``started`` to its last report."""

    def __init__(self, worker: Worker, task: dict[str, Any]) -> None:
        self.worker = worker
        self.run_id: str = task["run_id"]
        self.attempt: int = task["attempt"]
        self.dispatch: int = task.get("dispatch", 1)
        self.capability: str = task["capability"]
        self.input: Any = task.get("input")
        self.heartbeat_ms: int = task["heartbeat_ms"]
        self.signal_subject: str = task["signal_subject"]
        self.heartbeat_subject: str = task["heartbeat_subject"]
        if not (isinstance(self.run_id, str) and isinstance(self.attempt, int) and isinstance(self.heartbeat_ms, int)):
            raise TypeError("run_id must be a string, attempt and heartbeat_ms integers")
        self.label = f"{self.run_id}/{self.attempt}"
        # What the signals said: the cancel, if one came, and the answers by question.
        self.cancel: dict[str, Any] | None = None
        self.answers: dict[str, Any] = {}
        # Set whenever a signal arrives (or the agent starts shutting down).
        self.changed = asyncio.Event()

    async def take(self, msg: Msg) -> None:
        """Takes the task: ``started``, then (if ours) execute it while heartbeating."""
        nc = self.worker.nc
        # Signals are core NATS: only heard while subscribed, so subscribe before
        # anything can be sent to us (a cancel may come as soon as we have started).
        signals = await nc.subscribe(self.signal_subject, cb=self.on_signal)
        try:
            # `started` decides whether the attempt is ours. Its command id is derived
            # from the task, so if the reply is lost and the task comes back to us, the
            # scheduler answers the resend with the first outcome instead of deciding
            # again.
            key = f"osp:started:{self.run_id}:{self.attempt}:{self.dispatch}:{self.worker.name}"
            started_id = str(uuid.uuid5(uuid.NAMESPACE_URL, key))
            body = {"run_id": self.run_id, "attempt": self.attempt, "agent": self.worker.name}
            try:
                _, start = await command(
                    nc, SCHEDULER.format(command="started"), body, self.worker.actor, command_id=started_id
                )
            except Refused as refused:
                if refused.code in NOT_OURS:
                    # The run has ended or moved on, or another agent has the attempt.
                    await msg.ack()
                    say(f"task {self.label} dropped ({refused.code}: {refused})")
                    return
                # Anything else (`unavailable`: the scheduler could not reach its log;
                # or a refusal of this agent's report): give the task back, for another
                # agent or a later try.
                complain(f"task {self.label}: started refused ({refused.code}: {refused}); handing it back")
                await msg.nak(delay=RETRY_SECONDS)
                return
            except (nats.errors.Error, asyncio.TimeoutError) as error:
                # No scheduler answered in time: hand the task back (to any agent) in 1 s.
                complain(f"task {self.label}: no answer to started ({type(error).__name__}); handing it back")
                await msg.nak(delay=RETRY_SECONDS)
                return
            # Answered either way: the work message has done its job. From now on the
            # scheduler watches the attempt through its heartbeats, not the work queue.
            await msg.ack()
            if not start.get("go"):
                say(f"task {self.label} dropped ({start.get('reason') or 'not ours'})")
                return
            beating = asyncio.create_task(self.beat())
            try:
                outcome = await self.execute()
            finally:
                beating.cancel()
            say(f"task {self.label} {outcome}")
        finally:
            try:
                await signals.unsubscribe()
            except nats.errors.Error:
                pass  # the connection is closing anyway

    async def on_signal(self, msg: Msg) -> None:
        """A signal about the run: JSON tagged by ``signal`` (cancel, answer, pause, resume).

        Signals are hints that arrive while we listen; the run's state (the ``get``
        query) is the truth. A signal for another attempt of the run is not for us.
        """
        try:
            signal = json.loads(msg.data)
        except ValueError:
            complain(f"task {self.label}: a signal that is not JSON: {msg.data[:100]!r}")
            return
        if not isinstance(signal, dict) or signal.get("attempt") != self.attempt:
            return
        kind = signal.get("signal")
        if kind == "cancel":
            # {"signal": "cancel", "attempt", "graceful", "deadline"?, "reason"}
            self.cancel = signal
        elif kind == "answer":
            # {"signal": "answer", "attempt", "request_id", "answer"}
            self.answers[str(signal.get("request_id"))] = signal.get("answer")
        # "pause" and "resume" stop and restart the run's dispatching; the attempt in
        # hand may go on, so there is nothing to do.
        self.changed.set()

    async def beat(self) -> None:
        """Heartbeats the task until cancelled: ``{"attempt", "agent"}`` on the task's
        heartbeat subject (core NATS, never stored). An attempt silent for the run's
        heartbeat timeout fails with kind ``heartbeat``."""
        every = TASK_HEARTBEAT_SECONDS
        if self.heartbeat_ms > 0:  # a third of it, so two beats may be lost in a row
            every = max(0.05, min(every, self.heartbeat_ms / 3000))
        body = json.dumps({"attempt": self.attempt, "agent": self.worker.name}).encode()
        while True:
            try:
                await self.worker.nc.publish(self.heartbeat_subject, body, headers={CONTENT_TYPE: JSON})
            except nats.errors.Error as error:
                complain(f"task {self.label}: heartbeat not sent: {error}")
            await asyncio.sleep(every)

    async def execute(self) -> str:
        """Runs the capability's handler and reports how it ended; returns the outcome as
        printed (``completed {...}``, ``failed (<kind>)``, ``stopped (cancelled)`` or
        ``abandoned (...)``)."""
        handler = HANDLERS.get(self.capability)
        try:
            try:
                if handler is None:
                    raise TaskFailed("unsupported", f"this agent cannot do {self.capability!r}", retryable=False)
                output = await handler(self, self.input)
            except Lost:
                raise
            except Stop as stop:
                if stop.failure is None:
                    return "stopped (cancelled)"
                failure = stop.failure
            except TaskFailed as failed:
                failure = failed
            except Exception as error:  # a bug in the handler: say so rather than hang
                failure = TaskFailed("error", f"{type(error).__name__}: {error}", retryable=False)
            else:
                await self.report("completed", output=output)
                return f"completed {json.dumps(output)}"
            await self.report(
                "failed", error={"kind": failure.kind, "message": failure.message}, retryable=failure.retryable
            )
            return f"failed ({failure.kind})"
        except Lost as lost:
            return f"abandoned ({lost})"

    def check(self) -> None:
        """Raises :class:`Stop` if the task must stop: call it between steps.

        A graceful cancel leaves time to clean up and report ``failed`` with kind
        ``cancelled`` (before the signal's ``deadline``); a forced one means the run is
        cancelled already: stop, report nothing.
        """
        if self.cancel is not None:
            reason = str(self.cancel.get("reason") or "cancelled")
            if self.cancel.get("graceful"):
                raise Stop(TaskFailed("cancelled", reason, retryable=False))
            raise Stop(None)
        if self.worker.aborting.is_set():
            raise Stop(TaskFailed("interrupted", "the agent shut down before the task ended", retryable=True))

    async def report(self, what: str, **fields: Any) -> tuple[int, Any]:
        """Sends report `what` (``progress``, ``log``, ``ask``, ``completed``, ``failed``)
        about this attempt and returns the reply's (seq, result).

        A report with no answer is sent again with the same command id, so it is applied
        once however many copies arrive. A refused report, or one never answered, means
        the attempt is no longer ours (:class:`Lost`).
        """
        body = {"run_id": self.run_id, "attempt": self.attempt, "agent": self.worker.name, **fields}
        command_id = str(uuid.uuid4())
        for tries in range(1, REPORT_TRIES + 1):
            try:
                seq, result = await command(
                    self.worker.nc, SCHEDULER.format(command=what), body, self.worker.actor, command_id=command_id
                )
            except Refused as refused:
                raise Lost(f"{what} refused, {refused.code}: {refused}") from None
            except (nats.errors.Error, asyncio.TimeoutError) as error:
                again = "sending it again" if tries < REPORT_TRIES else "giving up"
                complain(f"task {self.label}: no answer to {what} ({type(error).__name__}); {again}")
                continue
            # The reply's result is {"status", "cancelling"}: cancelling means a graceful
            # cancel is under way (its signal may have been missed): stop, as for one.
            if isinstance(result, dict) and result.get("cancelling") and self.cancel is None:
                self.cancel = {"signal": "cancel", "graceful": True, "reason": "the run is being cancelled"}
            return seq, result
        raise Lost(f"no answer to {what}")

    # The steps a handler uses. Each first checks for a cancel.

    async def progress(self, current: int, total: int | None, message: str | None) -> None:
        """Reports progress: ``{current, total, message}``."""
        self.check()
        await self.report("progress", current=current, total=total, message=message)

    async def log(self, level: str, message: str) -> None:
        """Reports a log line; `level` is ``debug``, ``info``, ``warn`` or ``error``."""
        self.check()
        await self.report("log", level=level, message=message)

    async def sleep(self, seconds: float) -> None:
        """Works for `seconds`, in short steps, checking for a cancel between them."""
        end = asyncio.get_running_loop().time() + seconds
        while True:
            self.check()
            left = end - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await asyncio.sleep(min(SLEEP_STEP_SECONDS, left))

    async def ask(self, question: Any) -> Any:
        """Asks a person `question` and waits for the answer (the run is ``awaiting``
        meanwhile; heartbeats go on).

        The answer comes as a signal ``{"signal": "answer", "request_id", "answer"}``.
        A signal sent while we were not listening is lost, so every second without one
        we also ask the scheduler: ``get`` lists the run's questions with their answers.
        """
        request_id = f"q{self.attempt}"  # ours to choose: a token, unique in the run
        seq, _ = await self.report("ask", request_id=request_id, question=question)
        while True:
            self.changed.clear()  # clear, then look: a signal arriving now is not missed
            self.check()
            if request_id in self.answers:
                return self.answers[request_id]
            if await wait_for(self.changed, RETRY_SECONDS):
                continue
            answer = await self.poll_answer(request_id, seq)
            if answer is not MISSING:
                return answer

    async def poll_answer(self, request_id: str, seq: int) -> Any:
        """Looks for the answer in the run's state (``get``), read at least as far as our
        question (``Osp-Min-Seq``: the ask's seq); MISSING if there is none yet."""
        try:
            _, run = await query(self.worker.nc, GET_RUN, {"run_id": self.run_id}, min_seq=seq)
        except (Refused, nats.errors.Error, asyncio.TimeoutError):
            return MISSING  # lagging, or no scheduler answering now: look again later
        for asked in run.get("inputs") or []:
            if asked.get("request_id") == request_id and "answer" in asked:
                return asked["answer"]
        # While we wait, the run may have ended or moved on (timed out, cancelled).
        attempts = run.get("attempts") or []
        latest = attempts[-1] if attempts else {}
        if run.get("status") in FINAL or latest.get("attempt") != self.attempt or latest.get("outcome"):
            raise Lost(f"the run is {run.get('status')}, this attempt is over")
        return MISSING


# --- What the agent can do: one handler per capability ---------------------------------
#
# A handler gets the task and its input and returns the output (any JSON value), or
# raises TaskFailed. It reports progress, log lines and questions through the task.


async def summarize(task: TaskRun, task_input: Any) -> Any:
    """``{"text": ...}`` → ``{"summary": <first 5 words>, "words": <count>}``, with two
    progress reports and a log line; ``sleep_ms``, ``ask`` and ``fail`` in the input
    make it work a while, ask a question, or fail."""
    if not isinstance(task_input, dict) or not isinstance(task_input.get("text", ""), str):
        raise TaskFailed("invalid_input", 'the input must be an object with a string "text"', retryable=False)
    sleep_ms = task_input.get("sleep_ms", 0)
    if not isinstance(sleep_ms, (int, float)) or sleep_ms < 0:
        raise TaskFailed("invalid_input", '"sleep_ms" must be a number of milliseconds', retryable=False)
    words = task_input.get("text", "").split()

    await task.progress(1, 2, "read the input")
    await task.log("info", f"summarizing {len(words)} word{'' if len(words) == 1 else 's'}")
    if sleep_ms:
        await task.sleep(sleep_ms / 1000)
    output: dict[str, Any] = {"summary": " ".join(words[:5]), "words": len(words)}
    if "ask" in task_input:
        output["answer"] = await task.ask(task_input["ask"])
    if "fail" in task_input:
        kind = str(task_input["fail"])
        raise TaskFailed(kind, f"failed on purpose with kind {kind!r}, as the input asked", retryable=True)
    await task.progress(2, 2, "summarized")
    return output


async def echo(task: TaskRun, task_input: Any) -> Any:
    """Outputs the input as it came."""
    return task_input


HANDLERS: dict[str, Callable[[TaskRun, Any], Awaitable[Any]]] = {"summarize": summarize, "echo": echo}


class Worker:
    """Takes tasks for the agent's capabilities and runs them, at most `max_concurrency`
    at once (what the agent card promises).

    A slot is taken *before* asking for a task and given back when the task is done, so
    the agent never holds more tasks than it can run: the others stay on the queue for
    the other agents of the capability.
    """

    def __init__(self, nc: NATS, name: str, actor: str, capabilities: list[str], max_concurrency: int) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.name = name
        self.actor = actor
        self.capabilities = capabilities
        self.slots = asyncio.Semaphore(max_concurrency)
        self.stopping = asyncio.Event()  # take no new tasks
        self.aborting = asyncio.Event()  # stop the tasks in hand
        self.queues: dict[str, Any] = {}  # capability -> pull subscription (None: not joined yet)
        self.loops: list[asyncio.Task[None]] = []
        self.handling: set[asyncio.Task[None]] = set()
        self.runs: set[TaskRun] = set()

    async def join(self, capability: str, quiet: bool = False) -> Any:
        """Binds to the capability's shared consumer, creating it if it is missing;
        None (and a complaint unless `quiet`) when it cannot be done yet.

        All the agents of a capability share the durable pull consumer ``work-<cap>``,
        so each task goes to one of them. It is created with the settings every agent
        uses: explicit acks, 30 s to answer a task before it goes to another agent,
        unlimited deliveries, at most 1,000 tasks out at once.
        """
        durable = WORK_CONSUMER.format(capability=capability)
        subject = WORK.format(capability=capability)
        try:
            try:
                await self.js.consumer_info(WORK_STREAM, durable)
            except nats.js.errors.NotFoundError:
                config = ConsumerConfig(
                    durable_name=durable,
                    filter_subject=subject,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=30,  # seconds
                    max_deliver=-1,
                    max_ack_pending=1000,
                )
                # Creating a consumer that exists with the same settings is no error, so
                # two agents starting at once are fine.
                await self.js.add_consumer(WORK_STREAM, config)
            queue = await self.js.pull_subscribe_bind(durable=durable, stream=WORK_STREAM)
        except (nats.errors.Error, asyncio.TimeoutError) as error:
            # Most likely the stream OSP_WORK is not there yet: the services create it
            # when they start.
            if not quiet:
                complain(f"cannot take tasks for {capability!r} yet ({type(error).__name__}: {error}); "
                         f"trying again every {JOIN_RETRY_SECONDS:g} s")
            return None
        say(f"taking tasks from {subject} (consumer {durable})")
        return queue

    async def join_all(self) -> None:
        """Joins the work queue of every capability."""
        for capability in self.capabilities:
            self.queues[capability] = await self.join(capability)

    def start(self) -> None:
        """Starts taking tasks: one loop per capability."""
        self.loops = [asyncio.create_task(self.take_tasks(capability)) for capability in self.capabilities]

    async def take_tasks(self, capability: str) -> None:
        """Takes tasks of `capability`, one at a time, whenever a slot is free, until
        the agent stops."""
        queue = self.queues.get(capability)
        while not self.stopping.is_set():
            if queue is None:
                if not await wait_for(self.stopping, JOIN_RETRY_SECONDS):
                    queue = self.queues[capability] = await self.join(capability, quiet=True)
                continue
            await self.slots.acquire()  # released by handle() once the task is done
            if self.stopping.is_set():
                self.slots.release()
                break
            try:
                # A pull request for one task, held by the server for FETCH_SECONDS.
                [msg] = await queue.fetch(1, timeout=FETCH_SECONDS)
            except asyncio.TimeoutError:  # no task came (nats.errors.TimeoutError is one)
                self.slots.release()
                continue
            except nats.errors.Error as error:
                self.slots.release()
                complain(f"cannot fetch tasks for {capability!r}: {type(error).__name__}: {error}")
                await wait_for(self.stopping, RETRY_SECONDS)
                continue
            if self.stopping.is_set():
                await msg.nak()  # give it back at once, for another agent
                self.slots.release()
                break
            handling = asyncio.create_task(self.handle(msg))
            self.handling.add(handling)
            handling.add_done_callback(self.handling.discard)
        if queue is not None:
            try:
                await queue.unsubscribe()
            except nats.errors.Error:
                pass

    async def handle(self, msg: Msg) -> None:
        """Handles one work message, then frees its slot."""
        try:
            try:
                run = TaskRun(self, json.loads(msg.data))
            except (ValueError, KeyError, TypeError) as error:
                # Not a task we can read: no agent could; never deliver it again.
                complain(f"not a task message on {msg.subject} ({type(error).__name__}: {error}); dropped")
                await msg.term()
                return
            self.runs.add(run)
            try:
                await run.take(msg)
            finally:
                self.runs.discard(run)
        except Exception as error:  # e.g. the connection closed under us
            complain(f"task on {msg.subject}: {type(error).__name__}: {error}")
        finally:
            self.slots.release()

    async def stop(self) -> None:
        """Stops taking tasks; lets the tasks in hand finish for a while, then stops them
        (they report ``failed``, kind ``interrupted``, retryable, so another agent can take
        the next attempt if the run's retry policy allows one)."""
        self.stopping.set()
        # Each loop ends once its pull request is over; one waiting for a free slot is
        # simply cancelled.
        if self.loops:
            _, waiting = await asyncio.wait(self.loops, timeout=FETCH_SECONDS + 1)
            for loop in waiting:
                loop.cancel()
        if self.handling:
            _, busy = await asyncio.wait(self.handling, timeout=SHUTDOWN_GRACE_SECONDS)
            if busy:
                self.aborting.set()
                for run in self.runs:
                    run.changed.set()  # wake the ones waiting for an answer
                _, busy = await asyncio.wait(busy, timeout=TIMEOUT_SECONDS * REPORT_TRIES)
                for handling in busy:
                    handling.cancel()


async def connect(url: str, name: str) -> NATS:
    """Connects to NATS, giving up after `CONNECT_SECONDS` (nats-py would otherwise keep
    trying for minutes). Once connected, nats-py reconnects on its own."""
    last_error: list[Exception] = []

    async def on_error(error: Exception) -> None:
        # While the server is down nats-py reports every failed reconnect, every two
        # seconds: say a cause once, not once per try.
        repeated = bool(last_error) and str(last_error[-1]) == str(error)
        last_error.append(error)
        if nc_ready.is_set() and not repeated:
            complain(f"NATS: {str(error).removeprefix('nats: ')} (reconnecting)")

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
    """The agent's life: register, beat, join the work queues, find itself, take tasks
    until the end, unregister.

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

        # 3. Join the work queue of each capability (tasks wait there until taken).
        worker = Worker(nc, args.name, actor, args.capability, args.max_concurrency)
        await worker.join_all()

        # 4. Find the online agents with our first capability; we must be among them.
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

        # 5. Take tasks until told to stop; then stop taking them and let those in hand
        #    end.
        if status == 0:
            worker.start()
            try:
                await asyncio.wait_for(stop.wait(), timeout=args.run_for)
            except asyncio.TimeoutError:
                pass  # --run-for has passed
            await worker.stop()

        # 6. Stop beating, then remove the entry (the reason is kept in the log).
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


def default_nats_url() -> str:
    """$OSP_NATS_URL, else the newest ``osp dev`` running on this machine, else port 4222.

    ``osp dev`` records its URL in ``<state>/osp/dev/<pid>.url`` ($XDG_STATE_HOME, else
    ~/.local/state) while it runs; a record whose process is gone is skipped.
    """
    if os.environ.get("OSP_NATS_URL", "").strip():
        return os.environ["OSP_NATS_URL"]
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    records = []
    folder = os.path.join(state, "osp", "dev")
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        pid = name.removesuffix(".url")
        if not name.endswith(".url") or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except PermissionError:
            pass  # alive, someone else's
        except OSError:
            continue
        path = os.path.join(folder, name)
        with open(path, encoding="utf-8") as record:
            records.append((os.path.getmtime(path), record.read().strip()))
    return max(records)[1] if records else "nats://127.0.0.1:4222"


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="An OSP agent that registers, heartbeats, executes tasks and unregisters."
    )
    parser.add_argument("--nats-url", default=default_nats_url(),
                        help="NATS server (default: $OSP_NATS_URL, else the newest `osp dev` on this machine, "
                             "else nats://127.0.0.1:4222)")
    parser.add_argument("--name", default="python-agent-1",
                        help="agent name, unique among agents (no '.', '*', '>' or spaces)")
    parser.add_argument("--description", default="An example agent written in Python", help="for people")
    parser.add_argument("--capability", action="append",
                        help="what it can do (summarize, echo); repeat for several (default: echo)")
    parser.add_argument("--max-concurrency", type=int, default=2,
                        help="tasks it holds at once, over all its capabilities (default: 2)")
    parser.add_argument("--heartbeat", type=float, default=5.0, metavar="SECONDS",
                        help="seconds between heartbeats (default: 5; keep it well under the registry's 15 s)")
    parser.add_argument("--run-for", type=float, metavar="SECONDS",
                        help="unregister and exit after this long (default: until SIGTERM or Ctrl-C)")
    args = parser.parse_args()
    args.capability = args.capability or ["echo"]
    if args.heartbeat <= 0:
        parser.error("--heartbeat must be more than 0")
    if not 1 <= args.max_concurrency <= 10_000:
        parser.error("--max-concurrency must be from 1 to 10000")
    return args


def failure(error: Exception, url: str) -> str:
    """What went wrong talking to NATS, in words, with what to check: the exception's
    class name and nats-py's terse text ("nats: timeout") say little on their own."""
    if isinstance(error, ConnectionError):
        return str(error)  # raised by connect(), which says it all
    lost = (
        nats.errors.ConnectionClosedError,
        nats.errors.ConnectionReconnectingError,
        nats.errors.StaleConnectionError,
        nats.errors.NoServersError,
    )
    if isinstance(error, lost):
        return f"lost the connection to NATS at {url} ({error}): is the server still running?"
    if isinstance(error, nats.errors.NoRespondersError):
        return f"no registry answers at {url}: start `osp dev`, or osp-registry, against it"
    if isinstance(error, nats.js.errors.NoStreamResponseError):
        return f"the NATS server at {url} has no OSP streams: start `osp dev`, or an OSP service, against it"
    # A command that timed out waiting for its answer is still in the inbox: a registry
    # that starts later applies it (an agent registered that way, never beating, is
    # marked offline after the timeout).
    if isinstance(error, asyncio.TimeoutError):  # nats.errors.TimeoutError is one
        return f"no answer in time from the registry at {url}: is it running?"
    return f"{error} (talking to NATS at {url})"


def main() -> None:
    """Runs the agent; exits 0 when it unregistered, 2 when refused, 1 on other failures."""
    args = parse_args()
    try:
        status = asyncio.run(run(args))
    except (ConnectionError, nats.errors.Error, asyncio.TimeoutError) as error:
        complain(f"error: {failure(error, args.nats_url)}")
        status = 1
    sys.exit(status)


if __name__ == "__main__":
    main()

"""Keep an idle Temporal worker long-polling an empty task queue for a while.

With no work on the task queue, every PollWorkflowTaskQueue /
PollActivityTaskQueue call stays open until the server gives up on it (about a
minute) — the point is that such a call outlives 70 s of silence through a proxy
without being cut. The worker runs for --duration seconds, then shuts down. With
--raw-poll-timeout T, one more PollWorkflowTaskQueue call with a T-second
deadline is made alongside the worker; its duration is reported as raw_poll_s
(it returns empty, OK, when the server gives up holding it). With
--hold-before-shutdown, the script prints {"event": "polled", ...} once the
polling time is over and waits for a line on stdin before shutting the worker
down, so the caller can look at the proxy while no poll has been cancelled yet
(shutdown cancels the in-flight ones).

Core (Rust) SDK logs are forwarded into Python logging; any record at WARNING or
above from the SDK, or a worker that stops by itself, fails the run (exit 1).
Prints one JSON summary line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import PollWorkflowTaskQueueRequest
from temporalio.client import Client
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.worker import Worker


@activity.defn
async def never_called() -> None:
    raise RuntimeError("the task queue should stay empty")


@workflow.defn
class NeverStarted:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(never_called, start_to_close_timeout=timedelta(seconds=5))


class Collect(logging.Handler):
    """Keeps every WARNING+ record so the run can fail on them at the end."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        # Also show it live: a hung test is easier to read with the cause on stderr.
        print(f"long_poll.py: {record.levelname} {record.name}: {record.getMessage()}", file=sys.stderr, flush=True)


async def run(args: argparse.Namespace, runtime: Runtime) -> dict:
    started = time.monotonic()
    client = await Client.connect(
        args.address,
        namespace=args.namespace,
        runtime=runtime,
        identity=f"strait-e2e-long-poll@{args.task_queue}",
    )
    worker = Worker(
        client,
        task_queue=args.task_queue,
        workflows=[NeverStarted],
        activities=[never_called],
        # A few pollers of each kind keep several long polls open at once.
        max_concurrent_workflow_task_polls=2,
        max_concurrent_activity_task_polls=2,
    )
    run_task = asyncio.create_task(worker.run())
    raw_task = asyncio.create_task(raw_poll(client, args)) if args.raw_poll_timeout else None
    # worker.run() only returns early on a fatal worker error (e.g. polling failed for good).
    done, _ = await asyncio.wait({run_task}, timeout=args.duration)
    if done:
        exc = run_task.exception()
        raise RuntimeError(f"worker stopped by itself after {time.monotonic() - started:.1f}s: {exc!r}")
    summary = {"task_queue": args.task_queue}
    if raw_task:
        # Normally done by now: the server gives up on the poll before --duration.
        summary["raw_poll_s"] = await asyncio.wait_for(raw_task, timeout=args.raw_poll_timeout)
    if args.hold_before_shutdown:
        print(json.dumps({"event": "polled", **summary}), flush=True)
        line = await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline), timeout=120)
        if not line:
            raise RuntimeError("stdin closed while holding before shutdown")
    await asyncio.wait_for(worker.shutdown(), timeout=30)
    await run_task
    summary["polled_s"] = round(time.monotonic() - started, 3)
    return summary


async def raw_poll(client: Client, args: argparse.Namespace) -> float:
    """One bare long poll on a queue nobody feeds; returns how long it was held."""
    started = time.monotonic()
    resp = await client.workflow_service.poll_workflow_task_queue(
        PollWorkflowTaskQueueRequest(
            namespace=args.namespace,
            task_queue=TaskQueue(name=f"{args.task_queue}-raw"),
            identity="strait-e2e-raw-poll",
        ),
        retry=False,
        timeout=timedelta(seconds=args.raw_poll_timeout),
    )
    if resp.task_token:
        raise RuntimeError("raw poll got a task from a queue nobody feeds")
    return round(time.monotonic() - started, 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="host:port of Temporal (or Strait)")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--duration", type=float, default=80.0, help="seconds to keep polling")
    parser.add_argument(
        "--raw-poll-timeout", type=float, default=0.0, help="also make one bare poll with this deadline (0: off)"
    )
    parser.add_argument(
        "--hold-before-shutdown", action="store_true", help="wait for a stdin line before shutting down"
    )
    args = parser.parse_args()

    collect = Collect()
    sdk_logger = logging.getLogger("temporalio")
    sdk_logger.addHandler(collect)
    sdk_logger.setLevel(logging.WARNING)
    runtime = Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(
                filter=TelemetryFilter(core_level="WARN", other_level="WARN"),
                # Core's poll errors ("Error while polling ...") arrive here as temporalio.core.* records.
                forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
            )
        )
    )
    try:
        # Bounds the whole run: connect, polling, the optional hold, shutdown.
        limit = args.duration + args.raw_poll_timeout + (120 if args.hold_before_shutdown else 0) + 45
        summary = asyncio.run(asyncio.wait_for(run(args, runtime), timeout=limit))
    except BaseException as exc:
        print(f"long_poll.py: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if collect.records:
        print(f"long_poll.py: failed: the SDK logged {len(collect.records)} warning/error record(s)", file=sys.stderr)
        return 1
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalization: the SDK's native threads can still be
    # running then and have crashed it (PyGILState_Release, SIGABRT) after a
    # run had already succeeded and printed its result.
    os._exit(code)

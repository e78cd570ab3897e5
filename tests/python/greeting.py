"""Run a Temporal worker and client against one address and complete a workflow.

The workflow calls an activity that builds a greeting; the client waits for the
result and prints one JSON line:

    {"workflow_id": ..., "run_id": ..., "result": ..., "elapsed_s": ...}

Exits non-zero (with the reason on stderr) on any failure or when --timeout
expires. Used by tests/e2e_temporal.rs and scripts/demo.sh to drive real SDK
traffic through Strait.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker


@activity.defn
async def compose_greeting(name: str) -> str:
    return f"Hello, {name}!"


@workflow.defn
class GreetingWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(
            compose_greeting,
            name,
            start_to_close_timeout=timedelta(seconds=10),
        )


async def run(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    client = await Client.connect(
        args.address,
        namespace=args.namespace,
        identity=f"strait-e2e-greeting@{args.task_queue}",
    )
    workflow_id = args.workflow_id or f"greeting-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=args.task_queue,
        workflows=[GreetingWorkflow],
        activities=[compose_greeting],
    ):
        handle = await client.start_workflow(
            GreetingWorkflow.run,
            args.name,
            id=workflow_id,
            task_queue=args.task_queue,
            execution_timeout=timedelta(seconds=args.timeout),
        )
        result = await handle.result()
    return {
        "workflow_id": handle.id,
        "run_id": handle.result_run_id,
        "result": result,
        "elapsed_s": round(time.monotonic() - started, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="host:port of Temporal (or Strait)")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--name", default="Strait", help="who to greet")
    parser.add_argument("--workflow-id", default=None)
    parser.add_argument("--timeout", type=float, default=60.0, help="overall deadline in seconds")
    args = parser.parse_args()
    try:
        # The outer deadline bounds connect + worker start + shutdown, not just the workflow.
        out = asyncio.run(asyncio.wait_for(run(args), timeout=args.timeout + 15))
    except BaseException as exc:  # report anything, including timeouts, as a failure
        print(f"greeting.py: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalization: the SDK's native threads can still be
    # running then and have crashed it (PyGILState_Release, SIGABRT) after a
    # run had already succeeded and printed its result.
    os._exit(code)

"""Load for the replication bench (benches/replication.rs): start workflows on cluster A, wait
until cluster B has them all.

Connects to both clusters (directly, never through Strait: only replication crosses the link) and
prints {"event": "ready"}. Then, for each JSON line on stdin
    {"prefix": "r1", "count": 200, "concurrency": 64, "timeout": 120}
it reads B's workflow count in the namespace (the baseline), starts `count` workflows
`<prefix>-<i>` (type TestbedWorkflow, task queue `testbed`; no worker runs them, so they stay
open) on A with at most `concurrency` starts in flight, and polls B's count every 50 ms, from the
first start on, until it has grown by `count`. It prints one line
    {"event": "done", "count": N, "start_s": S, "replicated_s": R, "polls": P}
with S = first start -> last start acknowledged, R = first start -> all `count` visible on B;
or {"event": "timeout", ...} with what B had when `timeout` seconds passed. EOF on stdin ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import timedelta

from temporalio.client import Client

POLL_S = 0.05
RPC_TIMEOUT = timedelta(seconds=30)


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


async def count_on(client: Client) -> int:
    return (await client.count_workflows(rpc_timeout=RPC_TIMEOUT)).count


async def run_once(a: Client, b: Client, req: dict) -> dict:
    prefix, count = str(req["prefix"]), int(req["count"])
    concurrency, timeout = max(1, int(req.get("concurrency", 64))), float(req.get("timeout", 120))
    baseline = await count_on(b)
    gate = asyncio.Semaphore(concurrency)

    async def start(i: int) -> None:
        async with gate:
            await a.start_workflow(
                "TestbedWorkflow",
                id=f"{prefix}-{i}",
                task_queue="testbed",
                rpc_timeout=RPC_TIMEOUT,
            )

    t0 = time.monotonic()
    deadline = t0 + timeout
    starts = asyncio.gather(*(start(i) for i in range(count)))
    start_s = None
    polls, seen = 0, baseline
    while True:
        if start_s is None and starts.done():
            starts.result()  # raises if a start failed
            start_s = time.monotonic() - t0
        seen = await count_on(b)
        polls += 1
        if seen - baseline >= count:
            break
        if time.monotonic() > deadline:
            starts.cancel()
            return {"event": "timeout", "count": count, "on_b": seen - baseline, "polls": polls}
        await asyncio.sleep(POLL_S)
    replicated_s = time.monotonic() - t0
    if start_s is None:  # replication kept up with the last acknowledgement
        await starts
        start_s = time.monotonic() - t0
    return {
        "event": "done",
        "count": count,
        "start_s": start_s,
        "replicated_s": replicated_s,
        "polls": polls,
    }


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", required=True, help="cluster A's frontend, host:port")
    p.add_argument("--b", required=True, help="cluster B's frontend, host:port")
    p.add_argument("--namespace", required=True)
    args = p.parse_args()
    a = await Client.connect(args.a, namespace=args.namespace)
    b = await Client.connect(args.b, namespace=args.namespace)
    emit({"event": "ready"})
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return 0
        if line.strip():
            emit(await run_once(a, b, json.loads(line)))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""Collect the errors a client gets for a namespace the server lacks, through a translating Strait.

Connects to --address (Strait) with --namespace (a client-side name whose server-side name the server
does not have) and makes calls that fail because of the namespace: describe the namespace, start a
workflow (with a typed search attribute), list workflows with a visibility query and describe a
workflow. For each it records the gRPC status, the message, and the namespace named by each
`NamespaceNotFoundFailure` in the error details (`grpc-status-details-bin`).

Prints one JSON line: {"calls": {name: {"status", "message", "details": [{"type", "namespace"}]}}}.
The Rust test (tests/e2e_translate.rs) judges it. Exits non-zero on an unexpected failure or when
--timeout expires.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import timedelta

from temporalio.api.errordetails.v1 import NamespaceNotFoundFailure
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError

CUSTOMER = SearchAttributeKey.for_keyword("CustomerId")


def describe_error(err: RPCError) -> dict:
    details = []
    for any_detail in err.grpc_status.details:
        entry = {"type": any_detail.type_url}
        failure = NamespaceNotFoundFailure()
        if any_detail.Unpack(failure):
            entry["namespace"] = failure.namespace
        details.append(entry)
    return {"status": err.status.name, "message": err.message, "details": details}


async def outcome(call) -> dict:
    try:
        await call()
    except RPCError as err:
        return describe_error(err)
    return {"status": "OK"}


async def run(args: argparse.Namespace) -> dict:
    client = await Client.connect(args.address, namespace=args.namespace)

    async def describe_namespace() -> None:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=args.namespace)
        )

    async def start_workflow() -> None:
        await client.start_workflow(
            "OrderWorkflow",
            id="translate-errors-wf",
            task_queue="translate-errors",
            execution_timeout=timedelta(seconds=10),
            search_attributes=TypedSearchAttributes([SearchAttributePair(CUSTOMER, "c1")]),
        )

    async def list_workflows() -> None:
        async for _ in client.list_workflows("CustomerId = 'c1'"):
            pass

    async def describe_workflow() -> None:
        await client.get_workflow_handle("translate-errors-wf").describe()

    calls = {
        "describe_namespace": describe_namespace,
        "start_workflow": start_workflow,
        "list_workflows": list_workflows,
        "describe_workflow": describe_workflow,
    }
    return {"namespace": args.namespace, "calls": {name: await outcome(c) for name, c in calls.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="host:port of Strait")
    parser.add_argument("--namespace", default="orders", help="client-side namespace")
    parser.add_argument("--timeout", type=float, default=30.0, help="overall deadline in seconds")
    args = parser.parse_args()
    try:
        out = asyncio.run(asyncio.wait_for(run(args), timeout=args.timeout))
    except BaseException as exc:  # report anything, including timeouts, as a failure
        print(f"translate_errors.py: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalization: the SDK's native threads can still be running then (see
    # greeting.py).
    os._exit(code)

"""Drive a workflow in client-side names through a translating Strait listener.

Connects to --address (Strait) with --namespace (the client-side name, `orders`) and runs a worker
and a client there. The workflow is started with the search attribute `CustomerId`
set to --customer; it runs an activity (which reports the namespace the server's activity task
names), upserts the attribute to --upserted, runs a child workflow (which reports its parent's
namespace as its history names it) and then waits for a `finish` signal.

While it waits, the client:
  * polls (bounded) `list_workflows` and `count_workflows` with the visibility query
    `<attribute> = '<upserted>'` until the workflow shows up, and checks the listed search attributes;
  * describes it and reads the search attributes from the SDK's typed view and the raw protobuf;
  * starts the same workflow id again and catches WorkflowAlreadyStartedError;
  * registers the namespace it uses (`orders`) again, which the server rejects naming it;
  * describes the namespace.
Then it signals `finish`, waits for the result and reads the whole history (the search attributes
of the started and upsert events, the child-initiated event's namespace).

Prints one JSON line with everything it observed; the Rust test (tests/e2e_translate.rs) judges it.
Exits non-zero (with the reason on stderr) on any SDK failure or when --timeout expires; checks are
left to the test so that a failure there shows all the observations at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError
from temporalio.worker import Worker

# The client-side name of the search attribute (config/translate.toml maps it for `orders`).
ATTRIBUTE = "CustomerId"
CUSTOMER = SearchAttributeKey.for_keyword(ATTRIBUTE)


@activity.defn
async def which_namespace() -> dict:
    info = activity.info()
    # workflow_namespace comes from the server's PollActivityTaskQueueResponse.
    return {"namespace": info.namespace, "workflow_namespace": info.workflow_namespace}


@workflow.defn
class ChildWorkflow:
    @workflow.run
    async def run(self) -> dict:
        parent = workflow.info().parent
        # The parent's namespace comes from the child's started event in its history.
        return {"parent_namespace": parent.namespace if parent else None}


@workflow.defn
class OrderWorkflow:
    def __init__(self) -> None:
        self._finish = False

    @workflow.run
    async def run(self, upserted: str) -> dict:
        seen_at_start = workflow.info().typed_search_attributes.get(CUSTOMER)
        act = await workflow.execute_activity(
            which_namespace, start_to_close_timeout=timedelta(seconds=20)
        )
        workflow.upsert_search_attributes([CUSTOMER.value_set(upserted)])
        child = await workflow.execute_child_workflow(
            ChildWorkflow.run,
            id=f"{workflow.info().workflow_id}-child",
            execution_timeout=timedelta(seconds=60),
        )
        await workflow.wait_condition(lambda: self._finish)
        return {
            "attribute_at_start": seen_at_start,
            "attribute_at_end": workflow.info().typed_search_attributes.get(CUSTOMER),
            "activity": act,
            "child": child,
        }

    @workflow.signal
    def finish(self) -> None:
        self._finish = True


def attribute_keys(payloads_map) -> list[str]:
    """The keys of a protobuf SearchAttributes.indexed_fields map, sorted."""
    return sorted(payloads_map.indexed_fields.keys())


def keyword_value(payloads_map, key: str) -> str | None:
    payload = payloads_map.indexed_fields.get(key)
    if payload is None:
        return None
    return json.loads(payload.data.decode())


async def poll_visibility(client: Client, query: str, workflow_id: str, deadline: float) -> dict:
    """Lists and counts with `query` until the workflow is listed (visibility lags behind)."""
    attempts = 0
    last: dict = {}
    while True:
        attempts += 1
        listed = [w async for w in client.list_workflows(query, limit=20)]
        count = (await client.count_workflows(query)).count
        mine = [w for w in listed if w.id == workflow_id]
        last = {
            "query": query,
            "attempts": attempts,
            "listed_ids": [w.id for w in listed],
            "count": count,
        }
        if mine:
            w = mine[0]
            last["typed_value"] = w.typed_search_attributes.get(CUSTOMER)
            last["raw_keys"] = attribute_keys(w.raw_info.search_attributes)
            return last
        if time.monotonic() > deadline:
            last["timed_out"] = True
            return last
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    deadline = started + args.timeout
    out: dict = {"namespace": args.namespace, "workflow_id": args.workflow_id}
    client = await Client.connect(
        args.address,
        namespace=args.namespace,
        identity=f"strait-e2e-translate@{args.task_queue}",
    )
    async with Worker(
        client,
        task_queue=args.task_queue,
        workflows=[OrderWorkflow, ChildWorkflow],
        activities=[which_namespace],
    ):
        handle = await client.start_workflow(
            OrderWorkflow.run,
            args.upserted,
            id=args.workflow_id,
            task_queue=args.task_queue,
            execution_timeout=timedelta(seconds=args.timeout),
            search_attributes=TypedSearchAttributes([SearchAttributePair(CUSTOMER, args.customer)]),
        )
        out["run_id"] = handle.result_run_id

        query = f"{ATTRIBUTE} = '{args.upserted}'"
        out["visibility"] = await poll_visibility(client, query, args.workflow_id, deadline)
        # The initial value no longer matches once the upsert is visible.
        out["visibility_old_value_count"] = (
            await client.count_workflows(f"{ATTRIBUTE} = '{args.customer}'")
        ).count

        desc = await handle.describe()
        out["describe"] = {
            "namespace": desc.namespace,
            "typed_value": desc.typed_search_attributes.get(CUSTOMER),
            "typed_names": sorted(p.key.name for p in desc.typed_search_attributes),
            "raw_keys": attribute_keys(desc.raw_description.workflow_execution_info.search_attributes),
            "status": desc.status.name if desc.status else None,
        }

        try:
            await client.start_workflow(
                OrderWorkflow.run,
                args.upserted,
                id=args.workflow_id,
                task_queue=args.task_queue,
                search_attributes=TypedSearchAttributes([SearchAttributePair(CUSTOMER, args.customer)]),
            )
            out["already_started"] = {"raised": None}
        except WorkflowAlreadyStartedError as err:
            # The SDK raises this while handling the server's ALREADY_EXISTS RPCError.
            rpc = err.__context__ if isinstance(err.__context__, RPCError) else None
            out["already_started"] = {
                "raised": type(err).__name__,
                "workflow_id": err.workflow_id,
                "run_id": err.run_id,
                "rpc_status": rpc.status.name if rpc else None,
                "rpc_message": rpc.message if rpc else None,
                "rpc_details": [d.type_url for d in rpc.grpc_status.details] if rpc else [],
            }

        try:
            await client.workflow_service.register_namespace(
                RegisterNamespaceRequest(
                    namespace=args.namespace,
                    workflow_execution_retention_period=timedelta(days=1),
                )
            )
            out["register_existing"] = {"raised": None}
        except RPCError as err:
            out["register_existing"] = {
                "raised": type(err).__name__,
                "status": err.status.name,
                "message": err.message,
                "details": [d.type_url for d in err.grpc_status.details],
            }

        ns = await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=args.namespace)
        )
        out["describe_namespace"] = {
            "name": ns.namespace_info.name,
            "aliases": dict(ns.config.custom_search_attribute_aliases),
        }

        await handle.signal(OrderWorkflow.finish)
        out["result"] = await handle.result()

    history = await handle.fetch_history()
    events: dict = {}
    for event in history.events:
        kind = event.WhichOneof("attributes")
        if kind == "workflow_execution_started_event_attributes":
            attrs = event.workflow_execution_started_event_attributes.search_attributes
            events["started_keys"] = attribute_keys(attrs)
            events["started_value"] = keyword_value(attrs, ATTRIBUTE)
        elif kind == "upsert_workflow_search_attributes_event_attributes":
            attrs = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            events["upsert_keys"] = attribute_keys(attrs)
            events["upsert_value"] = keyword_value(attrs, ATTRIBUTE)
        elif kind == "start_child_workflow_execution_initiated_event_attributes":
            events["child_initiated_namespace"] = (
                event.start_child_workflow_execution_initiated_event_attributes.namespace
            )
        elif kind == "child_workflow_execution_completed_event_attributes":
            events["child_completed_namespace"] = (
                event.child_workflow_execution_completed_event_attributes.namespace
            )
    events["count"] = len(history.events)
    out["history"] = events
    out["elapsed_s"] = round(time.monotonic() - started, 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="host:port of Strait")
    parser.add_argument("--namespace", default="orders", help="client-side namespace")
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--workflow-id", required=True)
    parser.add_argument("--customer", required=True, help="CustomerId at start")
    parser.add_argument("--upserted", required=True, help="CustomerId the workflow upserts")
    parser.add_argument("--timeout", type=float, default=90.0, help="overall deadline in seconds")
    args = parser.parse_args()
    try:
        # The outer deadline bounds connect + worker start + shutdown, not just the workflow.
        out = asyncio.run(asyncio.wait_for(run(args), timeout=args.timeout + 15))
    except BaseException as exc:  # report anything, including timeouts, as a failure
        print(f"translate_sdk.py: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
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

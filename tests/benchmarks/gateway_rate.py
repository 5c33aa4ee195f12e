"""The gateway's requests/s and latency beside the Kafka path's, at one fixed concurrency.

    python -m tests.benchmarks.gateway_rate [--concurrency 16] [--seconds 20] [--rounds 2]

Starts an embedded broker, one worker (the README's default settings, serving only minilm
0.1.0, so no other version warms up meanwhile) and `kinfer gateway`, then runs the same closed
loop three ways, taking turns for ``--rounds`` rounds, each for ``--seconds`` after a short
warm-up: ``--concurrency`` callers, each sending one request of ``--inputs`` texts and waiting
for its answer before sending the next:

- **kafka**: the SDK, `streams.client.InferenceClient.infer` (base64 rows, as the gateway asks);
- **http**: aiohttp posting Open Inference Protocol JSON to ``/v2/models/minilm/infer``;
- **grpc**: tritonclient's asyncio gRPC client, ``ModelInfer``.

Prints requests/s, p50 and p99 latency (ms) and the gateway process's CPU per request. All
processes share this machine's cores: the figures are for comparing the paths side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import tritonclient.grpc.aio as triton_grpc_aio

from streams.broker import EmbeddedBroker
from streams.client import InferenceClient
from tests.benchmarks.common import SERVED, cpu_seconds, percentile, text_for
from tests.support.gateway import GatewayServer
from tests.support.topics import create_worker_topics
from tests.support.worker import WorkerProcess

Call = Callable[[int], Awaitable[None]]


@dataclass
class Row:
    path: str
    requests: int
    seconds: float
    latencies_ms: list[float]
    gateway_cpu_s: float

    def line(self) -> str:
        rate = self.requests / self.seconds
        cpu = f"{self.gateway_cpu_s / self.requests * 1e3:6.2f}" if self.gateway_cpu_s else "     -"
        return (
            f"{self.path:<6} {rate:10.1f} {percentile(self.latencies_ms, 50):9.1f} "
            f"{percentile(self.latencies_ms, 99):9.1f} {cpu:>12}"
        )


async def closed_loop(
    call: Call, concurrency: int, warmup_s: float, seconds: float
) -> tuple[int, float, list[float]]:
    """``concurrency`` callers calling back to back; counts what finishes in the window."""
    latencies: list[float] = []
    start = time.monotonic() + warmup_s
    stop = start + seconds
    counter = iter(range(10**9))

    async def caller() -> None:
        while (now := time.monotonic()) < stop:
            await call(next(counter))
            done = time.monotonic()
            if now >= start:
                latencies.append((done - now) * 1e3)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return len(latencies), seconds, latencies


async def run(args: argparse.Namespace) -> list[Row]:
    inputs = args.inputs

    def texts(n: int) -> list[str]:
        return [text_for(n * inputs + i) for i in range(inputs)]

    def oip_body(batch: list[str]) -> dict[str, Any]:
        tensor = {"name": "text", "shape": [len(batch)], "datatype": "BYTES", "data": batch}
        return {"inputs": [tensor]}

    rows: list[Row] = []
    with EmbeddedBroker(silent=True) as broker:
        topics = await create_worker_topics(broker.bootstrap, "gwbench", partitions=4)
        served = {**SERVED, **topics, "models": "minilm:0.1.0"}
        gateway_settings = {
            "request_topic": topics["request_topic"],
            "gateway_reply_topic": f"kinfer.replies.{topics['app_id']}",
        }
        with (
            WorkerProcess(broker.bootstrap, served),
            GatewayServer(broker.bootstrap, gateway_settings) as gateway,
        ):
            assert gateway.proc is not None
            url = f"http://{gateway.http}/v2/models/minilm/infer"
            connector = aiohttp.TCPConnector(limit=args.concurrency)
            grpc_client = triton_grpc_aio.InferenceServerClient(gateway.grpc)
            async with (
                InferenceClient(
                    broker.bootstrap, topics["request_topic"], topics["response_topic"]
                ) as client,
                aiohttp.ClientSession(connector=connector) as session,
            ):

                async def kafka(n: int) -> None:
                    answer = await client.infer(texts(n), encoding="base64", timeout_s=60)
                    assert "error" not in answer, answer

                async def http(n: int) -> None:
                    async with session.post(url, json=oip_body(texts(n))) as response:
                        assert response.status == 200, await response.text()
                        await response.read()

                async def grpc(n: int) -> None:
                    batch = texts(n)
                    tensor = triton_grpc_aio.InferInput("text", [len(batch)], "BYTES")
                    tensor.set_data_from_numpy(np.array([t.encode() for t in batch], dtype=object))
                    await grpc_client.infer("minilm", [tensor])

                try:
                    # the paths take turns, round after round: load from elsewhere on the
                    # machine falls on all of them alike
                    for _ in range(args.rounds):
                        rows.append(await measure("kafka", kafka, args, None))
                        rows.append(await measure("http", http, args, gateway.proc.pid))
                        rows.append(await measure("grpc", grpc, args, gateway.proc.pid))
                finally:
                    await grpc_client.close()
    return rows


async def measure(path: str, call: Call, args: argparse.Namespace, pid: int | None) -> Row:
    cpu_before = cpu_seconds([pid]) if pid else 0.0
    count, seconds, latencies = await closed_loop(call, args.concurrency, args.warmup, args.seconds)
    cpu = (
        (cpu_seconds([pid]) - cpu_before) * args.seconds / (args.seconds + args.warmup)
        if pid
        else 0.0
    )
    return Row(path, count, seconds, latencies, cpu)


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=16, help="callers in flight")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per path")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured start per path")
    parser.add_argument("--inputs", type=int, default=1, help="texts per request")
    parser.add_argument("--rounds", type=int, default=2, help="times each path is measured")
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args))
    print(
        f"\nconcurrency {args.concurrency}, {args.inputs} text(s) per request, "
        f"{args.seconds:g} s per path (after {args.warmup:g} s of warm-up)"
    )
    print(f"{'path':<6} {'requests/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'gw CPU ms/req':>12}")
    for row in rows:
        print(row.line())
    print("all rounds:")
    for path in ("kafka", "http", "grpc"):
        mine = [row for row in rows if row.path == path]
        total = Row(
            path,
            sum(row.requests for row in mine),
            sum(row.seconds for row in mine),
            [ms for row in mine for ms in row.latencies_ms],
            sum(row.gateway_cpu_s for row in mine),
        )
        print(total.line())


if __name__ == "__main__":
    main()

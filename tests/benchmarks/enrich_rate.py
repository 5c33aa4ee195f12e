"""The enrichment route's events/s through one worker, beside the raw model limit.

    .venv/bin/python -m tests.benchmarks.enrich_rate --events 5000 [--json out.json]

A worker (``kinfer enrich``, kinfer's served defaults, one model version) serves the route
``orders -> orders.enriched`` (minilm, text ``$.note``, id ``$.order_id``) on an embedded Tansu
broker. Once it is ready, ``--events`` short events (``{"order_id": i, "note": "This is sentence
number i about a customer order...", "total": ...}``, ~18 tokens) are produced at once to the
source; the rate is events / (time from the first produce to the arrival of the last enriched
event on the sink), every one checked for its 384-float embedding. Then, with the worker
stopped, the model alone runs in this process on the same texts (tokenise + jitted forward,
``KINFER_MAX_BATCH`` texts per call): the most any pipeline could get out of it on this machine.
Both share the machine with the broker and this driver (on 2 cores, the worker's rate is also
bounded by their CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from streams.admin import ensure_topics
from streams.broker import EmbeddedBroker
from streams.client import start_reading
from tests.benchmarks.bench_model import measure_with_tokenisation
from tests.benchmarks.common import SERVED, SETTINGS, cpu_seconds, producer, text_for, unique
from tests.support.topics import create_worker_topics
from tests.support.worker import WorkerProcess


def event(n: int) -> bytes:
    """Source event number ``n``."""
    return orjson.dumps({"order_id": f"A{n}", "note": text_for(n), "total": 10 + n % 90})


async def flood_and_read(bootstrap: str, source: str, sink: str, events: int) -> dict[str, Any]:
    """Produce ``events`` events to ``source``; read them back enriched from ``sink``."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=5,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await start_reading(reader, [sink], timeout_s=20)
    values = [event(n) for n in range(events)]
    send = producer(bootstrap)
    await send.start()
    seen: set[bytes] = set()
    first_at: float | None = None
    try:
        started = time.perf_counter()
        deliveries = [
            await send.send(source, value, key=b"%d" % n) for n, value in enumerate(values)
        ]
        await asyncio.gather(*deliveries)
        produced_s = time.perf_counter() - started
        deadline = time.monotonic() + max(120.0, events / 10)
        while len(seen) < events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{events - len(seen)} of {events} events not enriched in time")
            for records in (await reader.getmany(timeout_ms=200, max_records=5000)).values():
                for record in records:
                    doc = orjson.loads(record.value)
                    assert len(doc["embedding"]) == 384, "enriched with its embedding"
                    seen.add(doc["order_id"].encode())
                    if first_at is None:
                        first_at = time.perf_counter()
        elapsed = time.perf_counter() - started
    finally:
        await send.stop()
        await reader.stop()
    steady = elapsed - ((first_at or started) - started)
    return {
        "events": events,
        "produce_s": round(produced_s, 3),
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(events / elapsed, 1),
        "first_to_last_s": round(steady, 3),
        "first_to_last_events_per_s": round(events / steady, 1) if steady > 0 else None,
    }


def model_limit(seconds: float) -> dict[str, Any]:
    """The model alone on the same texts: ``max_batch`` texts per call, and one per call."""
    from tests.benchmarks.run import load_runner

    runner = load_runner(warm_up=True)
    try:
        texts = [text_for(n) for n in range(SETTINGS.max_batch)]
        return {
            "texts_per_call": len(texts),
            "texts_per_s": round(measure_with_tokenisation(runner, texts, seconds), 1),
            "one_text_per_call_per_s": round(
                measure_with_tokenisation(runner, texts[:1], seconds / 2), 1
            ),
        }
    finally:
        runner.close()


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--limit-seconds", type=float, default=5.0, help="per model measurement")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    with EmbeddedBroker(silent=True) as broker:
        names = asyncio.run(create_worker_topics(broker.bootstrap, "enb", args.partitions))
        source = unique("orders")
        sink = f"{source}.enriched"
        asyncio.run(ensure_topics(broker.bootstrap, {source: args.partitions}))
        settings = {**SERVED, **names}
        command = [*("enrich", "--source", source, "--sink", sink, "--model", "minilm")]
        command += ["--text", "$.note", "--id", "$.order_id"]
        print(f"starting a worker (kinfer enrich, {SERVED}) ...", flush=True)
        with WorkerProcess(broker.bootstrap, settings, command=command) as worker:
            cpu_before = cpu_seconds([worker.pid])
            route = asyncio.run(flood_and_read(broker.bootstrap, source, sink, args.events))
            route["worker_cpu_ms_per_event"] = round(
                1000 * (cpu_seconds([worker.pid]) - cpu_before) / args.events, 2
            )
    print("measuring the model alone (worker and broker stopped) ...", flush=True)
    limit = model_limit(args.limit_seconds)
    result = {"route": route, "model_limit": limit, "served": SERVED, "partitions": args.partitions}
    print(
        f"enrichment route: {route['events']} events in {route['elapsed_s']:.1f} s = "
        f"{route['events_per_s']:.0f} events/s (first to last enriched: "
        f"{route['first_to_last_events_per_s']:.0f}/s; worker CPU "
        f"{route['worker_cpu_ms_per_event']:.2f} ms per event)"
    )
    print(
        f"raw model limit, same texts: {limit['texts_per_s']:.0f} texts/s "
        f"({limit['texts_per_call']} per call), {limit['one_text_per_call_per_s']:.0f}/s one per "
        f"call; the route reaches {route['events_per_s'] / limit['texts_per_s']:.2f}x"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()

"""Row 4 of the benchmark: partitions x worker processes in one consumer group."""

from __future__ import annotations

import argparse
from typing import Any

from streams.broker import EmbeddedBroker
from tests.benchmarks.pipeline import run_saturation, topics_for, warm, workers
from tests.benchmarks.table import Table


async def measure_scaling(
    args: argparse.Namespace,
    broker: EmbeddedBroker,
    limit: float,
    main_rate: float,
    results: dict[str, Any],
    table: Table,
) -> None:
    """Row 4: partitions x worker processes (one consumer group), 1 input per message."""
    points: list[dict[str, Any]] = [
        {"partitions": 4, "workers": 1, "inputs_per_s": main_rate, "from": "row 2"}
    ]
    for partitions, count in args.scaling:
        if (partitions, count) == (4, 1):
            continue
        topics = await topics_for(broker.bootstrap, partitions, f"p{partitions}w{count}")
        with workers(
            broker.bootstrap,
            partitions=partitions,
            count=count,
            topics=topics,
            log_dir=args.log_dir,
        ) as group:
            await warm(broker.bootstrap, group)
            run = await run_saturation(
                broker.bootstrap, group, seconds=args.seconds, per_message=1, expected_rate=limit
            )
        points.append({"partitions": partitions, "workers": count, **run.summary()})
    points.sort(key=lambda p: (p["workers"], p["partitions"]))
    for point in points:
        rate = point["inputs_per_s"]
        note = ""
        if point["workers"] > 1:
            note = "2 workers share 2 cores (each JAX forward wants both)"
            if point["partitions"] == 1:
                note += "; 1 partition: the second worker idles"
        cost = point.get("cpu_ms_per_request")
        if cost is not None:
            note = f"{cost:.1f} CPU-ms/req" + (f"; {note}" if note else "")
        table.add(
            "4",
            f"{point['partitions']} partition(s), {point['workers']} worker(s), "
            "1 input/msg, saturated",
            rate,
            ratio=rate / main_rate,
            ratio_of="4p/1w",
            note=note,
        )
    results["scaling"] = points

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
    limit: float | None,
    main_rate: float | None,
    results: dict[str, Any],
    table: Table,
) -> None:
    """Row 4: partitions x worker processes (one consumer group), 1 input per message.

    The 4-partition, 1-worker point is row 2's when it ran (``main_rate``), measured here if not.
    """
    points: list[dict[str, Any]] = []
    if main_rate is not None:
        points.append({"partitions": 4, "workers": 1, "inputs_per_s": main_rate, "from": "row 2"})
    for partitions, count in args.scaling + ([] if main_rate is not None else [(4, 1)]):
        if (partitions, count) == (4, 1) and main_rate is not None:
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
                broker.bootstrap,
                group,
                seconds=args.seconds / 2,
                per_message=1,
                expected_rate=limit,
            )
        points.append({"partitions": partitions, "workers": count, **run.summary()})
    points.sort(key=lambda p: (p["workers"], p["partitions"]))
    base = next(p["inputs_per_s"] for p in points if (p["partitions"], p["workers"]) == (4, 1))
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
            ratio=rate / base if base else None,
            ratio_of="4p/1w",
            note=note,
        )
    results["scaling"] = points

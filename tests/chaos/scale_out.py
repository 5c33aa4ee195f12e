"""Scale-out under a backlog: a second worker joins the group while the first is busy.

Produces ``--requests`` requests up front, starts one worker, and once it has answered
``--join-after`` of them starts a second worker in the same group. The rebalance this causes
makes the first worker hand back partitions; what it had started but not committed by then is
answered again by the new owner. Prints::

    sent=8000 answered=8000 lost=0 duplicates=0 seconds=49.0 max_in_flight=1024

Run it with a large and a small ``--max-in-flight`` to see why the default is what it is: a
worker gives up its partitions only after answering what it started, and a rebalance waits for it
about ``broker_rebalance_timeout`` (5 s) before going on without it.

    python -m tests.chaos.scale_out --requests 8000 --max-in-flight 4096

Exits 1 if any request is lost.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

from streams.broker import EmbeddedBroker
from tests.chaos.tools import produce_records, request_value
from tests.support.answers import AnswerReader
from tests.support.topics import create_worker_topics
from tests.support.worker import WorkerProcess

#: one 16-token bucket keeps warm-up short; the backlog is what matters here
BUCKETS = {"KINFER_BATCH_BUCKETS": "16", "KINFER_SEQ_BUCKETS": "16", "KINFER_MAX_BATCH": "64"}


async def scale_out(
    bootstrap: str, requests: int, join_after: int, max_in_flight: int, timeout_s: float
) -> tuple[int, int, float]:
    """(answered, duplicates, seconds) for one run on fresh topics."""
    names = await create_worker_topics(bootstrap, "scale")
    settings = {**names, **BUCKETS, "KINFER_MAX_IN_FLIGHT": str(max_in_flight)}
    ids = [f"r{i}" for i in range(requests)]
    async with AnswerReader(bootstrap, names["response_topic"]) as reader:
        await produce_records(
            bootstrap,
            names["request_topic"],
            [(request_value(rid, [f"text {rid}"]), rid.encode(), (), None) for rid in ids],
        )
        started = time.monotonic()
        deadline = started + timeout_s
        with WorkerProcess(bootstrap, settings, ready_timeout_s=timeout_s) as first:
            while len(reader.answers) < join_after and time.monotonic() < deadline:
                await reader.poll()
            print(f"first worker (pid {first.pid}) answered {len(reader.answers)}; second joins")
            second = WorkerProcess(bootstrap, settings, ready_timeout_s=timeout_s)
            # started in a thread (this loop goes on reading answers meanwhile) and not by
            # `with`, whose __enter__ would start a second process
            starting = asyncio.create_task(asyncio.to_thread(second.start))
            try:
                while len(reader.answers) < requests and time.monotonic() < deadline:
                    await reader.poll()
                await reader.poll(1.0)  # late duplicates
                await starting
            finally:
                await asyncio.gather(starting, return_exceptions=True)
                if second.proc is not None and second.proc.poll() is None:
                    await asyncio.to_thread(second.terminate, 30)
                second.close()
        return len(reader.answers), reader.duplicates, time.monotonic() - started


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=8000, help="backlog to produce")
    parser.add_argument(
        "--join-after", type=int, default=1500, help="answers before the second worker starts"
    )
    parser.add_argument(
        "--max-in-flight", type=int, default=1024, help="KINFER_MAX_IN_FLIGHT of both workers"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after seconds")
    parser.add_argument("--bootstrap", help="use this broker instead of an embedded Tansu")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)

    def run(bootstrap: str) -> tuple[int, int, float]:
        return asyncio.run(
            scale_out(bootstrap, args.requests, args.join_after, args.max_in_flight, args.timeout)
        )

    if args.bootstrap:
        answered, duplicates, seconds = run(args.bootstrap)
    else:
        with EmbeddedBroker(silent=True) as broker:
            answered, duplicates, seconds = run(broker.bootstrap)
    lost = args.requests - answered
    print(
        f"sent={args.requests} answered={answered} lost={lost} duplicates={duplicates} "
        f"seconds={seconds:.1f} max_in_flight={args.max_in_flight}"
    )
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())

"""The kinfer SDK: request/reply over Kafka, async (`InferenceClient`) and blocking (`SyncClient`).

::

    async with InferenceClient("127.0.0.1:9092", "kinfer.requests", "kinfer.responses") as client:
        [vector] = await client.predict("minilm", ["Kafka meets JAX"])
        async for result in client.map("minilm", texts):      # any iterable, in input order
            print(result.index, result.error or len(result.output))

An error answer raises its code's `ErrorAnswer` subclass; no answer in time raises
`ReplyTimeout`.
"""

from streams.sdk.answers import outputs_of
from streams.sdk.client import InferenceClient
from streams.sdk.errors import (
    DeadlineExceededError,
    ErrorAnswer,
    InputTooLargeError,
    InternalServerError,
    InvalidJsonError,
    InvalidRequestError,
    ReplyTimeout,
    UnknownModelError,
    error_from_answer,
)
from streams.sdk.mapping import DEFAULT_BATCH_SIZE, DEFAULT_MAX_IN_FLIGHT, Result
from streams.sdk.reading import start_reading
from streams.sdk.sync import SyncClient, infer_sync

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_IN_FLIGHT",
    "DeadlineExceededError",
    "ErrorAnswer",
    "InferenceClient",
    "InputTooLargeError",
    "InternalServerError",
    "InvalidJsonError",
    "InvalidRequestError",
    "ReplyTimeout",
    "Result",
    "SyncClient",
    "UnknownModelError",
    "error_from_answer",
    "infer_sync",
    "outputs_of",
    "start_reading",
]

"""Request/reply over Kafka: the SDK's names, where they have always been imported from.

The SDK lives in ``streams.sdk`` (`InferenceClient`, `SyncClient`, the error classes, `map`);
this module keeps ``from streams.client import InferenceClient, ReplyTimeout, infer_sync,
start_reading`` working.
"""

from streams.sdk import (
    DeadlineExceededError,
    ErrorAnswer,
    InferenceClient,
    InputTooLargeError,
    InternalServerError,
    InvalidJsonError,
    InvalidRequestError,
    ReplyTimeout,
    Result,
    SyncClient,
    UnknownModelError,
    infer_sync,
    start_reading,
)

__all__ = [
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
    "infer_sync",
    "start_reading",
]

"""Every setting kinfer reads, in one place.

Each field is read from the environment with the prefix ``KINFER_`` (``max_batch`` is
``KINFER_MAX_BATCH``); tuples are given as JSON (``KINFER_SEQ_BUCKETS='[32,128]'``) or a
comma-separated list (``KINFER_SEQ_BUCKETS=32,128``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IntTuple = Annotated[tuple[int, ...], NoDecode]


class Settings(BaseSettings):
    """kinfer's configuration: broker, topics, batching, limits, model."""

    model_config = SettingsConfigDict(env_prefix="KINFER_", frozen=True, extra="ignore")

    # --- broker and identity -------------------------------------------------------------
    broker_url: str = Field(
        "kafka://127.0.0.1:9092",
        description="Kafka bootstrap servers, as Faust takes them: 'kafka://host:port' "
        "(several separated by ';').",
    )
    app_id: str = Field(
        "kinfer",
        description="Faust application id; also the Kafka consumer group of the workers.",
    )
    # --- topics ---------------------------------------------------------------------------
    request_topic: str = Field("kinfer.requests", description="Topic the worker consumes.")
    response_topic: str = Field(
        "kinfer.responses",
        description="Default topic for answers, used when a request has no 'reply-to' header.",
    )
    dlq_topic: str | None = Field(
        None,
        description="Dead-letter topic for messages that cannot be answered normally. "
        "Default: '<request_topic>.dlq'.",
    )
    partitions: int = Field(
        4, ge=1, description="Partitions of the request topic when kinfer creates it."
    )
    # --- micro-batching -------------------------------------------------------------------
    max_batch: int = Field(
        64,
        ge=1,
        description="Most inputs (texts, not messages) gathered into one model call; the runner "
        "splits it over the batch buckets. On CPU 64 keeps the forward calls full (16 halves "
        "throughput: mixed lengths split into many small calls); on a GPU use 256..1024.",
    )
    max_wait_ms: float = Field(
        5.0,
        ge=0,
        description="Longest a batch waits to fill up after its first input arrives.",
    )
    fetch_max_wait_ms: int = Field(
        20,
        ge=0,
        le=5000,
        description="Longest the consumer's fetch waits on the broker for new records (Faust "
        "hard-codes 1500 ms, which a broker like Tansu adds to every request's latency).",
    )
    # --- limits ---------------------------------------------------------------------------
    max_message_bytes: int = Field(
        1_048_576, ge=64, description="Largest request message accepted (INPUT_TOO_LARGE above)."
    )
    max_inputs_per_request: int = Field(
        1024, ge=1, description="Most inputs one request may carry (INPUT_TOO_LARGE above)."
    )
    max_input_chars: int = Field(
        100_000,
        ge=1,
        description="Longest single input text, in characters (INPUT_TOO_LARGE above). Texts "
        "within it are truncated to the model's token limit (256 tokens for MiniLM).",
    )
    max_in_flight: int = Field(
        1024,
        ge=1,
        description="Most inputs accepted but not yet answered; the consumer waits (and so "
        "stops fetching) when it is reached, which bounds memory under a flood. Keep it to a "
        "few seconds of model work (about 4 s on 2 CPU cores; raise it on a GPU): a worker hands "
        "back partitions in a rebalance only after answering what it took.",
    )
    # --- model ----------------------------------------------------------------------------
    model: str = Field("minilm", description="Name of the model the worker serves.")
    batch_buckets: IntTuple = Field(
        (1, 4, 16),
        description="Batch sizes XLA compiles at warm-up. A gathered batch is run in chunks of "
        "the largest, the rest padded up to the cheapest mix of buckets. CPU throughput "
        "saturates near 16; on a GPU use large buckets (64..1024).",
    )
    seq_buckets: IntTuple = Field(
        (16, 32, 64, 128, 256),
        description="Sequence lengths (tokens) compiled at warm-up; inputs are padded to the "
        "nearest. The largest is the truncation length.",
    )
    call_cost_rows: float = Field(
        1.0,
        ge=0,
        description="Cost of one extra forward call in padded rows, used to split a batch "
        "over buckets: about 1 on CPU, large (e.g. 256) on a GPU to pad to one bucket instead.",
    )
    dtype: str = Field(
        "float32", description="Compute dtype: 'float32' (CPU) or 'bfloat16' (GPU/TPU)."
    )
    # --- worker ---------------------------------------------------------------------------
    web_host: str = Field("127.0.0.1", description="Address of the worker's HTTP endpoints.")
    web_port: int = Field(6066, ge=1, le=65535, description="Port of the worker's web server.")
    shutdown_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Bound on a graceful stop: the batch in flight is finished, published and "
        "committed within it.",
    )

    @field_validator("batch_buckets", "seq_buckets", mode="before")
    @classmethod
    def _parse_int_tuple(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().strip("[]()")
            return tuple(int(part) for part in text.split(",") if part.strip())
        return value

    @field_validator("batch_buckets", "seq_buckets")
    @classmethod
    def _sorted_positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(v <= 0 for v in value):
            raise ValueError("buckets must be a non-empty list of positive integers")
        return tuple(sorted(set(value)))

    @property
    def dead_letter_topic(self) -> str:
        """The dead-letter topic, defaulting to '<request_topic>.dlq'."""
        return self.dlq_topic or f"{self.request_topic}.dlq"

    @property
    def bootstrap_servers(self) -> str:
        """broker_url as plain 'host:port[,host:port]' for aiokafka and librdkafka clients."""
        hosts = []
        for part in self.broker_url.split(";"):
            part = part.strip()
            if "://" in part:
                part = part.split("://", 1)[1]
            hosts.append(part.rstrip("/"))
        return ",".join(hosts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()

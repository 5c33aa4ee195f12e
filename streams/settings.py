"""Every setting kinfer reads, in one place.

Each field is read from the environment with the prefix ``KINFER_`` (``max_batch`` is
``KINFER_MAX_BATCH``); tuples are given as JSON (``KINFER_SEQ_BUCKETS='[32,128]'``) or a
comma-separated list (``KINFER_SEQ_BUCKETS=32,128``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal

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
        256,
        ge=1,
        description="Most inputs (texts, not messages) gathered into one batch; the runner "
        "packs it into rows of the batch and seq buckets. With short texts the token budget "
        "usually closes a batch first. On a GPU use 1024 or more.",
    )
    max_batch_tokens: int = Field(
        2048,
        ge=1,
        description="Token budget of one batch (real tokens, special tokens included), as "
        "text-embeddings-inference's --max-batch-tokens: a batch closes when the next input "
        "would exceed it; one longer input runs alone. 2048 is about 0.25 s of MiniLM on 2 CPU "
        "cores; on a GPU use 16384 or more.",
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
        description="Rows per model call that XLA compiles at warm-up. A batch's packed rows "
        "run in calls of the largest, the rest in the cheapest mix of buckets. On a GPU use "
        "large buckets (64..1024).",
    )
    seq_buckets: IntTuple = Field(
        (16, 32, 64, 128, 256),
        description="Row lengths (tokens) compiled at warm-up. Texts are packed several to a "
        "row; a call is padded to the smallest bucket that holds its fullest row. The largest "
        "is the truncation length.",
    )
    pack_length: int = Field(
        128,
        ge=1,
        description="Length of a new packed row, at most the largest seq bucket. Longer rows "
        "hold more texts (less padding in the last row) but cost more attention per token.",
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
    model_dir: str | None = Field(
        None,
        description="Folder in the Hugging Face layout (config.json, model.safetensors, "
        "tokenizer.json) to load MiniLM from instead of the installed weights package; "
        "answers then carry the version 'all-MiniLM-L6-v2@<folder name>'.",
    )
    bench_zero_cost: Literal["off", "model", "model-and-tokenizer"] = Field(
        "off",
        description="Benchmarks only: serve a zero-cost test double under the model's name "
        "(version 'zero-cost@bench'): 'model' keeps the real tokenizer and returns constant "
        "rows, 'model-and-tokenizer' skips the tokenizer too. Measures the host path's ceiling.",
    )
    # --- worker processes -----------------------------------------------------------------
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes `kinfer worker` starts on this host, in one consumer "
        "group, the i-th on web port web_port + i, under a supervisor that forwards SIGTERM/"
        "SIGINT and stops them all if one dies (streams/processes.py). One process moves a few "
        "thousand messages/s; use several to keep one GPU busy. 1 runs the worker in-process.",
    )
    gpu_memory_fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Cap on each worker process's share of the accelerator's memory, passed "
        "to JAX as XLA_CLIENT_MEM_FRACTION (e.g. 0.2 for 4 processes on one GPU). Unset: no "
        "cap is set. Either way kinfer sets XLA_PYTHON_CLIENT_PREALLOCATE=false (JAX otherwise "
        "takes 75% of the device in every process) unless that variable is already set.",
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

"""Every setting kinfer reads, in one place.

Each field is read from the environment with the prefix ``KINFER_`` (``max_batch`` is
``KINFER_MAX_BATCH``); tuples are given as JSON (``KINFER_SEQ_BUCKETS='[32,128]'``) or a
comma-separated list (``KINFER_SEQ_BUCKETS=32,128``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streams.enrich.route import EnrichRoute, RouteError, check_routes

IntTuple = Annotated[tuple[int, ...], NoDecode]
StrTuple = Annotated[tuple[str, ...], NoDecode]


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
    replication_factor: int | None = Field(
        None,
        ge=1,
        description="Replication factor of the topics kinfer creates. Unset: the broker's "
        "default.replication.factor (read from the broker; where it cannot be read, as on the "
        "embedded broker, the number of brokers up to 3).",
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
    max_answer_bytes: int = Field(
        1_048_576 - 1024,
        ge=1024,
        description="Largest answer record (key, value and headers, as the producer measures "
        "it). The default is what a default Apache Kafka broker accepts (message.max.bytes, "
        "1 MiB) less a margin; set it to your topics' max.message.bytes. A larger answer "
        "(about 220 inputs as floats, 500 as base64) is answered INPUT_TOO_LARGE and "
        "dead-lettered.",
    )
    max_in_flight: int = Field(
        1024,
        ge=1,
        description="Most inputs accepted but not yet answered; the consumer waits (and so "
        "stops fetching) when it is reached, which bounds memory under a flood. Keep it to a "
        "few seconds of model work (about 4 s on 2 CPU cores; raise it on a GPU): a worker hands "
        "back partitions in a rebalance only after answering what it took.",
    )
    max_in_flight_tokens: int = Field(
        32_768,
        ge=1,
        description="Most estimated tokens accepted but not yet answered (a text counts its "
        "characters / 4 + 2, at most the largest seq bucket), the in-flight bound for long "
        "texts: 1024 texts of 256 tokens are about 60 s of MiniLM on 2 CPU cores, 32768 tokens "
        "about 4 s. Raise it on a GPU.",
    )
    # --- model ----------------------------------------------------------------------------
    models: StrTuple = Field(
        (),
        description="The repository models this worker serves: names (every version of "
        "that model) or name:version, comma-separated, e.g. 'minilm:0.1.0,digits'. Empty: "
        "every model and version in KINFER_MODEL_REPOSITORY.",
    )
    model_watch_interval_s: float = Field(
        5.0,
        ge=0,
        description="How often the worker looks for version folders added to or removed from "
        "the repository (hot swap; also on SIGHUP and `kinfer models reload`). 0: never.",
    )
    model: str = Field(
        "minilm",
        description="Name under which KINFER_MODEL_DIR (or the bench's zero-cost double) is "
        "served; unused when the worker serves its repository.",
    )
    model_repository: str | None = Field(
        None,
        description="Folder of models, one <name>/<version>/manifest.toml each (see "
        "`kinfer models`). Default: the models kinfer ships (models/catalog).",
    )
    batch_buckets: IntTuple = Field(
        (1, 4, 16),
        description="Rows per model call that XLA compiles at warm-up; when set, it overrides "
        "the manifests' [buckets]. A batch's packed rows "
        "run in calls of the largest, the rest in the cheapest mix of buckets. On a GPU use "
        "large buckets (64..1024).",
    )
    seq_buckets: IntTuple = Field(
        (16, 32, 64, 128, 256),
        description="Row lengths (tokens) compiled at warm-up; when set, it overrides the "
        "manifests' [buckets]. Texts are packed several to a "
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
        "float32",
        description="Compute dtype of KINFER_MODEL_DIR: 'float32' (CPU) or 'bfloat16' (GPU/TPU). "
        "Repository versions compute in their manifest's dtype (a bf16 variant is a version).",
    )
    model_dir: str | None = Field(
        None,
        description="Folder in the Hugging Face layout (config.json, model.safetensors, "
        "tokenizer.json, and sentence-transformers' modules.json and 1_Pooling for pooling) "
        "holding any BERT-family encoder to serve instead of the installed MiniLM package; "
        "answers then carry the version '<model>@<folder name>'.",
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
    startup_timeout_s: float = Field(
        900.0,
        ge=0,
        description="/live fails when start-up (loading and compiling the served models, "
        "creating the topics) has taken longer than this: a warm-up that hangs gets the worker "
        "restarted. 0: no bound.",
    )
    liveness_timeout_s: float = Field(
        30.0,
        gt=0,
        description="/live fails when one model call (tokenise, pack or compute) has run longer "
        "than this: a hung model or device. It also fails, whatever this says, once the worker "
        "cannot serve (a systemic model failure, its own topics refusing its answers).",
    )
    consumer_stall_timeout_s: float = Field(
        60.0,
        gt=0,
        description="/ready fails while a request partition the worker owns has requests "
        "waiting (lag > 0) and its committed offset has not moved for this long: the consumer "
        "is stalled (streams/lag.py).",
    )
    # --- logs -----------------------------------------------------------------------------
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines of the worker, gateway and supervisor: 'text', or 'json' (one "
        "object per line: time, level, logger, message, request_id...; streams/logs.py).",
    )
    # --- gateway (Open Inference Protocol over HTTP and gRPC: streams/gateway/) ------------
    gateway_host: str = Field(
        "127.0.0.1",
        description="Address `kinfer gateway` listens on (HTTP and gRPC). Any address but a "
        "loopback one needs KINFER_GATEWAY_TOKENS_FILE (or KINFER_GATEWAY_ALLOW_UNAUTHENTICATED).",
    )
    gateway_http_port: int = Field(8000, ge=1, le=65535, description="The gateway's HTTP port.")
    gateway_grpc_port: int = Field(8001, ge=1, le=65535, description="The gateway's gRPC port.")
    gateway_reply_topic: str = Field(
        "kinfer.replies.gateway",
        description="Topic the gateway asks the workers to answer on ('reply-to'); it must match "
        "KINFER_REPLY_TO_PATTERN. Every gateway replica reads all of it and keeps its own answers.",
    )
    gateway_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest an infer call waits for its answer (then 504 / DEADLINE_EXCEEDED); "
        "also sent as the request's deadline_ms. A request's own 'timeout' parameter "
        "(microseconds) or gRPC deadline may shorten it.",
    )
    gateway_max_body_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Largest HTTP request body or gRPC message the gateway accepts (413 / "
        "RESOURCE_EXHAUSTED above).",
    )
    gateway_tokens_file: str | None = Field(
        None,
        description="JSON file of bearer tokens, each with the models it may use (see README, "
        "'HTTP and gRPC'). Unset: no authentication, allowed only on a loopback address.",
    )
    gateway_allow_unauthenticated: bool = Field(
        False,
        description="Serve without tokens on a non-loopback address: anyone who reaches the "
        "port may run every model. For a network that already authenticates (a mesh).",
    )
    # --- security -------------------------------------------------------------------------
    # Applied alike to every Kafka client kinfer makes (streams/security.py): the worker's
    # Faust consumer and producer, the admin client, the SDK and `kinfer infer`, `kinfer kcat`.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How clients talk to Kafka: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT (SASL "
        "credentials, no TLS) or SASL_SSL (SASL over TLS: Confluent Cloud, MSK, Aiven).",
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN",
        description="SASL mechanism with a SASL_* protocol: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.",
    )
    sasl_username: str | None = Field(
        None, description="SASL user name; required with a SASL_* protocol."
    )
    sasl_password: SecretStr | None = Field(
        None,
        description="SASL password. Never logged or printed (`kinfer settings` shows ***). "
        "Prefer KINFER_SASL_PASSWORD_FILE; exactly one of the two with a SASL_* protocol.",
    )
    sasl_password_file: str | None = Field(
        None,
        description="File holding the SASL password (a mounted Kubernetes or compose secret); "
        "read when a client is made, trailing newline stripped.",
    )
    ssl_cafile: str | None = Field(
        None,
        description="PEM file of the CA(s) that signed the broker's certificate, with SSL or "
        "SASL_SSL. Unset: the system's trusted CAs (public clouds).",
    )
    ssl_certfile: str | None = Field(
        None,
        description="PEM client certificate for mutual TLS (with KINFER_SSL_KEYFILE).",
    )
    ssl_keyfile: str | None = Field(
        None,
        description="PEM private key of KINFER_SSL_CERTFILE, unencrypted (mount it as a secret).",
    )
    ssl_check_hostname: bool = Field(
        True,
        description="Check that the broker's certificate names the host it was reached at. "
        "Turn off only for a broker whose certificate lacks its address.",
    )
    reply_to_pattern: str = Field(
        r"kinfer\.(responses|replies\..+)",
        description="Regular expression (whole name) of the topics a request's 'reply-to' "
        "header may name; the response topic is always allowed. Never allowed whatever it "
        "says: the request topic, the dead-letter topic, names starting with '__'. A request "
        "naming another topic is answered INVALID_REQUEST on the response topic and "
        "dead-lettered.",
    )
    # --- enrichment routes (streams/enrich/) ----------------------------------------------
    enrich_routes: tuple[EnrichRoute, ...] = Field(
        (),
        description="Enrichment routes this worker serves beside its request topic: a JSON "
        "list of objects with source, sink, model and text (a field path such as $.note), and "
        "optionally id, version, output_field, dlq and encoding (README, 'Enrich your own "
        "events'). `kinfer enrich` serves its one route instead of these.",
    )

    @model_validator(mode="after")
    def _routes_consistent(self) -> Settings:
        own = {self.request_topic, self.response_topic, self.dead_letter_topic}
        try:
            check_routes(self.enrich_routes, own)
        except RouteError as exc:
            raise ValueError(str(exc)) from None
        return self

    @field_validator("reply_to_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _security_consistent(self) -> Settings:
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol.endswith("SSL")
        if sasl:
            if not self.sasl_username:
                raise ValueError(f"{self.security_protocol} needs KINFER_SASL_USERNAME")
            if (self.sasl_password is None) == (self.sasl_password_file is None):
                raise ValueError(
                    f"{self.security_protocol} needs exactly one of KINFER_SASL_PASSWORD and "
                    "KINFER_SASL_PASSWORD_FILE"
                )
        elif self.sasl_username or self.sasl_password is not None or self.sasl_password_file:
            raise ValueError(
                f"SASL credentials are set but KINFER_SECURITY_PROTOCOL={self.security_protocol} "
                "would not send them (use SASL_SSL or SASL_PLAINTEXT)"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("KINFER_SSL_CERTFILE and KINFER_SSL_KEYFILE go together")
        if not tls and (self.ssl_cafile or self.ssl_certfile):
            raise ValueError(
                f"TLS files are set but KINFER_SECURITY_PROTOCOL={self.security_protocol} "
                "does not use TLS (use SSL or SASL_SSL)"
            )
        return self

    @field_validator("models", mode="before")
    @classmethod
    def _parse_str_tuple(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().strip("[]")
            return tuple(part.strip().strip('"') for part in text.split(",") if part.strip())
        return value

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

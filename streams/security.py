"""Kafka client security: TLS and SASL, described once and handed to every client kinfer makes.

``kafka_security(settings)`` reads the ``KINFER_SECURITY_PROTOCOL``, ``KINFER_SASL_*`` and
``KINFER_SSL_*`` settings (and the password file, if one is named) into a `KafkaSecurity`,
which speaks each client library's dialect:

- `KafkaSecurity.aiokafka()`: keyword arguments of aiokafka's producer, consumer and admin
  client (``security_protocol``, ``ssl_context``, ``sasl_mechanism``, ``sasl_plain_username``,
  ``sasl_plain_password``; aiokafka takes SCRAM credentials under the ``plain`` names too);
- `KafkaSecurity.faust_credentials()`: Faust's ``broker_credentials`` (its consumer, producer
  and topic creation all use them);
- `KafkaSecurity.librdkafka()`: librdkafka properties (confluent-kafka, and `kinfer kcat`, which
  hands them to kcat in a ``-F`` file read from a pipe, so no secret is on its command line or
  on disk).

Every client of kinfer uses it: the worker (Faust app, its admin client and topic watch), the
SDK (``streams.client``), ``kinfer infer`` and ``kinfer kcat``.

`check_connection` opens one connection to a bootstrap server with these settings and turns
the failures that retrying cannot fix (a certificate the CA did not sign, a missing client
certificate, a SASL mechanism or credentials the broker refuses, a TLS-only port reached in
plain text) into a `SecurityError` that names the setting to change, within seconds: aiokafka
itself logs the cause and raises a bare "Unable to bootstrap", and a worker would retry it
until its timeout.

Secrets: the password is held only in `KafkaSecurity.password` (not in its repr) and in the
client objects; `describe()` is what may be logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from streams.errors import KinferError
from streams.settings import Settings

__all__ = [
    "PLAINTEXT",
    "KafkaSecurity",
    "Protocol",
    "SecurityError",
    "check_connection",
    "fail_fast",
    "kafka_security",
]

log = logging.getLogger(__name__)

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class SecurityError(KinferError):
    """TLS or SASL cannot work as configured: retrying will not help, the settings must change.

    Raised for a missing file, a certificate the broker or kinfer refuses, or a SASL handshake
    the broker refuses. The message never holds a secret.
    """

    retriable = False


@dataclass(frozen=True)
class KafkaSecurity:
    """How to reach Kafka: protocol, SASL credentials, TLS files. Build it with `kafka_security`."""

    protocol: Protocol = "PLAINTEXT"
    sasl_mechanism: Mechanism = "PLAIN"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    check_hostname: bool = True

    @property
    def tls(self) -> bool:
        """Whether connections use TLS (SSL or SASL_SSL)."""
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        """Whether connections authenticate with SASL (SASL_PLAINTEXT or SASL_SSL)."""
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context (CA, client certificate, hostname check), or None without TLS."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cafile)
            if self.certfile is not None:
                context.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise SecurityError(f"cannot load the TLS files ({self._files()}): {exc}") from None
        context.check_hostname = self.check_hostname
        return context

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's AIOKafkaProducer, AIOKafkaConsumer, admin client."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.sasl:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.username
            kwargs["sasl_plain_password"] = self.password
        return kwargs

    def faust_credentials(self) -> Any:
        """Faust's ``broker_credentials``: SSLCredentials, SASLCredentials, or None (plaintext)."""
        import faust

        if self.sasl:
            return faust.SASLCredentials(
                username=self.username,
                password=self.password,
                mechanism=self.sasl_mechanism,
                ssl_context=self.ssl_context(),  # None with SASL_PLAINTEXT
            )
        if self.tls:
            return faust.SSLCredentials(self.ssl_context())
        return None

    def librdkafka(self) -> dict[str, str]:
        """librdkafka configuration properties (confluent-kafka, kcat ``-F``)."""
        config = {"security.protocol": self.protocol.lower()}
        if self.tls:
            if self.cafile is not None:
                config["ssl.ca.location"] = self.cafile
            if self.certfile is not None and self.keyfile is not None:
                config["ssl.certificate.location"] = self.certfile
                config["ssl.key.location"] = self.keyfile
            config["ssl.endpoint.identification.algorithm"] = (
                "https" if self.check_hostname else "none"
            )
        if self.sasl:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.username or ""
            config["sasl.password"] = self.password or ""
        return config

    def describe(self) -> str:
        """A one-line summary fit for logs and errors: no secret in it."""
        parts: list[str] = [self.protocol]
        if self.sasl:
            parts.append(f"{self.sasl_mechanism} as {self.username!r}")
        if self.tls:
            parts.append(self._files())
            if not self.check_hostname:
                parts.append("hostname not checked")
        return ", ".join(parts)

    def _files(self) -> str:
        ca = f"CA {self.cafile}" if self.cafile else "system CAs"
        return ca + (f", client certificate {self.certfile}" if self.certfile else "")


#: No TLS, no SASL: what a client gets when it is given nothing.
PLAINTEXT = KafkaSecurity()


def kafka_security(settings: Settings) -> KafkaSecurity:
    """The security settings, resolved: the password file read, every named file checked.

    Raises `SecurityError` for a file that cannot be read.
    """
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "sasl_password_file"):
        path = getattr(settings, name)
        if path is not None and not Path(path).is_file():
            raise SecurityError(f"KINFER_{name.upper()}={path}: no such file")
    password: str | None = None
    if settings.sasl_password is not None:
        password = settings.sasl_password.get_secret_value()
    elif settings.sasl_password_file is not None:
        try:
            password = Path(settings.sasl_password_file).read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise SecurityError(
                f"KINFER_SASL_PASSWORD_FILE={settings.sasl_password_file}: cannot read it "
                f"({type(exc).__name__})"
            ) from None
    return KafkaSecurity(
        protocol=settings.security_protocol,
        sasl_mechanism=settings.sasl_mechanism,
        username=settings.sasl_username,
        password=password,
        cafile=settings.ssl_cafile,
        certfile=settings.ssl_certfile,
        keyfile=settings.ssl_keyfile,
        check_hostname=settings.ssl_check_hostname,
    )


# -- the connection check -------------------------------------------------------------------------


async def check_connection(
    security: KafkaSecurity, host: str, port: int, *, timeout_s: float = 5.0
) -> None:
    """Connect to ``host:port`` with ``security`` (TLS and SASL handshakes included), then close.

    Raises `SecurityError` when the failure is one that retrying cannot fix, and the original
    error (OSError, TimeoutError, aiokafka's KafkaError) when it may be transient.
    """
    from aiokafka import errors
    from aiokafka.conn import create_conn

    kwargs = security.aiokafka()
    where = f"{host}:{port}"
    try:
        async with asyncio.timeout(timeout_s):
            conn = await create_conn(host, port, request_timeout_ms=int(timeout_s * 1000), **kwargs)
    except (
        errors.UnsupportedSaslMechanismError,
        errors.SaslAuthenticationFailed,
        errors.IllegalSaslStateError,
        errors.AuthenticationFailedError,
        errors.AuthenticationMethodNotSupported,
    ) as exc:
        raise SecurityError(
            f"SASL: the broker at {where} refused {security.sasl_mechanism} for "
            f"{security.username!r}: {type(exc).__name__}: {_sasl_detail(exc)} "
            "(check KINFER_SASL_MECHANISM, KINFER_SASL_USERNAME and the password)"
        ) from None
    except (OSError, errors.KafkaError) as exc:
        # aiokafka wraps a TLS alert received after the handshake (TLS 1.3 reports a missing
        # client certificate that way) in "Connection closed": look at the cause
        tls_error = _tls_cause(exc)
        if isinstance(tls_error, ssl.SSLCertVerificationError):
            raise SecurityError(
                f"TLS: the certificate of the broker at {where} was refused: "
                f"{tls_error.verify_message} ({security.describe()}; check KINFER_SSL_CAFILE"
                + (", KINFER_SSL_CHECK_HOSTNAME" if security.check_hostname else "")
                + ")"
            ) from None
        if tls_error is not None and "ALERT" in str(tls_error.reason or tls_error).upper():
            # the broker refused us: no client certificate, or one it does not trust
            raise SecurityError(
                f"TLS with {where} failed: the broker sent {tls_error.reason or tls_error} "
                f"({security.describe()}; a broker that wants a client certificate needs "
                "KINFER_SSL_CERTFILE and KINFER_SSL_KEYFILE, signed by a CA it trusts)"
            ) from None
        if not security.tls and _closed(exc) and await _speaks_tls(host, port, timeout_s):
            raise SecurityError(
                f"the broker at {where} speaks TLS, and KINFER_SECURITY_PROTOCOL is "
                f"{security.protocol}: set it to SSL (or SASL_SSL)"
            ) from None
        if security.tls and await _speaks_plain_kafka(host, port, timeout_s):
            raise SecurityError(
                f"the broker at {where} speaks plain Kafka, not TLS, and "
                f"KINFER_SECURITY_PROTOCOL is {security.protocol}: set it to PLAINTEXT (or "
                "SASL_PLAINTEXT), or use the broker's TLS listener"
            ) from None
        raise
    except (KeyError, ValueError, IndexError) as exc:  # aiokafka's SCRAM parser, on an odd answer
        if not security.sasl:
            raise
        raise SecurityError(
            f"SASL: the {security.sasl_mechanism} handshake with {where} failed: the broker's "
            f"answer could not be read ({type(exc).__name__}: {exc}; unknown user or wrong "
            "password?)"
        ) from None
    conn.close()


async def fail_fast(security: KafkaSecurity, bootstrap: str, *, timeout_s: float = 5.0) -> None:
    """`check_connection` to the first of ``bootstrap``'s servers, raising only `SecurityError`.

    Any other failure (a broker that is down, restarting, slow) is logged and left to the
    client's own retries. Clients call it before they start, to fail in seconds and clearly.
    """
    from streams.broker import parse_bootstrap

    host, port = parse_bootstrap(bootstrap)
    try:
        await check_connection(security, host, port, timeout_s=timeout_s)
    except SecurityError:
        raise
    except Exception as exc:
        log.info("connection check to %s:%s: %r (left to the client's retries)", host, port, exc)


def _tls_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error that ``exc`` is, or was raised from, if any."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _sasl_detail(exc: BaseException) -> str:
    text = str(exc)
    # aiokafka appends the connection's repr; the broker's message is what helps
    return text.split(": <AIOKafkaConnection")[0] or "no detail"


def _closed(exc: BaseException) -> bool:
    """Whether the peer closed the connection (as a TLS-only port does with plain Kafka)."""
    return isinstance(exc, ConnectionError) or "closed" in str(exc).lower()


async def _speaks_tls(host: str, port: int, timeout_s: float) -> bool:
    """Whether ``host:port`` completes a TLS handshake (its certificate is not checked)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    def probe() -> bool:
        try:
            with (
                socket.create_connection((host, port), timeout=timeout_s) as raw,
                context.wrap_socket(raw, server_hostname=host),
            ):
                return True
        except ssl.SSLError as exc:  # a TLS alert (e.g. a client certificate required) is TLS
            return "alert" in str(exc).lower()
        except OSError:
            return False

    with contextlib.suppress(Exception):
        return await asyncio.to_thread(probe)
    return False


async def _speaks_plain_kafka(host: str, port: int, timeout_s: float) -> bool:
    """Whether ``host:port`` answers Kafka's ApiVersions and Metadata in plain text."""
    from streams.broker import _probe_kafka

    try:
        await asyncio.to_thread(_probe_kafka, host, port, min(timeout_s, 3.0))
    except Exception:
        return False
    return True

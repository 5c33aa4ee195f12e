"""A test PKI (openssl CLI) and a TLS front for the embedded broker (stunnel4).

Tansu 0.6.0's own TLS listener is not wired up, so TLS is proven with stunnel in front of it:
clients speak TLS to ``stunnel`` on one port, stunnel speaks plain Kafka to Tansu on another, and
Tansu advertises the TLS port in its metadata (Kafka clients reconnect to the advertised
address after bootstrapping, so it must be the TLS front's).

``make_pki(folder)`` writes a CA, a server certificate for 127.0.0.1/localhost, a client
certificate signed by the same CA, and an unrelated second CA (the "wrong CA").
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from streams.broker import EmbeddedBroker, free_port
from tests.support.child import ChildProcess

#: why TLS tests skip when stunnel is missing
NO_STUNNEL = "stunnel4 is not installed (apt-get install -y stunnel4, or `make install` as root)"
NO_OPENSSL = "the openssl command is not installed"


def find_stunnel() -> str | None:
    """The stunnel executable (Debian's stunnel4 package), or None."""
    return shutil.which("stunnel4") or shutil.which("stunnel")


@dataclass(frozen=True)
class Pki:
    """Paths of the test PKI's PEM files."""

    folder: Path

    def path(self, name: str) -> str:
        return str(self.folder / name)

    @property
    def ca(self) -> str:
        return self.path("ca.pem")

    @property
    def wrong_ca(self) -> str:
        return self.path("wrong-ca.pem")

    @property
    def server_cert(self) -> str:
        return self.path("server.pem")

    @property
    def server_key(self) -> str:
        return self.path("server.key")

    @property
    def client_cert(self) -> str:
        return self.path("client.pem")

    @property
    def client_key(self) -> str:
        return self.path("client.key")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(folder: Path, name: str, subject: str) -> None:
    (folder / f"{name}.cnf").write_text(
        "[req]\ndistinguished_name=dn\n[dn]\n[v3_ca]\n"
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier=hash\n"
    )
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", subject,
        "-config", f"{name}.cnf", "-extensions", "v3_ca",
        cwd=folder,
    )  # fmt: skip


def _leaf(folder: Path, name: str, subject: str, extensions: str) -> None:
    (folder / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n" + extensions
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject,
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=folder,
    )  # fmt: skip


def make_pki(folder: Path) -> Pki:
    """A CA, a server certificate (127.0.0.1, localhost), a client certificate, a wrong CA."""
    folder.mkdir(parents=True, exist_ok=True)
    _ca(folder, "ca", "/CN=kinfer test CA")
    _ca(folder, "wrong-ca", "/CN=some other CA")
    _leaf(
        folder,
        "server",
        "/CN=localhost",
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    _leaf(
        folder,
        "client",
        "/CN=kinfer-worker",
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    return Pki(folder)


class TlsFront(ChildProcess):
    """stunnel on ``127.0.0.1:port`` (TLS) in front of ``target`` (plain Kafka).

    With ``client_ca``, clients must present a certificate signed by it (mutual TLS).
    """

    exit_timeout_s = 5.0

    def __init__(
        self,
        target: tuple[str, int],
        pki: Pki,
        folder: Path,
        *,
        port: int | None = None,
        client_ca: str | None = None,
    ) -> None:
        self.port = port if port is not None else free_port()
        super().__init__(folder / f"stunnel-{self.port}.log")
        self.target = target
        self.config = folder / f"stunnel-{self.port}.conf"
        lines = [
            "foreground = yes",
            "pid =",
            "debug = notice",
            "[kafka]",
            f"accept = 127.0.0.1:{self.port}",
            f"connect = {target[0]}:{target[1]}",
            f"cert = {pki.server_cert}",
            f"key = {pki.server_key}",
        ]
        if client_ca is not None:
            lines += [f"CAfile = {client_ca}", "verifyChain = yes", "requireCert = yes"]
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> Self:
        binary = find_stunnel()
        assert binary is not None, NO_STUNNEL
        self.spawn([binary, str(self.config)])
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while "Configuration successful" not in self.log_tail():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"stunnel did not start:\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """SIGTERM (kill -9 after 5 s) and close the log; idempotent."""
        if self.running():
            self.terminate(self.exit_timeout_s)
        self.close()


class TlsBroker:
    """An embedded Tansu on a plain port, advertising the TLS front that stunnel serves for it."""

    def __init__(self, pki: Pki, folder: Path, *, mutual: bool = False) -> None:
        self.front_port = free_port()
        self.broker = EmbeddedBroker(silent=True, advertised=f"127.0.0.1:{self.front_port}")
        self.front = TlsFront(
            (self.broker.host, self.broker.port),
            pki,
            folder,
            port=self.front_port,
            client_ca=pki.ca if mutual else None,
        )

    @property
    def bootstrap(self) -> str:
        """The TLS address clients use."""
        return self.front.bootstrap

    def __enter__(self) -> Self:
        self.broker.start()
        try:
            self.front.start()
        except BaseException:
            self.broker.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.front.stop()
        self.broker.stop()

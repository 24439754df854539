"""Certificates for TLS tests, made with the openssl command line: a CA, a server
certificate for 127.0.0.1/localhost and a client certificate, all signed by the CA."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl")


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_cn: str


def _run(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None, "openssl is not installed"
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _signed(name: str, cn: str, extensions: str, cwd: Path) -> None:
    _run(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=cwd,
    )  # fmt: skip
    (cwd / f"{name}.ext").write_text(extensions + "\n")
    _run(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=cwd,
    )  # fmt: skip


def make_certs(directory: Path, client_cn: str = "alice-laptop") -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    _run(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=cqrs test CA",
        cwd=directory,
    )  # fmt: skip
    _signed("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost", directory)
    _signed("client", client_cn, "extendedKeyUsage=clientAuth", directory)
    return Certs(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        client_cn=client_cn,
    )

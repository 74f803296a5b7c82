"""Fixtures for deployment tests: TLS material and a TLS-only redis-server.

Coroutine tests here run on plain asyncio (pytest-asyncio auto mode).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import pytest

from .certs import TlsFiles, make_tls_files
from .servers import Proc, Servers

# anyio imports its modules lazily; the first import inside a deep asyncio stack
# (a Sentinel client's) has pytest's assertion rewriter parse anyio's source there,
# which CPython 3.11.7's ast rejects ("AST constructor recursion depth mismatch").
# Import them here, at the top of the stack.
anyio.Lock  # noqa: B018
importlib.import_module("anyio._backends._asyncio")


@dataclass(frozen=True, slots=True)
class TlsServer:
    """A redis-server that speaks only TLS and requires a client certificate."""

    server: Proc
    files: TlsFiles

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.server.port}/0"

    def cli_args(self, *, client_cert: bool = True) -> list[str]:
        """The mount/status/fsck options that trust the test CA (and present the client cert)."""
        args = ["--redis-url", self.url, "--redis-tls-ca", str(self.files.ca)]
        if client_cert:
            args += ["--redis-tls-cert", str(self.files.client_cert)]
            args += ["--redis-tls-key", str(self.files.client_key)]
        return args


@pytest.fixture
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Extra redis processes for one test, all stopped when it ends."""
    with Servers(tmp_path_factory) as started:
        yield started


def start_tls_server(started: Servers, tmp_path_factory: pytest.TempPathFactory) -> TlsServer:
    """A TLS-only server (``--port 0``) with ``tls-auth-clients yes`` and fresh test certs."""
    files = make_tls_files(tmp_path_factory.mktemp("tls"))
    server = started.start(
        "--tls-cert-file", str(files.server_cert),
        "--tls-key-file", str(files.server_key),
        "--tls-ca-cert-file", str(files.ca),
        "--tls-auth-clients", "yes",
        tls_port=True,
    )  # fmt: skip
    return TlsServer(server, files)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """One TLS-only server shared by a module's tests (each uses its own volume)."""
    with Servers(tmp_path_factory) as started:
        yield start_tls_server(started, tmp_path_factory)

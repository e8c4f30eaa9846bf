"""Real loopback servers for the probe tests: aiohttp apps, raw asyncio peers, a trustme CA.

Everything binds 127.0.0.1 on port 0; nothing of ours and nothing of aiohttp's is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import ssl
import struct
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from availmon.probes import build_probe
from availmon.probes.base import Probe, ProbeContext
from availmon.specs import ENDPOINT_ADAPTER, AnyEndpoint

LOOPBACK = "127.0.0.1"

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def make_spec(url: str, **fields: Any) -> AnyEndpoint:
    spec = ENDPOINT_ADAPTER.validate_python({"name": "probe-test", "url": url, **fields})
    # The store keeps model_dump(mode="json") and validates it again on load: it must pass.
    assert ENDPOINT_ADAPTER.validate_python(spec.model_dump(mode="json")) == spec
    return spec


@pytest.fixture
async def probe_context() -> AsyncIterator[ProbeContext]:
    context = ProbeContext()
    yield context
    await context.close()


@pytest.fixture
def make_probe(probe_context: ProbeContext) -> Callable[..., Probe[Any]]:
    def make(url: str, **fields: Any) -> Probe[Any]:
        return build_probe(make_spec(url, **fields), probe_context)

    return make


@pytest.fixture
def free_port() -> int:
    """A port nothing listens on: bound to learn its number, then closed."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Tls:
    ca_file: Path
    server_context: ssl.SSLContext


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", LOOPBACK)
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    return Tls(ca_file, server_context)


@pytest.fixture(scope="session")
def localhost_only_tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A certificate for the name "localhost" only, so https://127.0.0.1 does not match it."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    ca_file = tmp_path_factory.mktemp("tls-name") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    return Tls(ca_file, server_context)


StartApp = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_app() -> AsyncIterator[StartApp]:
    """start_app(app, ssl_context=None) -> base URL ("http://127.0.0.1:PORT")."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> str:
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, LOOPBACK, 0, ssl_context=ssl_context)
        await site.start()
        port = runner.addresses[0][1]
        scheme = "https" if ssl_context is not None else "http"
        return f"{scheme}://{LOOPBACK}:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


class RawServer:
    """An asyncio.start_server peer whose connections and handler tasks are all cleaned up."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self, handler: RawHandler, ssl_context: ssl.SSLContext | None = None) -> int:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            task = asyncio.current_task()
            assert task is not None
            self.tasks.add(task)
            try:
                await handler(reader, writer)
            finally:
                self.tasks.discard(task)
                writer.close()

        server = await asyncio.start_server(tracked, LOOPBACK, 0, ssl=ssl_context)
        self.servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for task in list(self.tasks):
            task.cancel()
        for writer in self.writers:
            writer.close()
        for server in self.servers:
            await server.wait_closed()
        await asyncio.sleep(0.01)  # let transports finish closing their sockets


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServer]:
    server = RawServer()
    yield server
    await server.close()


def reset_connection(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and never answer (read until the client goes away)."""
    while await reader.read(65536):
        pass


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose accept queue is full, so a new SYN is dropped and connect() hangs.

    listen(0) with nobody calling accept(): Linux queues one connection (backlog + 1), and the
    kernel drops SYNs while the queue is full.
    """
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(2):
                filler = socket.socket()
                fillers.append(filler)
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect((LOOPBACK, port))
            yield port
        finally:
            for filler in fillers:
                filler.close()


@dataclass
class Pki:
    """A private root (the only thing in ca_file), an intermediate, and leaves on demand."""

    root: trustme.CA
    intermediate: trustme.CA
    ca_file: Path
    folder: Path

    def leaf(
        self,
        *names: str,
        valid_days: tuple[float, float] = (-1, 90),
        via_intermediate: bool = False,
    ) -> trustme.LeafCert:
        """A leaf for `names`, valid from now+valid_days[0] to now+valid_days[1] days."""
        now = datetime.now(UTC)
        issuer = self.intermediate if via_intermediate else self.root
        return issuer.issue_cert(
            *(names or (LOOPBACK, "localhost")),
            common_name=(names or (LOOPBACK,))[0],
            not_before=now + timedelta(days=valid_days[0]),
            not_after=now + timedelta(days=valid_days[1]),
        )

    def server_context(self, leaf: trustme.LeafCert, with_chain: bool = True) -> ssl.SSLContext:
        """A server context presenting the leaf, with its intermediates unless told not to."""
        pems = leaf.cert_chain_pems if with_chain else leaf.cert_chain_pems[:1]
        cert_file = self.folder / f"leaf-{secrets.token_hex(4)}.pem"
        cert_file.write_bytes(b"".join(pem.bytes() for pem in pems))
        key_file = cert_file.with_suffix(".key")
        key_file.write_bytes(leaf.private_key_pem.bytes())
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        return context

    def virtual_hosts(
        self, default: ssl.SSLContext, by_name: dict[str, ssl.SSLContext]
    ) -> ssl.SSLContext:
        """One listener, a certificate per SNI name; `default` when no (or another) name."""

        def pick(ssl_object: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
            ssl_object.context = by_name.get(name or "", default)

        default.sni_callback = pick
        return default


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = trustme.CA(organization_name="availmon test root")
    folder = tmp_path_factory.mktemp("pki")
    ca_file = folder / "root.pem"
    root.cert_pem.write_to_path(str(ca_file))
    return Pki(root, root.create_child_ca(), ca_file, folder)


def example_endpoints(protocol: str) -> list[AnyEndpoint]:
    """The commented "Real-world examples" of config.example.toml for one protocol, validated."""
    text = (Path(__file__).parents[2] / "config.example.toml").read_text()
    block = text[text.index("# Real-world examples") :].split("\n\n")[0].splitlines()[1:]
    parsed = tomllib.loads("\n".join(line.removeprefix("#").removeprefix(" ") for line in block))
    specs = [ENDPOINT_ADAPTER.validate_python(entry) for entry in parsed["endpoints"]]
    return [spec for spec in specs if spec.protocol.value == protocol]

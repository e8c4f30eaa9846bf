"""The load farm for bench/run.py: loopback-only targets, in processes of their own.

    .venv/bin/python bench/farm.py [--http-ports K] [--http-workers W] [--tcp-ports P]
                                   [--flap-period S]

Prints one JSON line with its ports and pids, then serves until its stdin closes (so it never
outlives the benchmark that started it), or SIGTERM/SIGINT. Everything binds 127.0.0.1 only.

- HTTP (aiohttp, W worker processes sharing K listening sockets): distinct paths per endpoint,
  /<kind>/<i> where kind is
    ok     200 at once
    slow   200 after 100-900 ms (fixed per i)
    fail   500 at once
    flap   503 during one half of every flap period (phase fixed per i), else 200
    down   200 until the farm is taken down, 503 after
- TCP: P listeners that accept and close, plus one "down" listener closed when taken down.
- UDP: an echo port, plus a "down" echo port closed when taken down.
- DNS (dnslib messages on a UDP socket): A 127.0.0.1 for any name under `bench.`, NXDOMAIN
  otherwise; plus a "down" server closed when taken down.

Control (HTTP on its own port): POST /down takes the down set down now and answers the exact
wall-clock time it did so; POST /up brings it back; GET /stats answers request counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.sharedctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

HOST = "127.0.0.1"
ZONE = "bench."
# per-worker counters in shared memory: requests, requests asking for "Connection: close"
COUNTERS = 2


def listen_tcp(port: int = 0, backlog: int = 4096) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def slow_delay(i: int) -> float:
    return 0.1 + (i * 37 % 800) / 1000


def flap_is_down(i: int, period: float, now: float) -> bool:
    return (now + (i * 7.919) % period) % period < period / 2


# -- HTTP worker ----------------------------------------------------------------------------


def http_worker(
    sockets: list[socket.socket],
    down_at: Any,
    counters: Any,
    slot: int,
    flap_period: float,
    parent: int,
) -> None:
    """One worker process: an aiohttp server on the shared listening sockets."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    base = slot * COUNTERS

    async def handle(request: web.Request) -> web.Response:
        counters[base] += 1
        if request.headers.get("Connection", "").lower() == "close":
            counters[base + 1] += 1
        kind = request.match_info["kind"]
        try:
            i = int(request.match_info["i"])
        except ValueError:
            raise web.HTTPNotFound() from None
        if kind == "ok":
            return web.Response(text="ok\n")
        if kind == "slow":
            await asyncio.sleep(slow_delay(i))
            return web.Response(text="slow ok\n")
        if kind == "fail":
            return web.Response(status=500, text="failing on purpose\n")
        if kind == "flap":
            if flap_is_down(i, flap_period, time.time()):
                return web.Response(status=503, text="flapping: down\n")
            return web.Response(text="flapping: up\n")
        if kind == "down":
            if down_at.value and time.time() >= down_at.value:
                return web.Response(status=503, text="taken down\n")
            return web.Response(text="up until taken down\n")
        raise web.HTTPNotFound()

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{kind}/{i}", handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        for sock in sockets:
            await web.SockSite(runner, sock, backlog=4096).start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        while not stop.is_set() and os.getppid() == parent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        await runner.cleanup()

    asyncio.run(main())


# -- TCP, UDP, DNS in the parent process ------------------------------------------------------


class TcpListener:
    """Accept and close at once, without transports: the cheapest possible TCP peer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int = 0) -> None:
        self.loop = loop
        self.sock = listen_tcp(port)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        loop.add_reader(self.sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(256):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            conn.close()
            self.accepted += 1

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.answered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.answered += 1
        self.transport.sendto(data, addr)


class DnsServer(UdpEcho):
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        try:
            query = DNSRecord.parse(data)
        except Exception:  # garbage in: no answer, like a real server
            return
        reply = query.reply()
        qname = str(query.q.qname)
        if qname.lower().endswith(ZONE) and query.q.qtype == QTYPE.A:
            reply.add_answer(RR(qname, QTYPE.A, rdata=A(HOST), ttl=60))
        elif not qname.lower().endswith(ZONE):
            reply.header.rcode = RCODE.NXDOMAIN
        self.answered += 1
        self.transport.sendto(reply.pack(), addr)


async def open_udp(
    factory: Callable[[], UdpEcho], port: int = 0
) -> tuple[asyncio.DatagramTransport, UdpEcho]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        factory, local_addr=(HOST, port), reuse_port=False
    )
    assert isinstance(protocol, UdpEcho)
    return transport, protocol


class Farm:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.down_at = multiprocessing.sharedctypes.RawValue("d", 0.0)
        self.counters = multiprocessing.sharedctypes.RawArray("q", COUNTERS * args.http_workers)
        self.http_sockets = [listen_tcp() for _ in range(args.http_ports)]
        self.workers: list[multiprocessing.process.BaseProcess] = []
        self.tcp: list[TcpListener] = []
        self.tcp_down: TcpListener | None = None
        self.udp: dict[str, tuple[asyncio.DatagramTransport, UdpEcho]] = {}
        self.ports: dict[str, int] = {}

    def start_workers(self) -> None:
        ctx = multiprocessing.get_context("fork")
        for slot in range(self.args.http_workers):
            worker = ctx.Process(
                target=http_worker,
                args=(
                    self.http_sockets,
                    self.down_at,
                    self.counters,
                    slot,
                    self.args.flap_period,
                    os.getpid(),
                ),
                daemon=True,
            )
            worker.start()
            self.workers.append(worker)

    async def start_servers(self) -> None:
        loop = asyncio.get_running_loop()
        self.tcp = [TcpListener(loop) for _ in range(self.args.tcp_ports)]
        self.tcp_down = TcpListener(loop)
        for name, factory in (("udp", UdpEcho), ("udp_down", UdpEcho)):
            self.udp[name] = await open_udp(factory)
        for name, factory in (("dns", DnsServer), ("dns_down", DnsServer)):
            self.udp[name] = await open_udp(factory)
        self.ports = {
            name: int(t.get_extra_info("sockname")[1]) for name, (t, _) in self.udp.items()
        }
        self.ports["tcp_down"] = self.tcp_down.port

    def take_down(self) -> float:
        """Stop the down set now; returns the time it happened (epoch seconds)."""
        if self.down_at.value:
            return float(self.down_at.value)
        now = time.time()
        self.down_at.value = now
        if self.tcp_down is not None:
            self.tcp_down.close()
        for name in ("udp_down", "dns_down"):
            self.udp[name][0].close()
        return now

    async def bring_up(self) -> None:
        if not self.down_at.value:
            return
        self.tcp_down = TcpListener(asyncio.get_running_loop(), self.ports["tcp_down"])
        for name, factory in (("udp_down", UdpEcho), ("dns_down", DnsServer)):
            self.udp[name] = await open_udp(factory, self.ports[name])
        self.down_at.value = 0.0

    def stats(self) -> dict[str, Any]:
        counts = list(self.counters)
        return {
            "down_at": self.down_at.value or None,
            "http_requests": sum(counts[0::COUNTERS]),
            "http_connection_close": sum(counts[1::COUNTERS]),
            "tcp_accepted": sum(t.accepted for t in self.tcp)
            + (self.tcp_down.accepted if self.tcp_down else 0),
            "udp_answered": self.udp["udp"][1].answered,
            "dns_answered": self.udp["dns"][1].answered,
        }

    def description(self, control_port: int) -> dict[str, Any]:
        return {
            "control_port": control_port,
            "http_ports": [int(s.getsockname()[1]) for s in self.http_sockets],
            "tcp_ports": [t.port for t in self.tcp],
            **self.ports,
            "pids": [os.getpid(), *(w.pid for w in self.workers if w.pid)],
        }

    def stop(self) -> None:
        for worker in self.workers:
            if worker.is_alive() and worker.pid:
                os.kill(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            worker.join(5)
            if worker.is_alive():
                worker.kill()
                worker.join(1)


async def serve(args: argparse.Namespace) -> None:
    farm = Farm(args)
    farm.start_workers()
    try:
        await farm.start_servers()
        routes = web.RouteTableDef()

        @routes.post("/down")
        async def down(request: web.Request) -> web.Response:
            return web.json_response({"down_at": farm.take_down()})

        @routes.post("/up")
        async def up(request: web.Request) -> web.Response:
            await farm.bring_up()
            return web.json_response({"up": True})

        @routes.get("/stats")
        async def stats(request: web.Request) -> web.Response:
            return web.json_response(farm.stats())

        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        control = listen_tcp(backlog=64)
        await web.SockSite(runner, control).start()
        sys.stdout.write(json.dumps(farm.description(int(control.getsockname()[1]))) + "\n")
        sys.stdout.flush()
        await wait_for_end()
        await runner.cleanup()
    finally:
        farm.stop()


async def wait_for_end() -> None:
    """Until stdin closes (the benchmark exited, however it exited) or SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def until_eof() -> None:
        while await reader.read(4096):
            pass
        stop.set()

    eof = asyncio.create_task(until_eof())
    await stop.wait()
    eof.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--http-ports", type=int, default=4, help="HTTP listening ports")
    parser.add_argument("--http-workers", type=int, default=1, help="HTTP server processes")
    parser.add_argument("--tcp-ports", type=int, default=32, help="TCP accept-and-close ports")
    parser.add_argument("--flap-period", type=float, default=60.0, help="seconds per flap")
    args = parser.parse_args(argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""systemd notification protocol (sd_notify(3)) spoken directly: one datagram per message to
the unix socket named by $NOTIFY_SOCKET. No library: the protocol is a single sendto().

Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

from availmon.logs import get_logger

log = get_logger("availmon.sdnotify")


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._address: str | None = None
        self._socket: socket.socket | None = None
        if address:
            # "@name" is the abstract namespace: a leading NUL byte on the wire
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *fields: str) -> None:
        if self._socket is None or self._address is None:
            return
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:  # systemd gone or socket full: never fatal
            log.warning("sd_notify_failed", error=str(exc))

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval() -> float | None:
    """Half of WatchdogSec, as systemd recommends; None when no watchdog is set for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    with contextlib.suppress(ValueError):
        return max(0.1, int(usec) / 2_000_000)
    return None


async def watchdog_loop(notifier: Notifier, interval: float) -> None:
    """Ping the watchdog from the event loop itself: a blocked loop stops the pings, and
    systemd restarts the daemon (Restart=on-failure)."""
    while True:
        notifier.send("WATCHDOG=1")
        await asyncio.sleep(interval)

"""Child processes of the benchmark: started in their own session (Ctrl-C reaches only us, and we
stop them in order), with a parent-death signal where `setpriv` exists, and always stopped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO


@contextlib.contextmanager
def farm_process() -> Iterator[dict[str, Any]]:
    """bench/farm.py in its own process, for a benchmark that runs its own loop: yields the
    JSON line it prints (its ports), and stops it when the block ends by closing its stdin,
    which it serves until."""
    argv = [sys.executable, str(Path(__file__).resolve().parent / "farm.py"), "--http-workers", "1"]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        try:
            yield json.loads(proc.stdout.readline())
        finally:
            proc.stdin.close()
            proc.wait(timeout=10)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for programs that cannot report the port they got)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def git_revision(root: Path) -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    revision = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        revision += "-dirty"
    return revision


def log(message: str) -> None:
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


@dataclass
class Child:
    name: str
    process: subprocess.Popen[Any]
    stop_timeout: float

    @property
    def pid(self) -> int:
        return self.process.pid


class Children:
    def __init__(self) -> None:
        self._children: list[Child] = []
        self._pdeathsig = shutil.which("setpriv")

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        stdout: int | TextIO | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stop_timeout: float = 15.0,
        env: dict[str, str] | None = None,
    ) -> Child:
        command = argv
        if self._pdeathsig:  # dies with us even if we are SIGKILLed
            command = [self._pdeathsig, "--pdeathsig", "TERM", "--", *argv]
        process = subprocess.Popen(
            command,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout not in (None, subprocess.PIPE) else None,
            start_new_session=True,
            env=env,
            text=True,
        )
        child = Child(name, process, stop_timeout)
        self._children.append(child)
        return child

    async def stop(self, child: Child) -> float | None:
        """SIGTERM, wait up to its stop timeout, then SIGKILL; returns the exit time taken."""
        if child in self._children:
            self._children.remove(child)
        process = child.process
        if process.poll() is not None:
            return None
        started = asyncio.get_running_loop().time()
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            await asyncio.wait_for(asyncio.to_thread(process.wait), child.stop_timeout)
        except TimeoutError:
            log(f"{child.name} (pid {child.pid}) did not stop in {child.stop_timeout:g} s: killed")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.to_thread(process.wait)
        return asyncio.get_running_loop().time() - started

    async def stop_all(self) -> None:
        for child in reversed(list(self._children)):
            try:
                await asyncio.shield(self.stop(child))
            except BaseException:  # still stop the others
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)

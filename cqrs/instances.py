"""Make PostgreSQL and Redis reachable for ``cqrs up``.

Each service is probed at its configured URL. One that does not answer, on a
host of this machine, is replaced by a private instance under ``data_dir``
(``postgres/`` and ``redis/``, reused next time) started from the locally
installed binaries; the caller stops it with :meth:`PrivateInstance.stop`.
Probes speak just enough of each wire protocol to tell "PostgreSQL/Redis is
here" from "something else holds the port", without needing credentials.
"""

from __future__ import annotations

import dataclasses
import glob
import ipaddress
import os
import pwd
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol
from urllib.parse import SplitResult, urlsplit

from common.settings import Settings

PG_BIN_GLOBS: tuple[str, ...] = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin")
# PostgreSQL answers this request with a single b"S" or b"N", before any authentication.
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)
_START_TIMEOUT_S = 60.0


class Probe(Enum):
    """What a probe found at ``host:port``."""

    ANSWERS = "answers"  # the expected service replied
    CLOSED = "closed"  # nothing accepts connections there
    FOREIGN = "foreign"  # something accepted but did not reply like the service


class ServicesUnavailable(Exception):
    """A service is unreachable and cannot be started here; the message says what to do."""


class InstanceError(Exception):
    """A private instance could not be started; the message includes its log tail."""


class PrivateInstance(Protocol):
    """A server started by :func:`ensure_services`."""

    name: str
    url: str
    data_dir: Path

    def stop(self) -> None:
        """Stop the server; safe to call twice."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """Where to look for server binaries (injectable so tests are deterministic)."""

    path: str | None = None  # None: the PATH environment variable
    pg_bin_globs: Sequence[str] = PG_BIN_GLOBS


# --- probing -------------------------------------------------------------------------------


def probe_postgres(host: str, port: int, timeout: float = 1.0) -> Probe:
    """Whether a PostgreSQL server listens at ``host:port``."""
    return _probe(host, port, timeout, _SSL_REQUEST, lambda reply: reply[:1] in (b"S", b"N"))


def probe_redis(host: str, port: int, timeout: float = 1.0) -> Probe:
    """Whether a Redis server listens at ``host:port`` (an auth error still counts)."""
    return _probe(host, port, timeout, b"PING\r\n", lambda r: r.startswith((b"+PONG", b"-")))


def _probe(host: str, port: int, timeout: float, hello: bytes, ok: _ReplyCheck) -> Probe:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return Probe.CLOSED
    with sock:
        try:
            sock.sendall(hello)
            reply = sock.recv(64)
        except OSError:
            return Probe.FOREIGN
    return Probe.ANSWERS if reply and ok(reply) else Probe.FOREIGN


class _ReplyCheck(Protocol):
    def __call__(self, reply: bytes, /) -> bool: ...


# --- URLs and ports ------------------------------------------------------------------------


def url_host_port(url: str, default_port: int) -> tuple[str, int]:
    """The host and port a URL names (``localhost`` and the default port if omitted)."""
    parts = urlsplit(url)
    return parts.hostname or "localhost", parts.port or default_port


def with_port(url: str, port: int) -> str:
    """``url`` with its port replaced, keeping user, password, path and query."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment).geturl()


def is_local_host(host: str) -> bool:
    """True for names of this machine that a private instance can listen on."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_address(host: str) -> str:
    """A numeric address for ``host`` (servers such as Redis do not resolve names)."""
    return "127.0.0.1" if host == "localhost" else host


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((bind_address(host), 0))
        return int(sock.getsockname()[1])


# --- finding binaries ----------------------------------------------------------------------


def find_postgres_bin(lookup: Lookup, version: str | None = None) -> Path | None:
    """A directory holding ``initdb``, ``pg_ctl`` and ``postgres``, preferring ``version``."""
    candidates: list[Path] = []
    initdb = shutil.which("initdb", path=lookup.path)
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for pattern in lookup.pg_bin_globs:
        # Newest major version first: a fresh cluster should use the best server available.
        candidates.extend(
            Path(p) for p in sorted(glob.glob(pattern), key=_version_key, reverse=True)
        )
    usable = [
        d for d in candidates if all((d / n).is_file() for n in ("initdb", "pg_ctl", "postgres"))
    ]
    if version is not None:
        # An existing cluster can only be started by its own major version.
        matching = [d for d in usable if f"/{version}/" in f"{d}/"]
        if matching:
            return matching[0]
    return usable[0] if usable else None


def _version_key(path: str) -> tuple[int, str]:
    digits = "".join(ch for ch in Path(path).parent.name if ch.isdigit())
    return (int(digits) if digits else 0, path)


def find_redis_server(lookup: Lookup) -> str | None:
    """The ``redis-server`` executable, if installed."""
    return shutil.which("redis-server", path=lookup.path)


# --- private PostgreSQL --------------------------------------------------------------------


@dataclass(slots=True)
class PrivatePostgres:
    """A PostgreSQL cluster in ``data_dir`` run by ``pg_ctl`` (trust auth, user postgres)."""

    bin_dir: Path
    data_dir: Path
    log_file: Path
    host: str
    port: int
    name: str = "PostgreSQL"
    url: str = ""
    _running: bool = field(default=False, repr=False)

    def start(self) -> None:
        """Create the cluster if missing, then start it and wait until it accepts connections."""
        user = _service_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            _chown(self.data_dir, user)
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                user=user,
            )
        self.log_file.touch()
        _chown(self.log_file, user)
        # Port and address on the command line, not in postgresql.conf, so a reused cluster
        # follows the URL; no Unix socket, whose default directory may be missing or shared.
        options = (
            f"-p {self.port} -c listen_addresses={bind_address(self.host)} "
            "-c unix_socket_directories=''"
        )
        self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            str(int(_START_TIMEOUT_S)),
            "-o",
            options,
            user=user,
        )
        self._running = True

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions), waiting until it is down."""
        if not self._running:
            return
        self._running = False
        self._run(
            "pg_ctl",
            "stop",
            "-D",
            str(self.data_dir),
            "-m",
            "fast",
            "-w",
            "-t",
            "30",
            user=_service_user(),
            check=False,
        )

    def _run(
        self, tool: str, *args: str, user: pwd.struct_passwd | None, check: bool = True
    ) -> None:
        with self.log_file.open("ab") as log:
            result = subprocess.run(
                [str(self.bin_dir / tool), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the terminal must not reach the postmaster
                # directly; ``cqrs up`` shuts it down after the servers that use it.
                start_new_session=True,
                cwd="/",  # the service user may not be allowed into ours
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
                check=False,
            )
        if check and result.returncode != 0:
            hint = (
                f"\n(as root, PostgreSQL runs as user {user.pw_name!r}, who needs access to "
                f"{self.data_dir} and every directory above it)"
                if user
                else ""
            )
            raise InstanceError(
                f"{tool} failed (exit {result.returncode}); {self.log_file}:\n"
                + log_tail(self.log_file)
                + hint
            )


def _service_user() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as: itself unless root, which initdb refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise InstanceError("running as root, and there is no 'postgres' or 'nobody' user to run as")


def _chown(path: Path, user: pwd.struct_passwd | None) -> None:
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


# --- private Redis -------------------------------------------------------------------------


@dataclass(slots=True)
class PrivateRedis:
    """A ``redis-server`` child process keeping its RDB file in ``data_dir``."""

    executable: str
    data_dir: Path
    log_file: Path
    host: str
    port: int
    password: str | None = None
    name: str = "Redis"
    url: str = ""
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            bind_address(self.host),
            "--dir",
            str(self.data_dir.resolve()),
            "--logfile",
            str(self.log_file.resolve()),
            "--daemonize",
            "no",
            "--appendonly",
            "no",
        ]
        if self.password:
            argv += ["--requirepass", self.password]
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,  # errors before the log file is opened (bad arguments)
                start_new_session=True,  # see PrivatePostgres._run
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while probe_redis(self.host, self.port, timeout=0.5) is not Probe.ANSWERS:
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise InstanceError(
                    f"redis-server did not start; {self.log_file}:\n" + log_tail(self.log_file)
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (Redis saves its data set), then SIGKILL if it takes too long."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ("" if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --- the whole check -----------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    """What to do about one service."""

    name: str
    url: str
    host: str
    port: int
    probe: Probe
    binary: str | Path | None = None


def ensure_services(
    settings: Settings,
    data_dir: Path,
    *,
    lookup: Lookup | None = None,
    timeout: float = 1.0,
) -> tuple[Settings, list[PrivateInstance]]:
    """Make PostgreSQL and Redis reachable; returns adjusted settings and what was started.

    Raises :class:`ServicesUnavailable` (before starting anything) if a service is
    unreachable and cannot be started here, and :class:`InstanceError` if starting fails.
    """
    lookup = lookup or Lookup()
    # Absolute: the servers run with another working directory (and maybe as another user).
    data_dir = data_dir.resolve()
    pg_host, pg_port = url_host_port(settings.asyncpg_dsn, 5432)
    redis_host, redis_port = url_host_port(settings.redis_url, 6379)
    pg = _Plan(
        "PostgreSQL",
        settings.database_url,
        pg_host,
        pg_port,
        probe_postgres(pg_host, pg_port, timeout),
    )
    redis = _Plan(
        "Redis",
        settings.redis_url,
        redis_host,
        redis_port,
        probe_redis(redis_host, redis_port, timeout),
    )
    pg_version = _cluster_version(data_dir / "postgres")
    if pg.probe is not Probe.ANSWERS:
        pg.binary = find_postgres_bin(lookup, pg_version)
    if redis.probe is not Probe.ANSWERS:
        redis.binary = find_redis_server(lookup)
    problems = [p for p in (pg, redis) if p.probe is not Probe.ANSWERS and not _can_start(p)]
    if problems:
        raise ServicesUnavailable(missing_services_message(problems))

    started: list[PrivateInstance] = []
    try:
        if pg.probe is not Probe.ANSWERS:
            assert isinstance(pg.binary, Path)
            port = _port_for(pg)
            instance = PrivatePostgres(
                pg.binary, data_dir / "postgres", data_dir / "postgres.log", pg.host, port
            )
            instance.url = with_port(settings.database_url, port)
            _prepare_data_dir(data_dir)
            instance.start()
            started.append(instance)
            settings = dataclasses.replace(settings, database_url=instance.url)
        if redis.probe is not Probe.ANSWERS:
            assert isinstance(redis.binary, str)
            port = _port_for(redis)
            password = urlsplit(settings.redis_url).password
            redis_instance = PrivateRedis(
                redis.binary, data_dir / "redis", data_dir / "redis.log", redis.host, port, password
            )
            redis_instance.url = with_port(settings.redis_url, port)
            _prepare_data_dir(data_dir)
            redis_instance.start()
            started.append(redis_instance)
            settings = dataclasses.replace(settings, redis_url=redis_instance.url)
    except BaseException:
        for instance_ in reversed(started):
            instance_.stop()
        raise
    return settings, started


def _can_start(plan: _Plan) -> bool:
    return plan.binary is not None and is_local_host(plan.host)


def _port_for(plan: _Plan) -> int:
    """The URL's port, unless something that is not the service holds it."""
    if plan.probe is Probe.CLOSED:
        return plan.port
    return free_port(plan.host)


def _cluster_version(pg_data: Path) -> str | None:
    try:
        return (pg_data / "PG_VERSION").read_text().strip()
    except OSError:
        return None


def _prepare_data_dir(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # PostgreSQL then runs as another user, who must be able to enter this directory.
        data_dir.chmod(data_dir.stat().st_mode | 0o111)


_INSTALL_HINT = """\
Either run them yourself and point CQRS_DATABASE_URL / CQRS_REDIS_URL at them, e.g.
  docker compose up -d postgres redis
or install the servers, and `cqrs up` will run private ones under ./.data:
  apt-get install postgresql redis-server     (Debian, Ubuntu)
  brew install postgresql@16 redis            (macOS)"""


def missing_services_message(problems: Sequence[_Plan]) -> str:
    """Explain which services are missing and how to get them."""
    lines = []
    for p in problems:
        where = f"{p.name} at {p.host}:{p.port}"
        state = "nothing answers there" if p.probe is Probe.CLOSED else "another program holds it"
        if not is_local_host(p.host):
            lines.append(
                f"cannot reach {where} ({state}); it is not on this machine, so no "
                "private instance can replace it."
            )
        elif p.name == "PostgreSQL":
            lines.append(
                f"cannot reach {where} ({state}), and no PostgreSQL server binaries "
                "(initdb, pg_ctl) are on PATH or in /usr/lib/postgresql/*/bin."
            )
        else:
            lines.append(f"cannot reach {where} ({state}), and redis-server is not on PATH.")
    return "\n".join(["cqrs up: " + line for line in lines] + [_INSTALL_HINT])

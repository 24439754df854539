"""A private PostgreSQL cluster run with ``initdb``/``pg_ctl`` (``cqrs up``, fault tests)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cqrs.instances.base import START_TIMEOUT_S, InstanceError, Lookup, log_tail
from cqrs.instances.network import bind_address


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
            str(int(START_TIMEOUT_S)),
            "-o",
            options,
            user=user,
        )
        self._running = True

    def replica(self, data_dir: Path, log_file: Path, port: int) -> PrivatePostgres:
        """A streaming replica of this running cluster in ``data_dir`` (``pg_basebackup -R``:
        a base backup that starts as a standby following this one), not started yet."""
        user = _service_user()
        data_dir.mkdir(parents=True, exist_ok=True)
        data_dir.chmod(0o700)
        _chown(data_dir, user)
        log_file.touch()
        _chown(log_file, user)
        standby = PrivatePostgres(
            self.bin_dir, data_dir, log_file, self.host, port, name="PostgreSQL replica"
        )
        standby._run(
            "pg_basebackup",
            "-D", str(data_dir),
            "-h", self.host,
            "-p", str(self.port),
            "-U", "postgres",
            "-R",  # standby.signal and primary_conninfo: it follows this cluster
            "-X", "stream",
            "-c", "fast",
            user=user,
        )  # fmt: skip
        return standby

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
        argv, switch = as_user([str(self.bin_dir / tool), *args], user)
        with self.log_file.open("ab") as log:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the terminal must not reach the postmaster
                # directly; ``cqrs up`` shuts it down after the servers that use it.
                start_new_session=True,
                cwd="/",  # the service user may not be allowed into ours
                check=False,
                **switch,
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


def as_user(argv: list[str], user: pwd.struct_passwd | None) -> tuple[list[str], dict[str, Any]]:
    """``argv`` run as ``user``: the command line and the extra ``subprocess`` arguments.

    The switch happens after ``exec`` when util-linux's ``setpriv`` is installed: a
    child that changes its user between ``fork`` and ``exec`` can crash (SIGSEGV) when
    the parent has other threads inside gRPC's C core, as ``cqrs up`` and the tests do.
    """
    if user is None:
        return argv, {}
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        ids = [f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]
        return [setpriv, *ids, *argv], {}
    return argv, {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _chown(path: Path, user: pwd.struct_passwd | None) -> None:
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)

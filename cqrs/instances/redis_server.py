"""A private ``redis-server`` child process (``cqrs up``, fault tests)."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cqrs.instances.base import START_TIMEOUT_S, InstanceError, Lookup, kill, log_tail, terminate
from cqrs.instances.network import Probe, bind_address, probe_redis


def find_redis_server(lookup: Lookup) -> str | None:
    """The ``redis-server`` executable, if installed."""
    return shutil.which("redis-server", path=lookup.path)


@dataclass(slots=True)
class PrivateRedis:
    """A ``redis-server`` child process keeping its RDB file in ``data_dir``.

    ``persistent=False`` keeps nothing on disk (``--save ""``), like a cache
    deployment: every restart starts empty (fault tests).
    """

    executable: str
    data_dir: Path
    log_file: Path
    host: str
    port: int
    password: str | None = None
    persistent: bool = True
    options: tuple[str, ...] = ()  # more redis-server arguments (e.g. cluster mode)
    name: str = "Redis"
    url: str = ""
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

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
        if not self.persistent:
            argv += ["--save", ""]
        argv += self.options
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,  # errors before the log file is opened (bad arguments)
                start_new_session=True,  # see PrivatePostgres._run
            )
        deadline = time.monotonic() + START_TIMEOUT_S
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
        terminate(process)

    def kill(self) -> None:
        """SIGKILL: the server dies at once, saving nothing (fault tests)."""
        process, self._process = self._process, None
        kill(process)

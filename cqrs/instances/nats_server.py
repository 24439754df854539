"""A private ``nats-server`` with JetStream, as a child process (the relay's fault tests)."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cqrs.instances.base import START_TIMEOUT_S, InstanceError, Lookup, kill, log_tail, terminate
from cqrs.instances.network import bind_address, free_port

NATS_SERVER_PATHS = ("/usr/sbin/nats-server", "/usr/local/bin/nats-server")


def find_nats_server(lookup: Lookup) -> str | None:
    """The ``nats-server`` executable, if installed."""
    found = shutil.which("nats-server", path=lookup.path)
    if found is None:
        found = next((p for p in NATS_SERVER_PATHS if Path(p).is_file()), None)
    return found


@dataclass(slots=True)
class PrivateNats:
    """A ``nats-server -js`` child process keeping its JetStream data in ``data_dir``.

    :meth:`stop` / :meth:`kill` and :meth:`start` again reuse the port and the store
    directory, so the streams survive a restart (as a real deployment's would).
    """

    executable: str
    data_dir: Path
    log_file: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free one, chosen on the first start
    monitor_port: int = 0
    name: str = "NATS"
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait until JetStream is ready (``/healthz``)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.host)
        self.monitor_port = self.monitor_port or free_port(self.host)
        argv = [
            self.executable,
            "-a",
            bind_address(self.host),
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "-js",
            "-sd",
            str(self.data_dir.resolve()),
            "-n",
            f"cqrs-private-{self.port}",
        ]
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # see PrivatePostgres._run
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._healthy():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise InstanceError(
                    f"nats-server did not start; {self.log_file}:\n" + log_tail(self.log_file)
                )
            time.sleep(0.05)

    def _healthy(self) -> bool:
        url = f"http://{self.host}:{self.monitor_port}/healthz?js-enabled-only=true"
        try:
            with urllib.request.urlopen(url, timeout=0.5) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it takes too long; safe twice."""
        process, self._process = self._process, None
        terminate(process)

    def kill(self) -> None:
        """SIGKILL: the server dies at once (what it had not synced may be lost)."""
        process, self._process = self._process, None
        kill(process)

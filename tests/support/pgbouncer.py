"""A private PgBouncer (Debian's ``pgbouncer``) in transaction mode in front of the shared
PostgreSQL, for the tests of that deployment; it is stopped (and nothing else touched)
when the block ends."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.servers import free_port

BINARY = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
)
# What asyncpg sends at connection start beside user and database: PgBouncer 1.18 refuses
# a client with parameters it does not know, unless told to ignore them (they are then not
# applied: put them on the role behind PgBouncer, see the README).
IGNORED = "extra_float_digits,statement_timeout,idle_in_transaction_session_timeout," \
    "default_transaction_read_only"  # fmt: skip

_CONFIG = """
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
auth_type = trust
auth_file = {dir}/userlist.txt
admin_users = {user}
pool_mode = transaction
max_client_conn = 200
default_pool_size = 4
ignore_startup_parameters = {ignored}
unix_socket_dir =
logfile = {dir}/pgbouncer.log
"""


@contextmanager
def pgbouncer(directory: Path, host: str, port: int, user: str) -> Iterator[int]:
    """PgBouncer on a free port, in front of PostgreSQL at ``host:port`` for ``user``
    (trust); yields its port. ``directory`` must be enterable by the ``postgres`` user
    when running as root (PgBouncer refuses root)."""
    assert BINARY is not None
    listen = free_port()
    config = directory / "pgbouncer.ini"
    config.write_text(
        _CONFIG.format(host=host, port=port, listen=listen, dir=directory, user=user,
                       ignored=IGNORED)
    )  # fmt: skip
    (directory / "userlist.txt").write_text(f'"{user}" ""\n')
    argv = [BINARY, str(config)]
    if os.geteuid() == 0:
        service = pwd.getpwnam("postgres")
        for path in (directory, config, directory / "userlist.txt"):
            os.chown(path, service.pw_uid, service.pw_gid)
        argv = [BINARY, "-u", "postgres", str(config)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", listen)) == 0:
                    break
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "pgbouncer did not listen"
            time.sleep(0.05)
        yield listen
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

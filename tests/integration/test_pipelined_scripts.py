"""The read scripts' pipelined path (read_server/sources/pipelined.py) against real Redis: it
answers what redis-py answers, concurrent calls each get their own reply (also after a caller
gave up), and everything else — an unloaded script, a lost or stuck server, a password and a
database number — ends as redis-py's call would. On the shared Redis (and, in the cluster pass,
a Redis Cluster, where calls are routed by slot) and on Redis servers of our own for the
faults."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import REGISTRY
from redis.commands.core import AsyncScript

from common import redis_scripts
from common.redis_client import redis_client
from common.redis_keys import ProjectionKeys
from cqrs.instances import PrivateRedis
from read_server.sources.pipelined import PipelinedScripts
from tests.conftest import REDIS_URL, delete_redis_prefix
from tests.support.env import unique_name
from tests.support.servers import free_port

pytestmark = pytest.mark.integration

CP = "0000000000000000001:0000000001"


async def _project(client: aioredis.Redis, keys: ProjectionKeys, docs: int) -> None:
    """Generation 1 of ``keys``, active at CP, holding ``docs`` documents d0, d1..."""
    await client.set(keys.active, "1")
    await client.set(keys.checkpoint(1), CP)
    await client.hset(keys.docs(1), mapping={f"d{i}": f"doc {i}".encode() for i in range(docs)})
    await client.zadd(keys.index(1, "all"), {f"{i:016x}|d{i}": 0 for i in range(docs)})


def _get_keys(keys: ProjectionKeys) -> list[str]:
    return [keys.active, keys.next_gen, keys.checkpoint(1), keys.docs(1)]


async def _until_pipelined(
    scripts: PipelinedScripts, call: Callable[[], Awaitable[object]]
) -> None:
    """Call until a call went the pipelined way (the first ones open the connection)."""
    deadline = time.monotonic() + 5
    while scripts.pipelined == 0:
        assert time.monotonic() < deadline, "the pipelined connection never opened"
        await call()
        await asyncio.sleep(0.01)


def _counted(path: str) -> float:
    return REGISTRY.get_sample_value("cqrs_redis_script_calls_total", {"path": path}) or 0.0


def _reader(
    scripts: PipelinedScripts, get: AsyncScript, keys: ProjectionKeys
) -> Callable[[], Awaitable[object]]:
    async def read() -> object:
        return await scripts.call(get, _get_keys(keys), [1, "", "d0"])

    return read


@pytest.fixture
async def shared() -> AsyncIterator[tuple[aioredis.Redis, list[ProjectionKeys]]]:
    """Three projections' keyspaces on the shared Redis (on a cluster: three slots)."""
    prefix = unique_name("pipelined")
    client = redis_client(REDIS_URL, max_connections=4)
    spaces = [ProjectionKeys(prefix, name) for name in ("products", "customers", "orders")]
    for keys in spaces:
        await _project(client, keys, 30)
    try:
        yield client, spaces
    finally:
        await client.aclose()
        await delete_redis_prefix(prefix)


async def test_concurrent_calls_get_what_redis_py_gives_them(
    shared: tuple[aioredis.Redis, list[ProjectionKeys]],
) -> None:
    client, spaces = shared
    get = client.register_script(redis_scripts.script(*redis_scripts.GET))
    listed = client.register_script(redis_scripts.script(*redis_scripts.LIST))
    scripts = PipelinedScripts(client)
    try:
        for keys in spaces:  # on a cluster, each on its node: both scripts loaded there...
            await listed(
                keys=[*_get_keys(keys)[:3], keys.index(1, "all"), keys.docs(1)],
                args=[1, "", "+", 1],
            )
        for keys in spaces:  # ...and every connection open
            await _until_pipelined_again(
                scripts, _reader(scripts, get, keys), [2, b"doc 0", CP.encode()]
            )
        # Gets and lists of every keyspace, interleaved, all in flight at once.
        calls = []
        for i in range(300):
            keys = spaces[i % 3]
            if i % 2:
                calls.append((get, _get_keys(keys), [1, "", f"d{i % 30}"]))
            else:
                index_keys = [*_get_keys(keys)[:3], keys.index(1, "all"), keys.docs(1)]
                calls.append((listed, index_keys, [1, "", f"({i % 30:016x}|d{i % 30}", 5]))
        before, counted = scripts.pipelined, _counted("pipelined")
        fast = await asyncio.gather(*(scripts.call(s, k, a) for s, k, a in calls))
        assert scripts.pipelined - before == 300
        assert _counted("pipelined") - counted == 300  # cqrs_redis_script_calls_total
        slow = await asyncio.gather(*(s(keys=k, args=a) for s, k, a in calls))
        assert fast == slow
        assert fast[1] == [2, b"doc 1", CP.encode()]
        # Not behind: a token ahead of the checkpoint answers "behind", the same both ways.
        ahead = "0000000000000000009:0000000001"
        assert await scripts.call(get, _get_keys(spaces[0]), [1, ahead, "d0"]) == [1]
    finally:
        await scripts.aclose()


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    """A redis-server of ours (it is stopped, emptied and killed here), with a password."""
    from cqrs.instances.base import Lookup
    from cqrs.instances.redis_server import find_redis_server

    executable = find_redis_server(Lookup())
    if executable is None:
        pytest.skip("redis-server is not installed: these tests need their own")
    server = PrivateRedis(
        executable, tmp_path / "redis", tmp_path / "redis.log", "127.0.0.1", free_port(),
        password="s3cret", persistent=False,
    )  # fmt: skip
    server.url = f"redis://:s3cret@127.0.0.1:{server.port}/2"
    server.start()
    try:
        yield server
    finally:
        if server.pid is not None:
            os.kill(server.pid, signal.SIGCONT)
        server.stop()


@pytest.fixture
async def on_own(
    own_redis: PrivateRedis,
) -> AsyncIterator[tuple[aioredis.Redis, PipelinedScripts, ProjectionKeys]]:
    client = redis_client(own_redis.url, max_connections=4)
    keys = ProjectionKeys(f"own-{uuid.uuid4().hex[:6]}", "products")
    await _project(client, keys, 3)
    scripts = PipelinedScripts(client, timeout_s=0.5)
    try:
        yield client, scripts, keys
    finally:
        await scripts.aclose()
        await client.aclose()


async def test_a_password_and_a_database_number_are_honoured(
    on_own: tuple[aioredis.Redis, PipelinedScripts, ProjectionKeys],
) -> None:
    client, scripts, keys = on_own
    get = client.register_script(redis_scripts.script(*redis_scripts.GET))
    await _until_pipelined(scripts, lambda: scripts.call(get, _get_keys(keys), [1, "", "d1"]))
    # The documents are in database 2 (the URL's): read there, after AUTH.
    assert await scripts.call(get, _get_keys(keys), [1, "", "d1"]) == [2, b"doc 1", CP.encode()]


async def test_an_unloaded_script_a_lost_and_a_stuck_server_end_as_redis_py_would(
    on_own: tuple[aioredis.Redis, PipelinedScripts, ProjectionKeys], own_redis: PrivateRedis
) -> None:
    client, scripts, keys = on_own
    get = client.register_script(redis_scripts.script(*redis_scripts.GET))

    async def read() -> object:
        return await scripts.call(get, _get_keys(keys), [1, "", "d2"])

    await _until_pipelined(scripts, read)
    answer = [2, b"doc 2", CP.encode()]

    # NOSCRIPT: redis-py loads it and answers; the next call is pipelined again.
    await client.script_flush()
    fell_back = scripts.fell_back
    assert await read() == answer
    assert scripts.fell_back == fell_back + 1
    pipelined = scripts.pipelined
    assert await read() == answer
    assert scripts.pipelined == pipelined + 1

    # A caller that gives up (a deadline) leaves its reply to nobody: the next caller gets
    # its own, not the one before it.
    assert own_redis.pid is not None
    os.kill(own_redis.pid, signal.SIGSTOP)
    given_up = asyncio.create_task(scripts.call(get, _get_keys(keys), [1, "", "d0"]))
    await asyncio.sleep(0.05)
    given_up.cancel()
    os.kill(own_redis.pid, signal.SIGCONT)
    assert await read() == answer

    # Stuck (SIGSTOP): the pipelined call gives up after its 0.5 s, and redis-py's after its
    # socket timeout, twice (its one retry: 4 s alone): an outage, never a hang.
    os.kill(own_redis.pid, signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(redis.exceptions.RedisError):
        await read()
    assert time.monotonic() - started < 6.0
    os.kill(own_redis.pid, signal.SIGCONT)
    await _until_pipelined_again(scripts, read, answer)

    # Killed: an outage at once; back when the server is (empty, so the data is put back).
    own_redis.kill()
    with pytest.raises(redis.exceptions.ConnectionError):
        await read()
    own_redis.start()
    await _project(client, keys, 3)
    await _until_pipelined_again(scripts, read, answer)


async def _until_pipelined_again(
    scripts: PipelinedScripts, read: Callable[[], Awaitable[object]], answer: object
) -> None:
    """Every call answers ``answer``, and within a few seconds one goes the pipelined way
    again (its connection reopened)."""
    pipelined = scripts.pipelined
    deadline = time.monotonic() + 5
    while scripts.pipelined == pipelined:
        assert time.monotonic() < deadline, "the pipelined connection never reopened"
        assert await read() == answer
        await asyncio.sleep(0.05)


def test_under_uvloop_as_the_servers_run() -> None:
    """The servers run uvloop, which may call ``connection_made`` after
    ``create_connection`` has returned: the first pipelined call must find its transport."""
    import uvloop

    async def scenario() -> None:
        prefix = unique_name("pipelined")
        client = redis_client(REDIS_URL, max_connections=4)
        keys = ProjectionKeys(prefix, "products")
        scripts = PipelinedScripts(client)
        try:
            await _project(client, keys, 3)
            get = client.register_script(redis_scripts.script(*redis_scripts.GET))
            await _until_pipelined_again(
                scripts, _reader(scripts, get, keys), [2, b"doc 0", CP.encode()]
            )
        finally:
            await scripts.aclose()
            await client.aclose()
            await delete_redis_prefix(prefix)

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()

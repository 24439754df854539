"""Run pytest with the tests' Redis on a Redis Cluster of our own.

``python -m tests.support.on_cluster [pytest args]`` starts three cluster-enabled
``redis-server`` (``redis-cli --cluster create``) in a scratch directory, runs pytest with
``CQRS_TEST_REDIS_URL`` set to the cluster's ``redis+cluster://`` URL, and stops them: the
same tests that run on one Redis, run on a cluster (``make test`` runs the integration
suite both ways). Exits with pytest's code; 0 with a message when ``redis-server`` or
``redis-cli`` is missing (the single-node pass has run the same tests).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cqrs.instances.cluster import private_redis_cluster


def main(args: list[str]) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="cqrs-on-cluster-"))
    try:
        with private_redis_cluster(scratch) as url:
            print(f"on a Redis Cluster: {url}", flush=True)
            env = {**os.environ, "CQRS_TEST_REDIS_URL": url}
            return subprocess.run([sys.executable, "-m", "pytest", *args], env=env).returncode
    except FileNotFoundError as exc:
        print(f"on a Redis Cluster: skipped, {exc}")
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

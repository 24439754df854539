"""How a long-running process drives its loop and its collector (common/runtime.py)."""

from __future__ import annotations

import json
import subprocess
import sys

from common import runtime


def test_a_projector_process_collects_cycles_rarely_and_never_scans_its_start_up() -> None:
    # In a child: the collector's settings are the whole process's.
    script = (
        "import gc, json, time\n"
        "from common import runtime\n"
        "before = gc.get_freeze_count()\n"
        "runtime.collect_less()\n"
        "counts = []\n"
        "gc.callbacks.append(lambda phase, info: phase == 'start' and counts.append(1))\n"
        "junk = [[i] for i in range(30_000)]\n"  # 30,000 containers: no young collection
        "print(json.dumps([before, gc.get_freeze_count(), gc.get_threshold(), len(counts)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    before, frozen, threshold, collections = json.loads(out)
    assert before == 0 and frozen > 10_000  # the modules' objects, out of every collection
    assert tuple(threshold) == runtime._COLLECT_EVERY
    assert collections == 0  # with 700, some 40 young collections

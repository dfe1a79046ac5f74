"""keep_freed_memory: a large block freed and allocated again is served from the
process's own memory (no page faults), unless the environment chose otherwise."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.peers import checkout_environment

_PROBE = r"""
import json, resource, sys
import numpy as np
from umadrive.process_memory import keep_freed_memory

kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = np.ones(2**24, dtype=np.float32)  # 64 MiB, above glibc's default mmap threshold
del block
before = faults()
block = np.ones(2**24, dtype=np.float32)
print(json.dumps({"kept": kept, "faults": faults() - before}))
"""


def _probe(mode: str, **environment: str) -> dict:
    env = {**checkout_environment(), **environment}
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_freed_block_is_reused_without_page_faults():
    plain, kept = _probe("plain"), _probe("keep")
    assert plain["faults"] > 100  # glibc unmapped the block: every page faults again
    assert kept == {"kept": True, "faults": 0}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_thresholds_set_in_the_environment_are_left_alone():
    assert _probe("keep", MALLOC_MMAP_THRESHOLD_="65536")["kept"] is False

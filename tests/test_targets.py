"""The README's promise about the targets table: every run of a conformance test
carries markers for its target, so ``-m "not cluster"`` or ``-m "valkey and not trio"``
selects by server, topology, client library and loop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _collected(*options: str) -> list[str]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "tests/test_conformance.py",
            *options,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    return [line for line in done.stdout.splitlines() if "::" in line]


def test_markers_select_targets() -> None:
    everything = _collected()
    not_cluster = _collected("-m", "not cluster")
    valkey_asyncio = _collected("-m", "valkey and not trio")
    coredis = _collected("-m", "coredis")
    assert len(everything) > len(not_cluster) > 0
    assert not any("/cluster/" in test for test in not_cluster)
    assert any("/cluster/" in test for test in everything)
    assert valkey_asyncio
    assert all("valkey-server/" in test and "-trio" not in test for test in valkey_asyncio)
    assert coredis
    assert all("/coredis-" in test or test.endswith("/coredis]") for test in coredis)

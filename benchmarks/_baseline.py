"""Another version of chat-state, measured in the same run: ``--baseline REF``.

A before/after comparison is only worth its ratios when both sides run side by side, on
the same servers, in one run, and in the same conditions. The runner unpacks chat-state
(``chat_state/`` and ``backends/``) as it was at the git revision ``REF`` into a
temporary folder, and measures the chosen subjects twice, each time in a fresh child
process whose ``sys.path`` starts with a folder holding this tree's ``benchmarks``
package and one chat-state: this tree's (``@this``) or the baseline's (``@base``). The
same workloads and measuring loop, the other chat-state; the cells come back as JSON.
Both sides run in children because a cell measured in the runner's own process can
differ from one measured in a fresh process by more than the change under test.

``python -m benchmarks._baseline SUBJECT URL PLAN WARMUP DURATION CHAT_STATE_DIR`` is
the child.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._measure import CellResult, Timing
from ._subjects import SUBJECTS, Subject, run_async_subject, run_sync_subject
from ._workloads import SUBSCRIPTIONS, member

__all__ = ["BASE", "BASELINE_OF", "THIS", "Baseline", "baseline_subjects"]

ROOT = Path(__file__).resolve().parent.parent
#: The subjects measured on both trees (→ their column headers' stem).
BASELINE_OF = {"async-standalone": "AS", "async-uvloop": "ASu", "sync-standalone": "S"}
#: The suffixes of their ids: this tree's, the baseline's.
THIS, BASE = "@this", "@base"
CHILD_SLACK_S = 120.0


def baseline_subjects(ref: str, chosen: set[str]) -> list[Subject]:
    """The subjects of :data:`BASELINE_OF` that are ``chosen``, once per tree."""
    by_id = {s.id: s for s in SUBJECTS}
    return [
        dataclasses.replace(
            by_id[name],
            id=name + suffix,
            short=f"{stem} {suffix[1:]}",
            label=f"{by_id[name].label}, in a child process (chat-state {where})",
        )
        for name, stem in BASELINE_OF.items()
        if name in chosen
        for suffix, where in ((THIS, "of this tree"), (BASE, f"at {ref}"))
    ]


@dataclass
class Baseline:
    """chat-state at ``ref`` and this tree's, each in a folder a child imports first."""

    ref: str
    commit: str
    top: Path

    @classmethod
    def unpack(cls, ref: str) -> Baseline:
        """Unpack ``ref``'s chat_state and backends (``git archive``); a site per tree."""
        commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}").decode().strip()
        archive = _git("archive", commit, "chat_state", "backends")
        top = Path(tempfile.mkdtemp(prefix="chat-state-baseline-"))
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+
                tar.extractall(top / "src", filter="data")
            else:  # our own git tree: nothing to filter
                tar.extractall(top / "src")
        for suffix, source in ((THIS, ROOT), (BASE, top / "src")):
            site = top / suffix[1:]
            site.mkdir()
            (site / "chat_state").symlink_to(source / "chat_state")
            for name in ("redis", "valkey", "coredis"):
                package = source / "backends" / name / f"chat_state_{name}"
                if package.is_dir():
                    (site / f"chat_state_{name}").symlink_to(package)
            (site / "benchmarks").symlink_to(ROOT / "benchmarks")
        return cls(ref, commit, top)

    def remove(self) -> None:
        """Delete the unpacked trees."""
        shutil.rmtree(self.top, ignore_errors=True)

    def run(
        self, subject: Subject, url: str, plan: Sequence[tuple[str, int]], timing: Timing
    ) -> list[CellResult]:
        """Measure ``subject`` (an ``@this`` or ``@base`` one) in a child process."""
        current, _, tree = subject.id.partition("@")
        site = self.top / tree
        command = [
            sys.executable,
            "-m",
            "benchmarks._baseline",
            current,
            url,
            json.dumps(plan),
            str(timing.warmup),
            str(timing.duration),
            str((site / "chat_state").resolve()),
        ]
        budget = CHILD_SLACK_S + len(plan) * (timing.warmup + timing.duration) * 2
        done = subprocess.run(
            command, cwd=site, capture_output=True, text=True, timeout=budget, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"child failed ({done.returncode}): {done.stderr[-1500:]}")
        cells = [CellResult(**cell) for cell in json.loads(done.stdout.splitlines()[-1])]
        for cell in cells:
            cell.subject = subject.id
        return cells


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=True).stdout


def _child(argv: Sequence[str]) -> None:
    subject_id, url, plan_json, warmup, duration, expected = argv
    import chat_state  # noqa: PLC0415  (the site's, first on sys.path)

    here = Path(chat_state.__file__).resolve().parent
    if here != Path(expected):
        raise SystemExit(f"the child imported {here}, not {expected}")
    subject = {s.id: s for s in SUBJECTS}[subject_id]
    plan = [(w, int(c)) for w, c in json.loads(plan_json)]
    timing = Timing(float(warmup), float(duration))
    members = [member(n) for n in range(SUBSCRIPTIONS)]
    run = run_async_subject if subject.kind == "async" else run_sync_subject
    cells = run(subject, url, plan, timing, members)
    print(json.dumps([cell.as_json() for cell in cells]))


if __name__ == "__main__":
    _child(sys.argv[1:])

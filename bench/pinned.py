"""Run a measurement in a fresh Python process on one CPU with one thread everywhere.

A 1,769 MB Lambda has one vCPU, so the memory and import-time benchmarks measure in a new
process (nothing imported or allocated by the parent counts) pinned to one CPU, with the
thread pools of onnxruntime's OpenMP, BLAS and numba held to one thread. The child prints
one JSON object as its last line of output. Standard library only: the children import it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ONE_THREAD = {
    name: "1"
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
}


class ChildFailed(RuntimeError):
    """The child exited non-zero or printed no JSON; the message ends with its stderr."""


def one_cpu() -> int:
    """The CPU the children run on: the lowest this process may use."""
    return min(os.sched_getaffinity(0))


def run_pinned(
    code: str, *, extra_env: Mapping[str, str] | None = None, timeout: float = 3600.0
) -> dict[str, Any]:
    """``python -c code`` in a fresh process that first pins itself to one CPU; the JSON
    object it printed last. (Pinning in the child: a ``preexec_fn`` is unsafe in a parent
    that runs threads, as onnxruntime and torch do.)"""
    env = {
        **os.environ,
        **ONE_THREAD,
        **(extra_env or {}),
        "PYTHONPATH": os.pathsep.join([str(REPO / "lambda_app"), str(REPO)]),
    }
    pin = f"import os\nos.sched_setaffinity(0, {{{one_cpu()}}})\n"
    done = subprocess.run(
        [sys.executable, "-c", pin + code],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise ChildFailed(f"the child exited {done.returncode}:\n{done.stderr[-3000:]}")
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError as error:
        raise ChildFailed(f"the child's last line is not JSON: {lines[-1][:200]!r}") from error
    return result


def status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS, VmHWM, ...) in MiB, as Lambda counts MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0]) / 1024  # the kernel reports kB
    raise KeyError(f"/proc/self/status has no {field}")

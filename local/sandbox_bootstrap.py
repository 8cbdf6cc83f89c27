"""The child side of ``local.lambda_sandbox``: what Lambda's Python runtime does, minus the API.

Run as ``/var/lang/bin/python3.12 -S /var/sandbox/sandbox_bootstrap.py`` inside the sandbox
(standard library only: nothing of this repository is importable there). It reads
``/var/sandbox/job.json``, imports the handler the way the runtime does (init), invokes it
once per event with a fresh context and per-invocation trace id, optionally imports a list
of modules, and prints one result line (``RESULT_PREFIX`` + JSON) on stdout, after whatever
the function itself logged there.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

RESULT_PREFIX = "@@lambda-sandbox-result "
JOB_FILE = Path("/var/sandbox/job.json")


class Context:
    """The attributes and method of Lambda's Python context object."""

    def __init__(self, function: dict[str, Any], timeout_s: float) -> None:
        self.function_name: str = function["name"]
        self.function_version = "$LATEST"
        self.invoked_function_arn: str = function["arn"]
        self.memory_limit_in_mb: int = function["memory_mb"]
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name: str = function["log_group"]
        self.log_stream_name: str = function["log_stream"]
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _error(exc: BaseException) -> dict[str, Any]:
    """Lambda's shape for an unhandled error (errorType, errorMessage, stackTrace)."""
    return {
        "errorType": type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_exception(exc),
    }


def _trace_id() -> str:
    epoch = f"{int(time.time()):08x}"
    return f"Root=1-{epoch}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"


def _layer_packages() -> list[str]:
    """Top-level packages the process loaded from the layers (/opt)."""
    names = set()
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None) or ""
        if origin.startswith("/opt/"):
            names.add(name.split(".")[0])
    return sorted(names)


def _tmp_entries(root: Path = Path("/tmp")) -> list[str]:
    return sorted(str(p) for p in root.rglob("*"))


def _write_refusals(directories: list[str]) -> dict[str, str | None]:
    """Per directory: the error that refused creating a file there (None: it was created)."""
    refusals: dict[str, str | None] = {}
    for directory in directories:
        probe = Path(directory) / f".sandbox-write-probe-{uuid.uuid4().hex}"
        try:
            probe.touch(exist_ok=False)
        except OSError as exc:
            refusals[directory] = f"{type(exc).__name__}: {exc.strerror}"
        else:
            probe.unlink()
            refusals[directory] = None
    return refusals


def _origins(names: list[str]) -> dict[str, str | None]:
    """Where each (already imported or importable) module was loaded from."""
    origins: dict[str, str | None] = {}
    for name in names:
        try:
            origins[name] = getattr(importlib.import_module(name), "__file__", None)
        except Exception as exc:
            origins[name] = f"not importable: {type(exc).__name__}: {exc}"
    return origins


def main() -> int:
    started_wall = time.time()
    job: dict[str, Any] = json.loads(JOB_FILE.read_text(encoding="utf-8"))
    report: dict[str, Any] = {"started_wall": started_wall, "invocations": []}
    module_name, _, function_name = job["handler"].rpartition(".")

    init_started = time.perf_counter()
    try:
        for name in job["preload"]:
            importlib.import_module(name)
        report["preload_s"] = time.perf_counter() - init_started
        handler_started = time.perf_counter()
        handler = getattr(importlib.import_module(module_name), function_name)
        report["handler_init_s"] = time.perf_counter() - handler_started
    except Exception as exc:  # Lambda reports Runtime.ImportModuleError and stops here
        report["init_error"] = _error(exc)
        report["layer_packages"] = _layer_packages()
        print(RESULT_PREFIX + json.dumps(report), flush=True)
        return 0

    for invocation in job["invocations"]:
        os.environ["_X_AMZN_TRACE_ID"] = _trace_id()
        context = Context(job["function"], invocation.get("timeout_s", job["timeout_s"]))
        entry: dict[str, Any] = {"name": invocation["name"]}
        invoked = time.perf_counter()
        try:
            entry["response"] = handler(invocation["event"], context)
        except Exception as exc:  # the invocation fails; the process lives on, as in Lambda
            entry["error"] = _error(exc)
        entry["seconds"] = time.perf_counter() - invoked
        report["invocations"].append(entry)
        sys.stdout.flush()

    failed_imports = {}
    for name in job["probe_modules"]:
        try:
            importlib.import_module(name)
        except Exception as exc:
            failed_imports[name] = f"{type(exc).__name__}: {exc}"
    report["failed_imports"] = failed_imports
    report["layer_packages"] = _layer_packages()
    report["tmp_entries"] = _tmp_entries()
    report["uid"] = os.getuid()
    report["sys_path"] = sys.path
    report["origins"] = _origins(job["origins"])
    report["write_refusals"] = _write_refusals(job["write_probes"])
    tmp = os.statvfs(tempfile.gettempdir())
    report["tmp"] = {"dir": tempfile.gettempdir(), "bytes": tmp.f_blocks * tmp.f_frsize}
    print(RESULT_PREFIX + json.dumps(report, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

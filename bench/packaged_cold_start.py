"""Benchmark: cold start of the deployable artifact, per model bundle.

The `sam build` output (x86_64) runs in a fresh Lambda-like sandbox process
(local/lambda_sandbox.py: Python 3.12 with -S, read-only /var/task and /opt, tmpfs /tmp,
uid 65534, one CPU for MemorySize 1769) with its model layer replaced by each bundle:
the demo bundle, and QuartzNet15x5-shaped fp32 and int8 bundles (random weights: load time
does not depend on them). Phases: process start, layer imports, handler import (which loads
the model at init, as on Lambda), GET /health, the first POST /transcribe of a 5.4 s clip.
Median of ``--repeats`` fresh processes; OS file cache warm, as on a host that has run the
function before.

    .venv/bin/python bench/packaged_cold_start.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "lambda_app"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench.models import shape_bundle  # noqa: E402
from local import EVENTS_DIR  # noqa: E402
from local import lambda_sandbox as sandbox  # noqa: E402
from local.events import Fill, fill_event, load_event  # noqa: E402
from tests.sam_artifact import built, python312  # noqa: E402

CLIP = REPO.parent / "shared" / "data" / "speech" / "ru" / "golos_03.wav"
PHASES = ("process_start_s", "imports_s", "handler_init_s", "health_s", "first_clip_s")


def one_cold_start(function: sandbox.BuiltFunction, bundle: Path, work: Path) -> dict[str, Any]:
    staged = sandbox.stage(function, work / "stage")
    model = staged.opt / "model"
    shutil.rmtree(model)
    shutil.copytree(bundle, model)
    for path in [model, *model.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    invocations = [
        sandbox.Invocation("health", load_event(EVENTS_DIR / "http_api_health.json")),
        sandbox.Invocation(
            "clip",
            fill_event(
                load_event(EVENTS_DIR / "http_api_transcribe_raw.json"), Fill(CLIP.read_bytes())
            ),
        ),
    ]
    run = sandbox.run(staged, invocations, python=python312())
    if run.report is None or run.init_error is not None:
        raise SystemExit(f"the packaged function failed: {run.stderr[-2000:]}")
    seconds = {entry["name"]: entry["seconds"] for entry in run.report["invocations"]}
    statuses = [entry["response"]["statusCode"] for entry in run.report["invocations"]]
    if statuses != [200, 200]:
        raise SystemExit(f"unexpected responses {statuses}: {run.stdout[-2000:]}")
    assert run.spawn_to_bootstrap_s is not None
    phases = {
        "process_start_s": run.spawn_to_bootstrap_s,
        "imports_s": run.report["preload_s"],
        "handler_init_s": run.report["handler_init_s"],
        "health_s": seconds["health"],
        "first_clip_s": seconds["clip"],
    }
    return {**phases, "total_s": sum(phases.values())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "packaged_cold_start_bundles.json"
    )
    args = parser.parse_args()
    function = sandbox.load_built_function(built("x86_64").build_dir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        work = Path(tmp)
        bundles = {
            "demo (int8, 0.74 MB)": REPO / "demo" / "bundle",
            "QuartzNet15x5 shape, fp32": shape_bundle("quartznet15x5", "fp32"),
            "QuartzNet15x5 shape, int8": shape_bundle("quartznet15x5", "int8"),
        }
        for name, bundle in bundles.items():
            runs = [one_cold_start(function, bundle, work) for _ in range(args.repeats)]
            size_mb = sum(p.stat().st_size for p in bundle.iterdir()) / 1e6
            row = {
                "bundle": name,
                "bundle_mb": round(size_mb, 2),
                **{k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]},
            }
            rows.append(row)
            print(json.dumps(row))
    results = {
        "what": __doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else "",
        "measured": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, sandbox pinned to 1 CPU",
        "repeats": args.repeats,
        "rows": rows,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(
        "\n| bundle | MB | process s | imports s | handler init (model load) s | health s "
        "| first 5.4 s clip s | total s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        cells = [row["bundle"], row["bundle_mb"], *(row[k] for k in (*PHASES, "total_s"))]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()

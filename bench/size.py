"""Deployable size: the `sam build` output per part and architecture, and where each model
bundle can live (next to the runtime in the zip's model layer, or in S3 / a container image).

The build is ``tests.sam_artifact.built``'s: the repository staged with the demo bundle in
the model layer and the audio-only ffmpeg, built once per architecture and process (a test
session that already built it shares the build). Quick mode builds x86_64 only and measures
the demo bundles; without the SAM CLI it skips the build and says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from asr.bundle import bundle_files
from asr.config import BundleConfig

from bench.common import BenchOptions, bench_main, markdown_table
from bench.models import FAMILIES, FAMILY_INFO, PRECISIONS, Family, Precision, bundle_for
from local.lambda_sandbox import load_built_function
from tests.sam_artifact import built

NAME = "size"
TITLE = "Deployable size"
LAMBDA_UNZIPPED_LIMIT = 262_144_000  # bytes: function code + all its layers, unzipped
ARCHITECTURES = ("x86_64", "arm64")
PARTS = ("function", "RuntimeDepsLayer", "FfmpegLayer", "ModelLayer")
RUNTIME_PARTS = PARTS[:3]  # everything but the model
ZIP = "model layer (zip)"
ELSEWHERE = "S3 (`ModelS3Uri`) or a container image"


def tree_bytes(path: Path) -> int:
    """Unzipped size: every file's bytes (symlinks as links), directories not counted."""
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir())


def largest_children(path: Path, count: int = 6) -> list[tuple[str, int]]:
    """The ``count`` biggest entries directly under ``path``, biggest first."""
    sizes = [
        (child.name, tree_bytes(child) if child.is_dir() else child.lstat().st_size)
        for child in path.iterdir()
    ]
    return sorted(sizes, key=lambda item: -item[1])[:count]


def artifact_size(architecture: str) -> dict[str, Any]:
    """`sam build` for ``architecture``: unzipped bytes per part, and the runtime layer's
    biggest packages."""
    artifact = built(architecture)
    function = load_built_function(artifact.build_dir, parameters={"Architecture": architecture})
    parts = {"function": function.code_dir, **function.layer_dirs}
    sizes = {name: tree_bytes(parts[name]) for name in PARTS}
    return {
        "parts_bytes": sizes,
        "total_bytes": sum(sizes.values()),
        "runtime_bytes": sum(sizes[name] for name in RUNTIME_PARTS),
        "sam_build_s": round(artifact.seconds, 1),
        "runtime_layer_largest": largest_children(parts["RuntimeDepsLayer"] / "python"),
    }


def staged_bundle_bytes(bundle: Path) -> int:
    """What the model layer would hold: the bundle's files and its checksum list."""
    config = BundleConfig.from_dict(json.loads((bundle / "config.json").read_text("utf-8")))
    names = [*bundle_files(config), config.checksums_file]
    return sum((bundle / name).stat().st_size for name in names)


def placement(bundle_bytes: int, runtime_bytes: int | None) -> str | None:
    """Where a bundle goes: the zip when it fits beside the runtime parts under Lambda's
    unzipped limit; None when the runtime's size is unknown (no build)."""
    if runtime_bytes is None:
        return None
    return ZIP if runtime_bytes + bundle_bytes <= LAMBDA_UNZIPPED_LIMIT else ELSEWHERE


def bundle_cases(options: BenchOptions) -> list[tuple[Family, Precision]]:
    """Quick mode: the demo bundles (int8 only: both precisions would name the same one)."""
    precisions: tuple[Precision, ...] = ("int8",) if options.quick else PRECISIONS
    return [(family, precision) for family in FAMILIES for precision in precisions]


def measure(options: BenchOptions) -> dict[str, Any]:
    architectures = ARCHITECTURES[:1] if options.quick else ARCHITECTURES
    artifacts: dict[str, Any] = {}
    note = ""
    try:
        for architecture in architectures:
            artifacts[architecture] = artifact_size(architecture)
            print(architecture, artifacts[architecture]["parts_bytes"], flush=True)
    except pytest.skip.Exception as skipped:  # no SAM CLI here (CI fails instead)
        artifacts, note = {}, f"sam build skipped: {skipped}"
    runtime = max((a["runtime_bytes"] for a in artifacts.values()), default=None)
    bundles = []
    for family, precision in bundle_cases(options):
        bundle = bundle_for(family, precision, options)
        staged = staged_bundle_bytes(bundle)
        bundles.append(
            {
                "family": family,
                "model": f"demo ({bundle.name})" if options.quick else FAMILY_INFO[family].label,
                "precision": precision,
                "model_bytes": (bundle / "model.onnx").stat().st_size,
                "bundle_bytes": staged,
                "placement": placement(staged, runtime),
            }
        )
        print(bundles[-1], flush=True)
    return {
        "quick": options.quick,
        "lambda_limit_bytes": LAMBDA_UNZIPPED_LIMIT,
        "architectures": artifacts,
        "runtime_bytes_max": runtime,
        "sam_note": note,
        "bundles": bundles,
    }


def mb(size: int) -> str:
    return f"{size / 1e6:.1f}"


def markdown(result: dict[str, Any]) -> str:
    limit = result["lambda_limit_bytes"]
    sections = []
    artifacts: dict[str, Any] = result["architectures"]
    if artifacts:
        names = list(artifacts)
        rows = [[name, *(mb(artifacts[a]["parts_bytes"][name]) for a in names)] for name in PARTS]
        rows[-1][0] = "ModelLayer (demo bundle)"
        rows.append(["**total**", *(f"**{mb(artifacts[a]['total_bytes'])}**" for a in names)])
        rows.append(
            ["room for a model (limit − function − runtime − ffmpeg)"]
            + [mb(limit - artifacts[a]["runtime_bytes"]) for a in names]
        )
        sections.append(markdown_table(["part (unzipped MB)", *names], rows))
        first = names[0]
        largest = artifacts[first]["runtime_layer_largest"]
        sections.append(
            f"Largest entries of the runtime layer ({first}): "
            + ", ".join(f"`{name}` {mb(size)} MB" for name, size in largest)
            + "."
        )
    else:
        sections.append(f"*No `sam build` measured: {result['sam_note']}*")
    runtime = result["runtime_bytes_max"]
    headers = ["model (shape)", "precision", "model.onnx MB", "bundle MB"]
    headers += ["fits beside the runtime?", "where it goes"]
    rows = [
        [
            row["model"],
            row["precision"],
            mb(row["model_bytes"]),
            mb(row["bundle_bytes"]),
            "—"
            if runtime is None
            else f"{'yes' if row['placement'] == ZIP else 'no'} "
            f"({mb(runtime + row['bundle_bytes'])} of {mb(limit)} MB)",
            row["placement"] or "unknown (no build)",
        ]
        for row in result["bundles"]
    ]
    sections.append(markdown_table(headers, rows))
    sections.append(
        "Unzipped bytes of the `sam build` output (MB = 10⁶ bytes), per part: the function "
        "code (handler, runtime package, vendored Silero VAD), the pruned runtime layer "
        "(numpy, onnxruntime, soundfile + libsndfile, Powertools, X-Ray SDK; compiled for "
        "Python 3.12), the audio-only static ffmpeg, and the model layer holding the demo "
        "bundle. Lambda caps function + layers at "
        f'{limit:,} bytes unzipped (AWS\'s "250 MB"). A bundle fits in the zip when it '
        "fits in what the largest architecture leaves; otherwise it loads from S3 at the "
        "first request (`ModelS3Uri`; /tmp must hold it, `EphemeralStorageMB`) or ships in a "
        "container image (up to 10 GB). Bundle = the files the model layer would hold "
        "(config, model, tokens, verification report, SHA256SUMS)."
    )
    return "\n\n".join(sections)


if __name__ == "__main__":
    bench_main(NAME, measure, markdown)

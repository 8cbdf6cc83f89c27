"""template.yaml: SAM lint, a real `sam build` per architecture, and the deployable size."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from asr.checksum_stamp import STAMP_FILE

from local.lambda_sandbox import load_built_function
from scripts.stage_layers import StagingError, elf_architecture, stage_model
from tests.sam_artifact import built, python312, sam_cli

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template.yaml"
RUNTIME_REQUIREMENTS = REPO / "layers" / "runtime" / "requirements.txt"
PRUNE_SCRIPT = REPO / "layers" / "runtime" / "prune_layer.py"
LAMBDA_UNZIPPED_LIMIT = 262_144_000  # function + all layers
PACKAGE_TARGET_BYTES = 200_000_000  # this project's budget, with the QuartzNet demo bundle
PACKAGE_SIZE_RESULTS = REPO / "bench" / "results" / "package_size.json"


# --- the runtime layer (template.yaml's security posture: tests/test_template.py)


def _pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file, names normalised (PEP 503)."""
    pins = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        name, sep, version = raw.split("#", 1)[0].strip().partition("==")
        if sep:
            pins[re.sub(r"[-_.]+", "-", name.strip()).lower()] = version.strip()
    return pins


def test_runtime_layer_requirements_are_pinned_to_the_tested_versions() -> None:
    layer = _pins(RUNTIME_REQUIREMENTS)
    app = _pins(REPO / "requirements.txt")
    # What lambda_app imports: the same pins as requirements.txt (boto3 is the runtime's).
    assert set(app) == {
        "numpy", "onnxruntime", "soundfile", "aws-lambda-powertools", "aws-xray-sdk"
    }  # fmt: skip
    assert {name: layer.get(name) for name in app} == app
    # The layer installs with --no-deps, so it pins the whole closure, at the tested versions.
    for name, version in layer.items():
        assert version == metadata.version(name), f"{name}: layer pins {version}"
    assert not set(layer) & {"boto3", "botocore", "s3transfer", "sympy", "protobuf"}


def _prune_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prune_layer", PRUNE_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_prune_removes_what_each_rule_names_and_refuses_a_rule_that_matches_nothing(
    tmp_path: Path,
) -> None:
    prune_layer = _prune_module()
    rules = (
        prune_layer.Rule("**/tests", "test suites"),
        prune_layer.Rule("pkg/*.pyi", "stubs"),
    )
    for name in ("pkg/tests/test_a.py", "pkg/sub/tests/test_b.py", "pkg/a.pyi", "pkg/a.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n", encoding="utf-8")
    removed = prune_layer.prune(tmp_path, rules)
    assert sorted(str(r.path.relative_to(tmp_path)) for r in removed) == [
        "pkg/a.pyi", "pkg/sub/tests", "pkg/tests"
    ]  # fmt: skip
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "pkg", "pkg/a.py", "pkg/sub"
    ]  # fmt: skip
    with pytest.raises(prune_layer.LayerError, match=r"pkg/\*\.pyi"):
        prune_layer.prune(tmp_path, rules)


# --- scripts/stage_layers.py


def test_stage_model_copies_once_and_refuses_a_corrupt_bundle(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    target = tmp_path / "layers" / "model" / "model"
    assert stage_model(tiny_bundle, target).startswith("copied")
    assert stage_model(tiny_bundle, target).startswith("unchanged")
    # Every bundle file; the local stamp of its checksums stays behind (a zip loses mtimes).
    bundle_files = sorted(p.name for p in tiny_bundle.iterdir() if p.name != STAMP_FILE)
    assert sorted(p.name for p in target.iterdir()) == bundle_files
    assert target.stat().st_mode & 0o777 == 0o755  # readable by Lambda's sandbox user

    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_bundle, corrupt)
    (corrupt / "tokens.txt").write_text("x\n", encoding="utf-8")
    with pytest.raises(StagingError, match="sha256"):
        stage_model(corrupt, target)
    assert stage_model(tiny_bundle, target).startswith("unchanged")  # the old copy survived


@pytest.mark.parametrize(("machine", "expected"), [(0x3E, "x86_64"), (0xB7, "arm64"), (3, None)])
def test_elf_architecture(tmp_path: Path, machine: int, expected: str | None) -> None:
    binary = tmp_path / "ffmpeg"
    binary.write_bytes(b"\x7fELF\x02\x01" + bytes(12) + machine.to_bytes(2, "little") + bytes(8))
    assert elf_architecture(binary) == expected
    binary.write_bytes(b"#!/bin/sh\n")
    assert elf_architecture(binary) is None


# --- the SAM CLI


def _run_sam(args: list[str]) -> subprocess.CompletedProcess[str]:
    # The linter resolves the python3.12 runtime; put a real one first on PATH.
    path = f"{python312().parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "PATH": path}
    return subprocess.run(
        [sam_cli(), *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )


def test_sam_validate_lint() -> None:
    result = _run_sam(["validate", "--lint", "--template", str(TEMPLATE), "--region", "us-east-1"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


def _tree_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir())


def _pyc_flags(path: Path) -> int:
    """PEP 552 flags of a .pyc: 0 timestamp-checked, 1 unchecked hash, 3 checked hash."""
    return int.from_bytes(path.read_bytes()[4:8], "little")


def _record_package_size(architecture: str, entry: dict[str, Any]) -> None:
    """bench/results/package_size.json, one entry per architecture (the README cites it)."""
    results: dict[str, Any] = {}
    if PACKAGE_SIZE_RESULTS.is_file():
        results = json.loads(PACKAGE_SIZE_RESULTS.read_text(encoding="utf-8"))
    results.update(
        {
            "what": "unzipped bytes of the `sam build` output per part (tests/test_sam.py)",
            "lambda_limit_bytes": LAMBDA_UNZIPPED_LIMIT,
            "target_bytes": PACKAGE_TARGET_BYTES,
        }
    )
    results.setdefault("architectures", {})[architecture] = entry
    PACKAGE_SIZE_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    PACKAGE_SIZE_RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["x86_64", "arm64"])
def test_sam_build_fits_lambda_with_the_demo_model(architecture: str) -> None:
    artifact = built(architecture)
    function = load_built_function(artifact.build_dir, parameters={"Architecture": architecture})
    assert function.architecture == architecture
    assert list(function.layer_dirs) == ["RuntimeDepsLayer", "FfmpegLayer", "ModelLayer"]

    code = function.code_dir
    assert (code / "handler.py").is_file()
    assert (code / "asr" / "__init__.py").is_file()
    assert (code / "asr_service" / "__init__.py").is_file()
    assert (code / "asr" / "vad" / "silero_vad.onnx").is_file()  # the VAD ships in the zip
    shipped = {p.name for p in code.rglob("*")}
    assert not shipped & {"tests", "export", "torch", "__pycache__", "conftest.py"}, shipped

    runtime = function.layer_dirs["RuntimeDepsLayer"] / "python"
    present = {p.name for p in runtime.iterdir()}
    assert {"numpy", "onnxruntime", "soundfile.py", "aws_lambda_powertools"} <= present
    assert {"aws_xray_sdk", "_soundfile_data", "_cffi_backend"} <= {
        p.split(".")[0] for p in present
    }
    assert not present & {"boto3", "botocore", "torch", "sympy", "google", "flatbuffers"}
    # Built for the runtime's platform: every binary matches the architecture.
    binaries = [p for p in runtime.rglob("*.so*") if p.is_file()]
    ffmpeg = function.layer_dirs["FfmpegLayer"] / "bin" / "ffmpeg"
    assert binaries
    assert {elf_architecture(p) for p in [*binaries, ffmpeg]} == {architecture}
    # Pruned: nothing the function never imports (layers/runtime/prune_layer.py) ...
    leftovers = [
        str(p.relative_to(runtime))
        for pattern in ("**/tests", "**/*.pyi", "**/*.h", "onnxruntime/tools", "numpy/f2py",
                        "onnxruntime/quantization", "onnxruntime/capi/libonnxruntime.so*")
        for p in runtime.glob(pattern)
    ]  # fmt: skip
    assert leftovers == []
    # ... and compiled for python3.12 so that a read-only /opt costs no compile at cold start.
    pyc = runtime / "numpy" / "__pycache__" / "__init__.cpython-312.pyc"
    assert pyc.is_file() and _pyc_flags(pyc) == 1
    assert (function.layer_dirs["ModelLayer"] / "model" / "SHA256SUMS").is_file()

    parts = {"function": code, **function.layer_dirs}
    sizes = {name: _tree_bytes(path) for name, path in parts.items()}
    total = sum(sizes.values())
    _record_package_size(
        architecture,
        {
            "measured": time.strftime("%Y-%m-%d"),
            "model": "demo-quartznet-ru (demo/bundle)",
            "ffmpeg_bytes": ffmpeg.stat().st_size,
            "parts_bytes": sizes,
            "total_bytes": total,
            "sam_build_seconds": round(artifact.seconds, 1),
        },
    )
    print(f"{architecture}: sam build {artifact.seconds:.1f} s; unzipped bytes {sizes}")
    assert total <= LAMBDA_UNZIPPED_LIMIT, sizes
    assert total <= PACKAGE_TARGET_BYTES, sizes

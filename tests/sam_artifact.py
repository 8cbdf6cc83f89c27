"""The deployable artifact: `sam build` of this repository, once per architecture and session.

The build runs on a staged copy of the project (template.yaml, lambda_app/, layers/) so that
what other work does to the shared layers/ directory meanwhile cannot change it: the model
layer holds the demo QuartzNet bundle (staged by scripts/stage_layers.py, as before a
deploy) and the ffmpeg layer scripts/build_ffmpeg.sh's static ffmpeg for the architecture.
The copies live in a temporary directory removed at exit; the test modules share them
through ``built``.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.stage_layers import elf_architecture, stage_model

REPO = Path(__file__).resolve().parents[1]
DEMO_BUNDLE = REPO / "demo" / "bundle"
FFMPEG_LAYER = REPO / "layers" / "ffmpeg"
FFMPEG_BUILD = REPO / "scripts" / "build_ffmpeg.sh"
LAYER_SOURCES = ("lambda_app", "layers/runtime")
COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", "python")


@dataclass(frozen=True)
class BuiltArtifact:
    architecture: str
    project: Path  # the staged copy of the repository that was built
    build_dir: Path  # its .aws-sam/build
    seconds: float  # wall time of `sam build`
    log: str


def sam_cli() -> str:
    candidates = [REPO / ".tools" / "sam" / "bin" / "sam", Path(sys.executable).with_name("sam")]
    installed = [str(path) for path in candidates if path.is_file()]
    found = installed[0] if installed else shutil.which("sam")
    if found is None and os.environ.get("CI"):
        pytest.fail("CI must run the SAM checks: scripts/setup.sh dev installs .tools/sam")
    if found is None:
        pytest.skip("the AWS SAM CLI is not installed (pip install aws-sam-cli)")
    return found


def python312() -> Path:
    """A real python3.12: `sam build` and the layer's Makefile compile for the runtime."""
    candidates = sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"), reverse=True)
    on_path = shutil.which("python3.12")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        probe = subprocess.run(
            [str(candidate), "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 12)":
            return candidate
    pytest.fail("sam build needs python3.12 (the function's runtime) and none was found")


def ffmpeg_binary(architecture: str) -> Path:
    """The layer's ffmpeg for ``architecture``: the audio-only static build of
    scripts/build_ffmpeg.sh (what scripts/stage_layers.py puts in the layer)."""
    where = subprocess.run(
        ["bash", str(FFMPEG_BUILD), architecture, "--path"],
        capture_output=True,
        text=True,
        check=True,
    )
    path = Path(where.stdout.strip())
    if not path.is_file():
        pytest.fail(
            f"no {architecture} ffmpeg at {path}: run scripts/build_ffmpeg.sh {architecture}"
        )
    assert elf_architecture(path) == architecture, path
    return path


@functools.cache
def _workspace() -> Path:
    root = Path(tempfile.mkdtemp(prefix="sam-artifact-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def stage_project(architecture: str, target: Path) -> None:
    """Copy what `sam build` reads, with the model and ffmpeg layers staged."""
    target.mkdir(parents=True)
    shutil.copy2(REPO / "template.yaml", target / "template.yaml")
    for name in LAYER_SOURCES:
        shutil.copytree(REPO / name, target / name, ignore=COPY_IGNORE)
    ffmpeg = ffmpeg_binary(architecture)
    layer = target / "layers" / "ffmpeg"
    shutil.copytree(FFMPEG_LAYER, layer, ignore=shutil.ignore_patterns("ffmpeg", "__pycache__"))
    (layer / "bin").mkdir(mode=0o755, exist_ok=True)
    shutil.copyfile(ffmpeg, layer / "bin" / "ffmpeg")
    (layer / "bin" / "ffmpeg").chmod(0o755)
    stage_model(DEMO_BUNDLE, target / "layers" / "model" / "model")


@functools.cache
def built(architecture: str) -> BuiltArtifact:
    """`sam build` for ``architecture`` (x86_64 or arm64), as `sam deploy` would ship it."""
    project = _workspace() / architecture
    stage_project(architecture, project)
    build_dir = project / ".aws-sam" / "build"
    env = {
        **os.environ,
        "SAM_CLI_TELEMETRY": "0",
        "PATH": f"{python312().parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [
        sam_cli(), "build", "--template", str(project / "template.yaml"),
        "--build-dir", str(build_dir), "--parameter-overrides", f"Architecture={architecture}",
    ]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    return BuiltArtifact(architecture, project, build_dir, seconds, log)

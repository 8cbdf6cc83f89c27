"""Finish the RuntimeDepsLayer that pip installed: drop what is never imported, check the
binaries are built for the function's architecture.

    python3.12 prune_layer.py LAYER/python --architecture x86_64|arm64

Run by layers/runtime/Makefile (`sam build`). Every rule names files that lambda_app can
never load: test suites, C headers and static libraries, type stubs, command-line scripts,
and onnxruntime's offline tooling. Each rule must match something, so a new release that
moves files fails the build here instead of silently shipping them again. What stays is
proven importable by tests/test_packaged.py, which runs the built function from the layer.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# ELF e_machine of the two Lambda architectures.
ELF_MACHINES = {"x86_64": 0x3E, "arm64": 0xB7}


@dataclass(frozen=True)
class Rule:
    pattern: str  # glob, relative to the layer's python/ directory
    reason: str


RULES: tuple[Rule, ...] = (
    Rule("bin", "console scripts (f2py, numpy-config, onnxruntime_test...): never run"),
    Rule("*.dist-info/RECORD", "pip's list of installed files, read only by pip uninstall"),
    Rule("**/tests", "test suites, imported only by pytest"),
    Rule("numpy/conftest.py", "pytest configuration of numpy's tests"),
    Rule("numpy/_core/_*_tests.cpython-*.so", "extension modules only numpy's tests import"),
    Rule("numpy/_core/_simd.cpython-*.so", "SIMD test module, only numpy's tests import it"),
    Rule("numpy/f2py", "Fortran wrapper generator, loaded only by `import numpy.f2py`"),
    Rule("numpy/_pyinstaller", "PyInstaller hook"),
    Rule("numpy/_core/include", "C headers for building extensions"),
    Rule("numpy/_core/lib", "static npymath library and pkg-config file for C builds"),
    Rule("numpy/random/lib", "static npyrandom library for C builds"),
    Rule("numpy/random/_examples", "Cython and Numba examples"),
    Rule("**/*.pxd", "Cython declarations"),
    Rule("**/*.pyi", "type stubs, read by type checkers only"),
    Rule("**/*.h", "C headers (cffi's are for compiling extension modules)"),
    Rule("onnxruntime/tools", "model conversion and optimisation tools (offline)"),
    Rule("onnxruntime/transformers", "transformer graph optimiser (offline)"),
    Rule("onnxruntime/quantization", "quantisation tooling: bundles are quantised at export"),
    Rule("onnxruntime/datasets", "sample models"),
    Rule("onnxruntime/backend", "ONNX backend-test API: imports onnx, which is not shipped"),
    Rule(
        "onnxruntime/capi/libonnxruntime.so.*",
        "the C API library for C/C++ programs: the Python binding "
        "(onnxruntime_pybind11_state) holds the runtime itself and does not load it",
    ),
    Rule(
        "aws_lambda_powertools/event_handler/openapi/swagger_ui/*.min.*",
        "Swagger UI assets, served only by enable_swagger(), which lambda_app does not call",
    ),
)


class LayerError(RuntimeError):
    """The layer cannot be finished; the message says why."""


@dataclass(frozen=True)
class Removed:
    rule: Rule
    path: Path
    bytes: int


def tree_bytes(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir())


def prune(root: Path, rules: Sequence[Rule] = RULES) -> list[Removed]:
    """Delete every path a rule matches; a rule that matches nothing is an error."""
    if not root.is_dir():
        raise LayerError(f"{root} is not a directory")
    removed: list[Removed] = []
    unmatched: list[Rule] = []
    for rule in rules:
        # Parents first, so a path inside an already deleted directory is skipped.
        matches = sorted(root.glob(rule.pattern), key=lambda p: len(p.parts))
        if not matches:
            unmatched.append(rule)
        for path in matches:
            if not (path.exists() or path.is_symlink()):
                continue
            size = tree_bytes(path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(Removed(rule, path, size))
    if unmatched:
        names = ", ".join(rule.pattern for rule in unmatched)
        raise LayerError(
            f"prune rules matched nothing in {root}: {names}. A package changed its layout: "
            "update RULES in layers/runtime/prune_layer.py"
        )
    return removed


def elf_machine(path: Path) -> int | None:
    with path.open("rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    return int.from_bytes(header[18:20], "little")


def foreign_binaries(root: Path, architecture: str) -> list[Path]:
    """Shared libraries in the layer that are not built for ``architecture``."""
    expected = ELF_MACHINES[architecture]
    libraries = [p for p in root.rglob("*.so*") if p.is_file() and not p.is_symlink()]
    if not libraries:
        raise LayerError(f"no shared libraries in {root}: is this the layer?")
    return [p for p in libraries if elf_machine(p) not in (expected, None)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("layer", type=Path, help="the layer's python/ directory")
    parser.add_argument("--architecture", choices=sorted(ELF_MACHINES), required=True)
    args = parser.parse_args(argv)
    root: Path = args.layer
    try:
        before = tree_bytes(root)
        removed = prune(root)
        foreign = foreign_binaries(root, args.architecture)
    except LayerError as exc:
        print(f"prune_layer: error: {exc}", file=sys.stderr)
        return 1
    if foreign:
        listed = "\n  ".join(str(p.relative_to(root)) for p in foreign)
        print(
            f"prune_layer: error: not built for {args.architecture}:\n  {listed}", file=sys.stderr
        )
        return 1
    by_rule: dict[str, int] = {}
    for item in removed:
        by_rule[item.rule.pattern] = by_rule.get(item.rule.pattern, 0) + item.bytes
    for pattern, size in sorted(by_rule.items(), key=lambda kv: -kv[1]):
        print(f"prune_layer: {size / 1e6:8.2f} MB  {pattern}")
    after = tree_bytes(root)
    print(f"prune_layer: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB ({args.architecture})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The README's benchmark section and the chart, rebuilt from ``bench/results/*.json`` alone.

The section sits between two markers in README.md; everything between them is replaced.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt

from bench import (
    cold_start,
    cost,
    decoder_speed,
    emotion,
    frontend_vs_librosa,
    memory,
    onnx_asr_rnnt,
    onnx_asr_side_by_side,
    size,
    speed,
)
from bench.common import REPO, RESULTS, read_result
from bench.models import FAMILIES, FAMILY_INFO, PRECISIONS

BEGIN = "<!-- bench:begin (python -m bench writes this section) -->"
END = "<!-- bench:end -->"
README = REPO / "README.md"
CHART = "bench/results/speed.png"
# In README order; ``python -m bench`` measures them in ``bench.__main__.ORDER``.
SECTIONS: tuple[ModuleType, ...] = (
    speed,
    onnx_asr_side_by_side,
    onnx_asr_rnnt,
    decoder_speed,
    cold_start,
    memory,
    emotion,
    size,
    frontend_vs_librosa,
    cost,
)


def render_section(results_dir: Path = RESULTS, modules: Sequence[ModuleType] = SECTIONS) -> str:
    present = [m for m in modules if (results_dir / f"{m.NAME}.json").is_file()]
    if not present:
        raise FileNotFoundError(f"no benchmark results in {results_dir}")
    machine = read_result(present[0].NAME, results_dir)["machine"]
    parts = [
        f"Regenerate every table below and the chart with `.venv/bin/python -m bench` "
        f"(`--report-only` rebuilds them from `bench/results/*.json`). Measured "
        f"{machine['date']} on {machine['cpu']}, {machine['cpus']} CPUs "
        f"({', '.join(machine['cpu_flags']) or 'no AVX2'}), Python {machine['python']}, "
        f"onnxruntime {machine['onnxruntime']}, numpy {machine['numpy']}, otherwise idle.",
        f"![Real-time factor by model, precision and threads, and against onnx-asr]({CHART})",
    ]
    for module in present:
        result = read_result(module.NAME, results_dir)
        parts.append(f"### {module.TITLE}\n\n{module.markdown(result)}")
    return "\n\n".join(parts)


def update_readme(section: str, readme: Path = README) -> bool:
    """Replace the marked section; True when the file changed."""
    text = readme.read_text("utf-8")
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{readme} has no {BEGIN} … {END} markers")
    updated = pattern.sub(lambda _: f"{BEGIN}\n{section}\n{END}", text)
    if updated != text:
        readme.write_text(updated, "utf-8")
    return updated != text


def draw_chart(results_dir: Path = RESULTS, out: Path | None = None) -> Path:
    """Left: warm RTF per model and precision at 1 and 2 threads. Right: the same ONNX files
    through this project and through onnx-asr."""
    out = out or REPO / CHART
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    _speed_panel(left, read_result(speed.NAME, results_dir))
    peers = results_dir / f"{onnx_asr_side_by_side.NAME}.json"
    if peers.is_file():
        _peer_panel(right, read_result(onnx_asr_side_by_side.NAME, results_dir))
    else:
        right.set_axis_off()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(figure)
    return out


def _speed_panel(axes: Any, result: dict[str, Any]) -> None:
    labels, one, two = [], [], []
    for family, info in ((f, FAMILY_INFO[f]) for f in FAMILIES):
        for precision in PRECISIONS:
            labels.append(f"{info.label}\n{precision}")
            one.append(speed.rtf(result, family, precision, 1))
            two.append(speed.rtf(result, family, precision, 2))
    _grouped_bars(axes, labels, {"1 thread": one, "2 threads": two})
    axes.set_title("Warm RTF, 60 s of speech (lower is faster)")
    axes.set_ylabel("processing s / audio s")


def _peer_panel(axes: Any, result: dict[str, Any]) -> None:
    rows = onnx_asr_side_by_side.chart_rows(result)
    labels = [row.label for row in rows]
    series = {
        "this project": [row.ours_rtf for row in rows],
        "onnx-asr": [row.theirs_rtf for row in rows],
    }
    _grouped_bars(axes, labels, series)
    axes.set_title("GigaAM v3 shape, same ONNX file, 17 clips: ours vs onnx-asr")
    axes.set_ylabel("processing s / audio s")


def _grouped_bars(axes: Any, labels: list[str], series: dict[str, list[float]]) -> None:
    width = 0.8 / len(series)
    for index, (name, values) in enumerate(series.items()):
        positions = [i + (index - (len(series) - 1) / 2) * width for i in range(len(labels))]
        bars = axes.bar(positions, values, width, label=name)
        axes.bar_label(bars, labels=[f"{v:.4f}" for v in values], fontsize=7, padding=2)
    axes.set_xticks(range(len(labels)), labels, fontsize=8)
    axes.margins(y=0.15)
    axes.legend(fontsize=8)

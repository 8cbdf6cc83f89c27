"""The benchmark suite: cost arithmetic, quick runs of speed/cold start, and the README report
being exactly what ``python -m bench --report-only`` would write from the committed results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import cold_start, cost, report, speed
from bench.__main__ import main as bench_cli
from bench.common import RESULTS, BenchOptions, read_result, write_result
from bench.models import FAMILIES, PRECISIONS

QUICK = BenchOptions(quick=True)


def test_effective_rtf_follows_the_cpu_share() -> None:
    # One vCPU (1,769 MB): the 1-thread figure as measured.
    assert cost.effective_rtf(0.04, 0.025, 1.0) == 0.04
    # 1.7 vCPU: two busy threads' CPU work spread over 1.7 vCPU ...
    assert cost.effective_rtf(0.04, 0.025, 1.7) == pytest.approx(0.025 * 2 / 1.7)
    # ... never slower than one thread, never faster than the 2-thread run.
    assert cost.effective_rtf(0.04, 0.039, 1.7) == 0.04
    assert cost.effective_rtf(0.04, 0.025, 4.0) == 0.025


def test_cost_per_audio_hour_arithmetic() -> None:
    prices = cost.Prices()
    # RTF 0.05 at 1,769 MB: 180 s × 1.7275 GB × $0.0000166667 + 60 requests × $2e-7.
    expected = 180 * (1769 / 1024) * 0.0000166667 + 60 * 0.2e-6
    assert cost.lambda_usd_per_audio_hour(0.05, 1769, request_seconds=60) == pytest.approx(expected)
    # Transcribe: $0.024 a minute, and 5 s requests are billed as 15 s.
    assert cost.transcribe_usd_per_audio_hour(60.0, prices) == pytest.approx(1.44)
    assert cost.transcribe_usd_per_audio_hour(5.0, prices) == pytest.approx(4.32)


def test_quick_speed_cold_start_and_cost_run_end_to_end(tmp_path: Path) -> None:
    options = BenchOptions(quick=True, results_dir=tmp_path)
    result = speed.measure(options)
    configurations = {(r["family"], r["precision"], r["threads"]) for r in result["rows"]}
    assert configurations == {(f, p, t) for f in FAMILIES for p in PRECISIONS for t in (1, 2)}
    for row in result["rows"]:
        stages = sum(row[f"{stage}_ms_per_audio_s"] for stage in speed.STAGES) / 1000
        assert row["rtf"] == pytest.approx(stages, rel=0.01, abs=1e-4)
        assert 0 < row["rtf"] < 1
    write_result(speed.NAME, result, tmp_path)
    costs = cost.measure(options)
    assert len(costs["rows"]) == len(FAMILIES) * len(PRECISIONS) * len(cost.MEMORY_MB)
    assert all(row["usd_per_audio_hour"] > 0 for row in costs["rows"])
    assert "Transcribe ÷ ours" in cost.markdown({**costs, "machine": {}})

    started = cold_start.measure(options)
    for row in started["rows"]:
        assert row["total_s"] == pytest.approx(sum(row[s] for s in cold_start.STAGES), abs=0.002)
        assert row["imports_s"] > 0 and row["bundle_load_s"] > 0 and row["first_clip_s"] > 0


def test_readme_section_is_the_committed_results_rendered() -> None:
    """Edit bench/results or a markdown() and forget `python -m bench --report-only`: this fails."""
    section = report.render_section(RESULTS)
    readme = report.README.read_text("utf-8")
    assert f"{report.BEGIN}\n{section}\n{report.END}" in readme
    assert "date" in read_result(speed.NAME)["machine"]


def test_update_readme_replaces_only_the_marked_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nintro\n\n{report.BEGIN}\nold\n{report.END}\n\n## Next\n")
    assert report.update_readme("new tables", readme)
    assert readme.read_text() == (
        f"# Title\n\nintro\n\n{report.BEGIN}\nnew tables\n{report.END}\n\n## Next\n"
    )
    assert not report.update_readme("new tables", readme)
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        report.update_readme("x", readme)


def test_chart_draws_from_the_committed_results(tmp_path: Path) -> None:
    chart = report.draw_chart(RESULTS, tmp_path / "chart.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart.stat().st_size > 10_000


def test_quick_runs_may_not_overwrite_the_published_results(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        bench_cli(["--quick"])
    assert "--results-dir" in capsys.readouterr().err


def test_report_only_from_a_results_dir_leaves_the_readme_alone(tmp_path: Path) -> None:
    for name in (speed.NAME, cost.NAME):
        data = json.loads((RESULTS / f"{name}.json").read_text("utf-8"))
        (tmp_path / f"{name}.json").write_text(json.dumps(data), "utf-8")
    before = report.README.read_text("utf-8")
    assert bench_cli(["--report-only", "--results-dir", str(tmp_path)]) == 0
    assert report.README.read_text("utf-8") == before
    assert (tmp_path / "speed.png").is_file()

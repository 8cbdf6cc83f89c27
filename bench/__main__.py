"""``python -m bench``: run every benchmark, then rebuild the README section and the chart.

    .venv/bin/python -m bench                       # all (about 20 minutes on 2 cores)
    .venv/bin/python -m bench --only speed cost     # some, then the report
    .venv/bin/python -m bench --report-only         # README + chart from bench/results/*.json
    .venv/bin/python -m bench --quick --results-dir /tmp/b   # smoke run: demo models, tiny inputs

Each benchmark also runs alone: ``python -m bench.<module>``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench import cost, report
from bench.common import RESULTS, BenchOptions, write_result

# Measurement order: cost derives from speed, so it comes after it.
ORDER = tuple(sorted(report.SECTIONS, key=lambda module: module is cost))
NAMES = {module.NAME: module for module in ORDER}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(NAMES), metavar="NAME")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help=BenchOptions.__doc__)
    parser.add_argument("--repeats", type=int, default=BenchOptions.repeats)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick and args.results_dir == RESULTS:
        parser.error("--quick figures mean nothing: give --results-dir elsewhere")
    options = BenchOptions(quick=args.quick, repeats=args.repeats, results_dir=args.results_dir)
    if not args.report_only:
        for module in ORDER:
            if args.only and module.NAME not in args.only:
                continue
            started = time.perf_counter()
            print(f"• {module.NAME}", flush=True)
            path = write_result(module.NAME, module.measure(options), args.results_dir)
            print(f"  {path} ({time.perf_counter() - started:.0f} s)", flush=True)
    section = report.render_section(args.results_dir)
    if args.results_dir == RESULTS:
        changed = report.update_readme(section)
        chart = report.draw_chart(args.results_dir)
        print(f"README {'updated' if changed else 'unchanged'}; chart {chart}")
    else:
        chart = report.draw_chart(args.results_dir, args.results_dir / "speed.png")
        print(section)
        print(f"\nchart {chart} (README untouched: results are not bench/results)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

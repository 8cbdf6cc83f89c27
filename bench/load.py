"""Benchmark: a burst of requests on the API Gateway emulator, one warm model behind it.

    .venv/bin/python bench/load.py [--requests 100] [--concurrency 100 2 1]
        [--threads 2 1] [--bundle demo/bundle] [--rounds 5] [--out bench/results/load.json]

For each onnxruntime thread count T (ASR_THREADS; the handler's default is all CPUs, the
emulator's with --concurrency > 1 is 1) and concurrency N, a fresh ``python -m local serve
--concurrency N`` (N = 1 is the emulator's default: one request at a time, like one Lambda
container). All requests are sent at once from as many client threads, ``--rounds`` times
after one warm-up round; every answer is checked (``local.load_driver.problems``).
Throughput is of the median round: other work on a shared machine disturbs single rounds.
The mix: the demo model's held-out clips and four Golos recordings (../shared/data/speech),
as WAV, FLAC, base64 JSON and S3 references, and 10 % invalid requests (4xx). Latency is
per request as the client sees it, queueing included; RSS is the emulator process's: warm
(each clip sent once, alone), before (after the warm-up round), after, and its peak (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO.parent / "shared" / "data" / "speech"
sys.path.insert(0, str(REPO))

from local.load_driver import (  # noqa: E402
    Clip,
    EmulatorProcess,
    Outcome,
    Round,
    percentile,
    reference_transcripts,
    request_mix,
    run_round,
)


def bench_clips() -> list[Clip]:
    paths = sorted((REPO / "demo" / "audio").glob("*.wav"))
    paths += sorted((SPEECH / "ru").glob("golos_0*.wav"))[:4]
    return [Clip.of(path) for path in paths]


def measure(
    bundle: Path, clips: list[Clip], *, concurrency: int, requests: int, rounds: int, threads: int
) -> dict[str, Any]:
    mix = request_mix(clips, requests)
    uploads = [clip.path for clip in clips]
    with EmulatorProcess(bundle, concurrency=concurrency, uploads=uploads, threads=threads) as em:
        references = reference_transcripts(em.url, clips)
        single = em.memory()  # warm: each clip sent once, alone
        run_round(em, mix, references)  # warm-up: threads, allocator arenas, caches
        before = em.memory()
        measured: list[Round] = [run_round(em, mix, references) for _ in range(rounds)]
        peak = em.memory().peak_mb
    outcomes: list[Outcome] = [o for r in measured for o in r.outcomes]
    latencies = [o.seconds for o in outcomes]
    median = sorted(measured, key=lambda r: r.wall_seconds)[len(measured) // 2]
    transcribed = [o.body["timings"]["total"] for o in outcomes if o.request.clip is not None]
    return {
        "onnxruntime_threads": threads or "default",
        "concurrency": concurrency,
        "requests": requests,
        "rounds": rounds,
        "wall_s_per_round": [round(r.wall_seconds, 3) for r in measured],
        "requests_per_s": len(median.outcomes) / median.wall_seconds,
        "audio_s_per_s": median.audio_seconds / median.wall_seconds,
        "latency_ms": {
            name: 1000 * percentile(latencies, fraction)
            for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
        },
        "latency_max_ms": 1000 * max(latencies),
        "transcribe_ms_mean": 1000 * sum(transcribed) / len(transcribed),
        "rss_mb": {
            "after_single_requests": single.rss_mb,
            "before": before.rss_mb,
            "after_per_round": [round(r.memory_after.rss_mb, 1) for r in measured],
            "after": measured[-1].memory_after.rss_mb,
            "peak": peak,
        },
        "wrong_answers": sum(len(r.problems) for r in measured),
        "server_errors_5xx": sum(o.status >= 500 for o in outcomes),
        "problems": [p for r in measured for p in r.problems][:10],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100, help="sent at once, per round")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[100, 2, 1])
    parser.add_argument("--bundle", type=Path, default=REPO / "demo" / "bundle")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[2, 1], help="ASR_THREADS (0: not set)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "load.json")
    args = parser.parse_args()

    clips = bench_clips()
    load_before = os.getloadavg()
    rows = []
    for threads in args.threads:
        for concurrency in args.concurrency:
            row = measure(
                args.bundle,
                clips,
                concurrency=concurrency,
                requests=args.requests,
                rounds=args.rounds,
                threads=threads,
            )
            rows.append(row)
            rate = row["requests_per_s"]
            print(
                f"threads {threads}, concurrency {concurrency}: {rate:.1f} req/s", file=sys.stderr
            )
    results = {
        "machine": {
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "cpu": platform.machine(),
            "cpus": len(os.sched_getaffinity(0)),
            "date": time.strftime("%Y-%m-%d"),
            # Other work on the machine competes for its CPUs: the 1, 5, 15 min load averages.
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "bundle": str(args.bundle.resolve().relative_to(REPO))
        if args.bundle.resolve().is_relative_to(REPO)
        else str(args.bundle),
        "clips": [{"file": clip.name, "seconds": round(clip.seconds, 3)} for clip in clips],
        "rows": rows,
    }
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(
        "| ORT threads | concurrency | requests | req/s | audio s/s | p50 ms | p95 ms | p99 ms "
        "| RSS MB: warm / after warm-up burst / after / peak | wrong | 5xx |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        rss, latency = row["rss_mb"], row["latency_ms"]
        cells = [
            row["onnxruntime_threads"],
            row["concurrency"],
            f"{row['requests']} × {row['rounds']}",
            f"{row['requests_per_s']:.1f}",
            f"{row['audio_s_per_s']:.0f}",
            *(f"{latency[name]:.0f}" for name in ("p50", "p95", "p99")),
            " / ".join(
                f"{rss[name]:.0f}" for name in ("after_single_requests", "before", "after", "peak")
            ),
            row["wrong_answers"],
            row["server_errors_5xx"],
        ]
        print("| " + " | ".join(str(cell) for cell in cells) + " |")


if __name__ == "__main__":
    main()

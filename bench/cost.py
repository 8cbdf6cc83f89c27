"""Cost per audio-hour on Lambda, from the measured RTF and the published prices.

Lambda bills memory × duration (GB-s, memory in MB / 1024) plus a per-request charge; a
function at 1,769 MB has one vCPU and CPU share grows linearly with memory. Amazon
Transcribe bills audio per second with a 15 s minimum per request. Prices: us-east-1, on-demand,
first tier, as published on aws.amazon.com/lambda/pricing and aws.amazon.com/transcribe/pricing;
edit ``PRICES`` when they change. Not counted: cold starts (``cold_start``), S3 and API
Gateway requests, the free tiers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bench.common import BenchOptions, bench_main, markdown_table, read_result
from bench.models import FAMILIES, FAMILY_INFO, PRECISIONS
from bench.speed import rtf

NAME = "cost"
TITLE = "Cost per audio-hour"
MEMORY_MB = (1769, 3008)
MB_PER_VCPU = 1769
AUDIO_HOUR_S = 3600.0


@dataclass(frozen=True)
class Prices:
    lambda_x86_gb_second_usd: float = 0.0000166667
    lambda_arm_gb_second_usd: float = 0.0000133334
    lambda_request_usd: float = 0.20 / 1_000_000
    transcribe_minute_usd: float = 0.024  # standard batch, first 250,000 minutes a month
    transcribe_minimum_s: float = 15.0


PRICES = Prices()


def effective_rtf(rtf_1_thread: float, rtf_2_threads: float, vcpus: float) -> float:
    """RTF on ``vcpus`` of CPU share. One vCPU: the 1-thread figure. Between one and two: the
    2-thread run's CPU work (2 × its time, if both threads were busy) spread over the share,
    never faster than the 2-thread run nor slower than 1 thread (the runtime picks threads
    from the CPUs it sees)."""
    if vcpus <= 1.0:
        return rtf_1_thread / vcpus
    return min(rtf_1_thread, max(rtf_2_threads, rtf_2_threads * 2.0 / vcpus))


def lambda_usd_per_audio_hour(
    rtf_value: float, memory_mb: int, *, request_seconds: float, prices: Prices = PRICES
) -> float:
    """Duration (x86_64) plus one request per ``request_seconds`` of audio."""
    duration = rtf_value * AUDIO_HOUR_S * (memory_mb / 1024) * prices.lambda_x86_gb_second_usd
    requests = AUDIO_HOUR_S / request_seconds * prices.lambda_request_usd
    return duration + requests


def transcribe_usd_per_audio_hour(request_seconds: float, prices: Prices = PRICES) -> float:
    """Amazon Transcribe for an hour of audio sent as ``request_seconds``-long files."""
    billed = max(request_seconds, prices.transcribe_minimum_s)
    return AUDIO_HOUR_S / request_seconds * billed / 60.0 * prices.transcribe_minute_usd


def cost_table(speed: dict[str, Any], prices: Prices = PRICES) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for family in FAMILIES:
        for precision in PRECISIONS:
            one, two = (rtf(speed, family, precision, threads) for threads in (1, 2))
            for memory_mb in MEMORY_MB:
                value = effective_rtf(one, two, memory_mb / MB_PER_VCPU)
                rows.append(
                    {
                        "family": family,
                        "precision": precision,
                        "memory_mb": memory_mb,
                        "rtf": round(value, 5),
                        "seconds_per_audio_hour": round(value * AUDIO_HOUR_S, 1),
                        "usd_per_audio_hour": lambda_usd_per_audio_hour(
                            value, memory_mb, request_seconds=60.0, prices=prices
                        ),
                    }
                )
    transcribe = {
        f"{seconds:g}s_files": transcribe_usd_per_audio_hour(seconds, prices)
        for seconds in (5.0, 60.0)
    }
    return {
        "prices": asdict(prices),
        "speed_measured": speed["machine"]["date"],
        "rows": rows,
        "transcribe_usd_per_audio_hour": transcribe,
    }


def measure(options: BenchOptions) -> dict[str, Any]:
    return cost_table(read_result("speed", options.results_dir))


def markdown(result: dict[str, Any]) -> str:
    transcribe = result["transcribe_usd_per_audio_hour"]["60s_files"]
    short = result["transcribe_usd_per_audio_hour"]["5s_files"]
    headers = ["model (shape)", "precision", "Lambda memory", "RTF used", "compute s per audio h"]
    headers += ["USD per audio hour", "Transcribe ÷ ours"]
    rows = [
        [
            FAMILY_INFO[row["family"]].label,
            row["precision"],
            f"{row['memory_mb']:,} MB",
            f"{row['rtf']:.4f}",
            f"{row['seconds_per_audio_hour']:.0f}",
            f"**${row['usd_per_audio_hour']:.4f}**",
            f"{transcribe / row['usd_per_audio_hour']:,.0f}×",
        ]
        for row in result["rows"]
    ]
    prices = result["prices"]
    gb_second = f"{prices['lambda_x86_gb_second_usd']:.10f}".rstrip("0")
    return (
        markdown_table(headers, rows)
        + f"\n\nAmazon Transcribe (standard batch, ${prices['transcribe_minute_usd']}/min, "
        f"15 s minimum): **${transcribe:.2f}** per audio hour in files of a minute or more, "
        f"${short:.2f} in 5 s requests. Lambda: x86_64 at "
        f"${gb_second}/GB-s plus "
        f"${prices['lambda_request_usd'] * 1e6:.2f} per million requests (one per audio "
        "minute counted); RTF from the speed table measured on this machine (1,769 MB = 1 vCPU "
        "→ the 1-thread RTF; 3,008 MB = 1.7 vCPU → the 2-thread run's CPU work spread over "
        "1.7 vCPU). arm64 costs 20 % less per GB-s; its speed is not measured here. Not "
        "counted: cold starts, S3/API Gateway requests, free tiers."
    )


if __name__ == "__main__":
    bench_main(NAME, measure, markdown)

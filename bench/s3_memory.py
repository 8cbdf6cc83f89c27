"""Peak memory of the S3 path: a 60-minute recording uploaded to a bucket, transcribed by the
handler from its S3 event, the result written to the output bucket.

S3 is a moto server in this process; the handler runs in a fresh process pinned to one CPU
(``bench.pinned``) with the environment template.yaml gives the function (model directory,
buckets, ``MALLOC_MMAP_THRESHOLD_``), and botocore pointed at the server through
``AWS_ENDPOINT_URL``. The child's peak RSS (``VmHWM``) covers the handler's imports, the
model load, the object streamed to /tmp, decoding, the VAD, the model runs and the result
upload: what a 1,769 MB Lambda must hold.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from bench.common import REPO, BenchOptions, bench_main, markdown_table
from bench.memory import MALLOC_TUNED, duration_label, headroom_mb, recording
from bench.models import FAMILY_INFO, Family, bundle_for
from bench.pinned import run_pinned

NAME = "s3_memory"
TITLE = "Peak memory on the S3 path"
FAMILIES: tuple[Family, ...] = ("quartznet15x5", "gigaam_v3")
INPUT_SECONDS = 3600
QUICK_INPUT_SECONDS = 10
TARGET_MB: dict[Family, float] = {"quartznet15x5": 400, "gigaam_v3": 800}
INPUT_BUCKET, OUTPUT_BUCKET = "asr-bench-input", "asr-bench-output"
EVENT = REPO / "events" / "s3_object_created.json"

CHILD = """
import json, time
from pathlib import Path
from bench.pinned import status_mb
from local.events import Fill, fill_event, load_event
from local.runtime import LocalContext
started = time.perf_counter()
import handler
imported, imported_rss = time.perf_counter(), status_mb("VmRSS")
event = fill_event(load_event(Path({event!r})), Fill(bucket={bucket!r}, key={key!r}, etag={etag!r}))
event["Records"][0]["s3"]["object"]["size"] = {size}
response = handler.lambda_handler(event, LocalContext(timeout_s=900.0))
done = time.perf_counter()
print(json.dumps({{"imports_s": imported - started, "imports_rss_mb": imported_rss,
                  "handler_s": done - imported, "peak_rss_mb": status_mb("VmHWM"),
                  "response": response}}))
"""


@contextmanager
def moto_s3() -> Iterator[str]:
    """A moto server on a free loopback port with the two buckets; yields its endpoint."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = _client(endpoint)
        for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
            client.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()


def _client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )


def run_case(endpoint: str, bundle: Path, audio: Path) -> dict[str, Any]:
    """Upload ``audio``, run the handler on its event in a pinned child, read the result."""
    client = _client(endpoint)
    key = f"calls/{audio.name}"
    client.upload_file(str(audio), INPUT_BUCKET, key)
    head = client.head_object(Bucket=INPUT_BUCKET, Key=key)
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MODEL_DIR": str(bundle),
        "INPUT_BUCKET": INPUT_BUCKET,
        "OUTPUT_BUCKET": OUTPUT_BUCKET,
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        **MALLOC_TUNED,  # as template.yaml sets it
    }
    code = CHILD.format(
        event=str(EVENT), bucket=INPUT_BUCKET, key=key,
        etag=head["ETag"].strip('"'), size=head["ContentLength"],
    )  # fmt: skip
    report = run_pinned(code, extra_env=env)
    (processed,) = report["response"]["processed"]
    if processed.get("status") != "done":
        raise RuntimeError(f"the handler did not transcribe {key}: {processed}")
    result_key = processed["output_key"]
    document = json.loads(client.get_object(Bucket=OUTPUT_BUCKET, Key=result_key)["Body"].read())
    return {
        "object_mb": round(head["ContentLength"] / 1e6, 1),
        "imports_s": round(report["imports_s"], 2),
        "imports_rss_mb": round(report["imports_rss_mb"], 1),
        "handler_s": round(report["handler_s"], 2),
        "peak_rss_mb": round(report["peak_rss_mb"], 1),
        # The result object: the transcript's JSON, nested under "transcript" or at the top.
        "audio_s": _transcript(document).get("duration"),
        "segments": len(_transcript(document).get("segments", [])),
        "result_key": result_key,
    }


def _transcript(document: dict[str, Any]) -> dict[str, Any]:
    nested = document.get("transcript")
    return nested if isinstance(nested, dict) else document


def measure(options: BenchOptions) -> dict[str, Any]:
    seconds = QUICK_INPUT_SECONDS if options.quick else INPUT_SECONDS
    audio = recording(seconds)
    rows = []
    with moto_s3() as endpoint:
        for family in FAMILIES:
            bundle = bundle_for(family, "int8", options)
            row = {"family": family, "input_s": seconds, **run_case(endpoint, bundle, audio)}
            row["target_mb"] = TARGET_MB[family]
            row["headroom_mb"] = headroom_mb(row["peak_rss_mb"])
            print(row, flush=True)
            rows.append(row)
    return {"quick": options.quick, "malloc_env": MALLOC_TUNED, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    rows = [
        [
            FAMILY_INFO[row["family"]].label + (" (demo)" if result["quick"] else ""),
            duration_label(row["input_s"]),
            row["object_mb"],
            f"**{row['peak_rss_mb']:.0f}**",
            f"{row['target_mb']:.0f}",
            f"{row['handler_s']:.1f}",
            row["segments"],
            f"{row['headroom_mb']['1769']:.0f} MB",
        ]
        for row in result["rows"]
    ]
    table = markdown_table(
        ["model (shape), int8", "recording", "object MB", "peak MB", "target MB",
         "handler s", "segments", "headroom at 1,769 MB"],
        rows,
    )  # fmt: skip
    return (
        table + "\n\nA WAV (16 kHz, 16-bit) uploaded to a moto S3 server; its ObjectCreated event "
        "through `handler.lambda_handler` in a fresh process pinned to one CPU with the "
        "template's environment (`MALLOC_MMAP_THRESHOLD_=131072`). Peak = the process's "
        "`VmHWM`: handler imports, model load, the object streamed to /tmp in 1 MB chunks, "
        "decoding to one 16 kHz float32 signal (60 min = 220 MiB), VAD, batched model runs, "
        "the result JSON written to the output bucket."
    )


if __name__ == "__main__":
    bench_main(NAME, measure, markdown)

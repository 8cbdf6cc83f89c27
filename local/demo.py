"""Every demo clip through all three entry points, transcript against the expected text.

For each clip of a NeMo manifest (``demo/audio/manifest.jsonl``): an HTTP API (payload
2.0) JSON request, a REST API (payload 1.0) JSON request, and an S3 ObjectCreated event
whose transcript is read back from the (moto) output bucket. Exit status 1 on any mismatch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import EVENTS_DIR
from .events import load_event
from .fake_s3 import fake_s3
from .invoke import InvocationResult, Invoker
from .runtime import DEFAULT_INPUT_BUCKET, DEFAULT_OUTPUT_BUCKET, LocalEnvironment, load_handler

DISCLAIMER = (
    "DEMO MODEL: a small QuartzNet trained on synthetic espeak-ng speech (a few dozen "
    "phrases). It shows that the serving path works end to end; it is NOT a production "
    "speech recognizer and will not transcribe real recordings well."
)
ENTRY_POINTS = {
    "http-v2": "http_api_transcribe_json.json",
    "rest-v1": "rest_api_transcribe_json.json",
    "s3-event": "s3_object_created.json",
}

Print = Callable[[str], None]


@dataclass(frozen=True)
class DemoClip:
    audio: Path
    text: str


def read_manifest(manifest: Path) -> list[DemoClip]:
    """NeMo JSON lines; ``audio_filepath`` is relative to the manifest."""
    clips = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            clips.append(DemoClip(manifest.parent / entry["audio_filepath"], str(entry["text"])))
    return clips


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower().replace("ё", "е")).strip()


def transcript_of(entry_point: str, result: InvocationResult) -> str | None:
    """The transcript text the entry point delivered, or None if it failed."""
    if not result.ok:
        return None
    if entry_point == "s3-event":
        documents = list(result.outputs.values())
        if len(documents) != 1 or documents[0].get("status") != "done":
            return None
        return str(documents[0]["transcript"]["text"])
    body: Any = result.body()
    return str(body["text"]) if isinstance(body, dict) and "text" in body else None


def failure_of(result: InvocationResult) -> str:
    if result.error is not None:
        return result.error.strip().splitlines()[-1]
    body = result.body()
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code"))
    documents = list(result.outputs.values())
    if documents and isinstance(documents[0].get("error"), dict):
        return str(documents[0]["error"].get("code"))
    return "no transcript"


def run_demo(bundle: Path, manifest: Path, out: Print = print) -> int:
    clips = read_manifest(manifest)
    out(DISCLAIMER)
    model_id = json.loads((bundle / "config.json").read_text(encoding="utf-8")).get("model_id")
    out(f"model {model_id} ({bundle}); {len(clips)} clips from {manifest}\n")
    handler = load_handler(LocalEnvironment(model_dir=bundle))
    templates = {name: load_event(EVENTS_DIR / file) for name, file in ENTRY_POINTS.items()}
    mismatches = 0
    with fake_s3(DEFAULT_INPUT_BUCKET, DEFAULT_OUTPUT_BUCKET) as s3:
        invoker = Invoker(handler, s3=s3)
        for number, clip in enumerate(clips, 1):
            expected = normalize(clip.text)
            out(f"[{number}/{len(clips)}] {clip.audio.name}  expected: {expected}")
            for name, template in templates.items():
                key = f"uploads/demo/{number:03d}-{clip.audio.name}"
                result = invoker.invoke(template, audio=clip.audio, key=key)
                got = transcript_of(name, result)
                if got is not None and normalize(got) == expected:
                    out(f"    {name:<9} OK        {got}")
                    continue
                mismatches += 1
                shown = got if got is not None else f"<failed: {failure_of(result)}>"
                out(f"    {name:<9} MISMATCH  {shown}")
    checks = len(clips) * len(templates)
    out(f"\n{checks - mismatches}/{checks} transcripts match. {DISCLAIMER}")
    return 1 if mismatches or not clips else 0

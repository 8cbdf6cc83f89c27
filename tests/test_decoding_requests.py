"""Decoding options through ``POST /transcribe`` (JSON fields next to the audio, query
parameters of raw bodies) and the deployment's ``HOTWORDS``, with the demo bundle: it reads
its held-out clips exactly, greedily and with the beam search alike, and has no LM.

The OpenAI route's form fields: tests/test_openai_route.py; the CLI flags: tests/test_cli.py;
job requests: tests/test_jobs.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from asr.decoding import parse_hotwords
from asr.errors import InvalidRequest, stable_codes
from asr.hotwords import Hotword
from asr_service.settings import Settings

from tests.conftest import DEMO
from tests.test_handler import FakeContext, http_event, invoke, rest_event, serving

ENTRY = json.loads((DEMO / "audio" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[0])
CLIP = DEMO / "audio" / ENTRY["audio_filepath"]
TEXT: str = ENTRY["text"]  # "включи свет на кухне"


@pytest.fixture
def api(demo_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from serving(Settings(model_dir=demo_bundle), monkeypatch)


def json_body(**fields: Any) -> str:
    return json.dumps({"audio": base64.b64encode(CLIP.read_bytes()).decode(), **fields})


def raw_event(query: dict[str, str]) -> dict[str, Any]:
    """The clip as a raw body, ``query`` as API Gateway passes it (decoded)."""
    event = http_event(CLIP.read_bytes(), content_type="audio/wav")
    event["rawQueryString"] = urlencode(query)
    event["queryStringParameters"] = query
    return event


def test_the_default_is_the_bundles_greedy_decoder(api: Any) -> None:
    status, body = invoke(api, http_event(json_body()))
    assert (status, body["text"], body["decoder"]) == (200, TEXT, "greedy")


def test_beam_search_in_a_json_body_reads_the_clip(api: Any) -> None:
    status, body = invoke(api, http_event(json_body(decoder="beam", beam_width=8)))
    assert (status, body["text"], body["decoder"]) == (200, TEXT, "beam8")
    assert body["results"]["transcripts"] == [{"transcript": TEXT}]
    status, body = invoke(api, http_event(json_body(decoder="beam", beam_width="4")))
    assert (status, body["decoder"]) == (200, "beam4")  # numbers as strings too


def test_hotwords_in_a_json_body_select_the_beam_search(api: Any) -> None:
    hotwords = ["свет", {"text": "кухне", "boost": 3}]
    status, body = invoke(api, http_event(json_body(hotwords=hotwords, hotword_boost=1.5)))
    assert (status, body["text"], body["decoder"]) == (200, TEXT, "beam16+hotwords(2)")
    status, body = invoke(api, rest_event(json_body(hotwords="свет, кухне:3")))
    assert (status, body["text"], body["decoder"]) == (200, TEXT, "beam16+hotwords(2)")


def test_unknown_json_keys_are_still_ignored(api: Any) -> None:
    status, body = invoke(api, http_event(json_body(language="ru", prompt="x")))
    assert (status, body["decoder"]) == (200, "greedy")


def test_a_raw_body_takes_the_options_as_query_parameters(api: Any) -> None:
    status, body = invoke(api, raw_event({"decoder": "beam", "beam_width": "12"}))
    assert (status, body["text"], body["decoder"]) == (200, TEXT, "beam12")
    status, body = invoke(api, raw_event({"hotwords": "свет,кухне:3", "hotword_boost": "2"}))
    assert (status, body["text"], body["decoder"]) == (200, TEXT, "beam16+hotwords(2)")
    response = api.lambda_handler(raw_event({"hotwords": "свет", "format": "text"}), FakeContext())
    assert response["statusCode"] == 200 and response["body"] == TEXT + "\n"  # format still


def test_decoding_query_parameters_with_a_json_body_are_refused(api: Any) -> None:
    event = http_event(json_body())
    event["queryStringParameters"] = {"decoder": "beam"}
    status, body = invoke(api, event)
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    assert "decoder" in body["error"]["message"]
    event["queryStringParameters"] = {"format": "json"}  # not a decoding option: as before
    assert invoke(api, event)[0] == 200


BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"decoder": "foo"}, "invalid_decoding"),
    ({"decoder": "beam", "beam_width": 0}, "invalid_decoding"),
    ({"decoder": "beam", "beam_width": 65}, "invalid_decoding"),
    ({"decoder": "beam", "beam_width": "x"}, "invalid_decoding"),
    ({"hotwords": ["Свет"]}, "hotword_not_in_vocabulary"),
    ({"hotwords": ["svet"]}, "hotword_not_in_vocabulary"),
    ({"hotwords": ["да"] * 101}, "invalid_hotwords"),
    ({"hotwords": ["свет", ""]}, "invalid_hotwords"),
    ({"hotwords": [{"text": "свет", "boost": 0}]}, "invalid_hotwords"),
    ({"lm": True}, "lm_not_available"),
    ({"hotwords": ["свет"], "decoder": "greedy"}, "invalid_hotwords"),
]
# The same as query parameters: text only, hotwords in the "word[:boost], ..." syntax.
BAD_QUERIES: list[tuple[dict[str, str], str]] = [
    ({"decoder": "foo"}, "invalid_decoding"),
    ({"beam_width": "0"}, "invalid_decoding"),
    ({"beam_width": "65"}, "invalid_decoding"),
    ({"beam_width": "x"}, "invalid_decoding"),
    ({"hotwords": "Свет"}, "hotword_not_in_vocabulary"),
    ({"hotwords": "свет, svet"}, "hotword_not_in_vocabulary"),
    ({"hotwords": ",".join(["да"] * 101)}, "invalid_hotwords"),
    ({"hotwords": "свет, :3"}, "invalid_hotwords"),
    ({"hotwords": "свет:0"}, "invalid_hotwords"),
    ({"lm": "true"}, "lm_not_available"),
    ({"hotwords": "свет", "decoder": "greedy"}, "invalid_hotwords"),
]


@pytest.mark.parametrize(("fields", "code"), BAD_OPTIONS)
def test_bad_options_in_a_json_body_are_400s_with_stable_codes(
    api: Any, fields: dict[str, Any], code: str
) -> None:
    status, body = invoke(api, http_event(json_body(**fields)))
    assert (status, body["error"]["code"]) == (400, code), body
    assert code in stable_codes() and body["error"]["message"]


@pytest.mark.parametrize(("query", "code"), BAD_QUERIES)
def test_bad_options_in_the_query_are_400s_with_stable_codes(
    api: Any, query: dict[str, str], code: str
) -> None:
    status, body = invoke(api, raw_event(query))
    assert (status, body["error"]["code"]) == (400, code), body


def test_the_deployments_hotwords_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("HOTWORDS", "свет, кухне:3")
    hotwords = Settings.from_env().hotwords
    assert [h.text for h in hotwords] == ["свет", "кухне"] and hotwords[1] == Hotword("кухне", 3)
    monkeypatch.setenv("HOTWORDS", "")
    assert Settings.from_env().hotwords == ()
    for bad in ("свет:0", "свет:много", ",".join(["да"] * 101)):
        monkeypatch.setenv("HOTWORDS", bad)
        with pytest.raises(InvalidRequest):  # fails the init, as a bad S3_OUTPUT_FORMATS does
            Settings.from_env()


def test_the_deployments_hotwords_apply_unless_a_request_asks_for_greedy(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "settings", replace(api.settings, hotwords=parse_hotwords("свет")))
    status, body = invoke(api, http_event(json_body()))
    assert (status, body["text"], body["decoder"]) == (200, TEXT, "beam16+hotwords(1)")
    status, body = invoke(api, http_event(json_body(hotwords=["кухне", "свет"])))
    assert (status, body["decoder"]) == (200, "beam16+hotwords(2)")  # merged, by text
    status, body = invoke(api, http_event(json_body(decoder="greedy")))
    assert (status, body["text"], body["decoder"]) == (200, TEXT, "greedy")


def test_deployment_hotwords_the_model_cannot_write_fail_the_load(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment error, not the request's: a 500 (retried on the S3 path), never a 400."""
    monkeypatch.setattr(api, "settings", replace(api.settings, hotwords=parse_hotwords("Свет")))
    status, body = invoke(api, http_event(json_body()))
    assert (status, body["error"]["code"]) == (500, "internal_error")

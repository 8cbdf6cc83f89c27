"""Channel identification at every entry point: ``POST /transcribe`` (JSON fields and
query parameters), the OpenAI route (form fields; verbose_json carries the channel), jobs,
the S3 path (the deployment's ``CHANNELS`` and ``SPLIT_CHANNEL_PREFIXES``) and the CLI.

The call is tests/test_channel_split.py's: held-out demo clips as an 8 kHz two-sided call,
agent on channel 0 and client on channel 1, the client's first turn cutting into the
agent's. The transcriber core is tested there; here, that each route carries the options
through and refuses bad ones with stable codes.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import boto3
import numpy as np
import openai
import pytest
import soundfile
from asr.channels import ChannelOptions, deployment_channels
from asr.errors import InvalidRequest, stable_codes
from asr.transcribe import Transcriber
from asr_service.settings import Settings
from openai import OpenAI

from local.runtime import Handler, LocalEnvironment, call_handler, handler_in_environment
from local.server import ApiGatewayEmulator, serving_in_thread
from tests.test_channel_split import MANIFEST, SCRIPT, write_demo_call
from tests.test_handler import FakeContext, http_event, invoke, s3_event, serving
from tests.test_openai_route import expect_error

SPEAKERS = ("agent", "client")
# Each side's text, and the dialogue's turns in order.
SIDES = [" ".join(MANIFEST[clip]["text"] for c, clip, _ in SCRIPT if c == side) for side in (0, 1)]
TURNS = [(SPEAKERS[channel], MANIFEST[clip]["text"]) for channel, clip, _ in SCRIPT]
MONO = Path(__file__).resolve().parents[1] / "demo" / "audio" / MANIFEST[0]["audio_filepath"]


def short_passes(patcher: pytest.MonkeyPatch) -> None:
    """Every Transcriber the service builds takes passes of at most 4 s, as
    tests/test_channel_split.py's does: the 9 s call goes through the VAD path."""
    original = Transcriber.__init__

    def init(self: Transcriber, *args: Any, **kwargs: Any) -> None:
        kwargs["max_segment_seconds"] = kwargs.get("max_segment_seconds") or 4.0
        original(self, *args, **kwargs)

    patcher.setattr(Transcriber, "__init__", init)


@pytest.fixture(scope="module")
def call(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_call(tmp_path_factory.mktemp("call"))[0]


@pytest.fixture
def api(demo_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    short_passes(monkeypatch)
    yield from serving(Settings(model_dir=demo_bundle), monkeypatch)


def audio_body(path: Path, **fields: Any) -> str:
    return json.dumps({"audio": base64.b64encode(path.read_bytes()).decode(), **fields})


def assert_dialogue(transcript: dict[str, Any]) -> None:
    assert transcript["channel_mode"] == "split"
    assert [(s["speaker"], s["text"]) for s in transcript["segments"]] == TURNS
    assert [c["text"] for c in transcript["channels"]] == SIDES


def test_a_json_body_splits_the_call(api: Any, call: Path) -> None:
    status, body = invoke(api, http_event(audio_body(call, channels="split", speakers=SPEAKERS)))
    assert status == 200
    assert_dialogue(body)
    labels = body["results"]["channel_labels"]
    assert labels["number_of_channels"] == 2
    assert [c["channel_label"] for c in labels["channels"]] == ["ch_0", "ch_1"]


def test_a_raw_body_takes_channels_as_query_parameters(api: Any, call: Path) -> None:
    event = http_event(call.read_bytes(), content_type="audio/wav")
    query = {"channels": "split", "speakers": ",".join(SPEAKERS), "format": "text"}
    event["rawQueryString"] = urlencode(query)
    event["queryStringParameters"] = query
    response = api.lambda_handler(event, FakeContext())
    assert response["statusCode"] == 200
    assert response["body"] == "".join(f"{name}: {text}\n" for name, text in TURNS)


def test_without_the_option_a_stereo_call_is_down_mixed(api: Any, call: Path) -> None:
    status, body = invoke(api, http_event(audio_body(call)))
    assert (status, body["channel_mode"], body["channels"]) == (200, "mix", [])
    assert "speaker" not in body["segments"][0]


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"channels": "stereo"}, 400, "invalid_channels"),
        ({"channels": 2}, 400, "invalid_channels"),
        ({"speakers": ["a", "b"]}, 400, "invalid_channels"),  # names without a split
        ({"channels": "split", "speakers": ["a", "a"]}, 400, "invalid_channels"),
        ({"channels": "split", "speakers": ["a", "b", "c"]}, 400, "invalid_channels"),
        ({"channels": "split", "speakers": [""]}, 400, "invalid_channels"),
        ({"channels": "split", "speakers": {"a": 0}}, 400, "invalid_channels"),
        ({"channels": "split"}, 422, "audio_not_multichannel"),  # the mono clip
    ],
)
def test_bad_channel_requests_get_stable_codes(
    api: Any, fields: dict[str, Any], status: int, code: str
) -> None:
    got, body = invoke(api, http_event(audio_body(MONO, **fields)))
    assert (got, body["error"]["code"]) == (status, code)
    assert code in stable_codes()


def test_more_channels_than_the_cap_are_refused(api: Any, tmp_path: Path) -> None:
    samples, rate = soundfile.read(MONO, dtype="float32")
    three = tmp_path / "three.wav"
    soundfile.write(three, np.stack([samples, samples * 0.5, samples * 0.25], axis=1), rate)
    status, body = invoke(api, http_event(audio_body(three, channels="split")))
    assert (status, body["error"]["code"]) == (422, "audio_too_many_channels")
    status, body = invoke(api, http_event(audio_body(three)))  # down-mixed, as always
    assert (status, body["text"]) == (200, MANIFEST[0]["text"])


def test_the_deployment_default_splits_stereo_and_leaves_mono(
    demo_bundle: Path, monkeypatch: pytest.MonkeyPatch, call: Path
) -> None:
    short_passes(monkeypatch)
    settings = Settings(
        model_dir=demo_bundle, channels=deployment_channels("split", "agent,client")
    )
    for module in serving(settings, monkeypatch):
        status, body = invoke(module, http_event(audio_body(call)))
        assert status == 200
        assert_dialogue(body)
        status, body = invoke(module, http_event(audio_body(MONO)))
        assert (status, body["channel_mode"], body["text"]) == (200, "mix", MANIFEST[0]["text"])
        status, body = invoke(module, http_event(audio_body(call, channels="mix")))
        assert (status, body["channel_mode"]) == (200, "mix")  # a request may still mix


def test_settings_read_channels_speakers_and_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHANNELS", "split")
    monkeypatch.setenv("SPEAKERS", "оператор, клиент")
    monkeypatch.setenv("SPLIT_CHANNEL_PREFIXES", "calls, /support/")
    settings = Settings.from_env()
    assert settings.channels == ChannelOptions("split", ("оператор", "клиент"), required=False)
    assert settings.split_channel_prefixes == ("calls/", "support/")
    monkeypatch.setenv("CHANNELS", "stereo")
    with pytest.raises(InvalidRequest, match='"channels" must be one of'):
        Settings.from_env()


def test_split_prefixes_choose_per_key() -> None:
    settings = Settings(
        model_dir=Path("."),
        input_prefix="in/",
        channels=deployment_channels("mix", "agent, client"),
        split_channel_prefixes=("calls/",),
    )
    split = settings.channels_for_key("in/calls/2026/a.wav")
    assert split == ChannelOptions("split", SPEAKERS, required=False)
    assert settings.channels_for_key("in/lectures/a.wav").mode == "mix"
    assert settings.channels_for_key("calls/a.wav").mode == "mix"  # outside the input prefix


def test_s3_uploads_under_a_split_prefix_are_split(
    demo_bundle: Path, monkeypatch: pytest.MonkeyPatch, call: Path
) -> None:
    short_passes(monkeypatch)
    settings = Settings(
        model_dir=demo_bundle,
        output_bucket="out-bucket",
        channels=deployment_channels("mix", "agent,client"),
        split_channel_prefixes=("calls/",),
    )
    uploads = {"calls/a.wav": call, "other/a.wav": call, "calls/m.wav": MONO}
    for module in serving(settings, monkeypatch, ("in-bucket", "out-bucket")):
        s3 = boto3.client("s3", region_name="us-east-1")
        for key, path in uploads.items():
            s3.put_object(Bucket="in-bucket", Key=key, Body=path.read_bytes())
        module.lambda_handler(s3_event("in-bucket", *uploads), FakeContext())
        results = {key: _result(s3, key) for key in uploads}
    assert_dialogue(results["calls/a.wav"])
    assert results["other/a.wav"]["channel_mode"] == "mix"
    assert results["calls/m.wav"]["text"] == MANIFEST[0]["text"]  # mono: as it is


def _result(s3: Any, key: str) -> dict[str, Any]:
    body = s3.get_object(Bucket="out-bucket", Key=f"transcripts/{key}.json")["Body"].read()
    document: dict[str, Any] = json.loads(body)
    assert document["status"] == "done", document
    transcript: dict[str, Any] = document["transcript"]
    return transcript


@pytest.fixture(scope="module")
def openai_client(demo_bundle: Path) -> Iterator[OpenAI]:
    with pytest.MonkeyPatch.context() as patcher:
        short_passes(patcher)
        with handler_in_environment(LocalEnvironment(model_dir=demo_bundle)) as handler:
            emulator = ApiGatewayEmulator(0, lambda event: _call(handler, event), log=False)
            with serving_in_thread(emulator):
                url = f"{emulator.url}/v1"
                with OpenAI(base_url=url, api_key="unused", max_retries=0) as client:
                    yield client


def _call(handler: Handler, event: dict[str, Any]) -> dict[str, Any]:
    return call_handler(handler, event)


def test_openai_verbose_json_carries_the_channel_per_segment(
    openai_client: OpenAI, call: Path
) -> None:
    fields = {"channels": "split", "speakers": "agent, client"}
    result = openai_client.audio.transcriptions.create(
        model="whisper-1",
        file=call,
        response_format="verbose_json",
        timestamp_granularities=["segment", "word"],
        extra_body=fields,
    )
    segments = result.model_dump()["segments"]
    assert [(s["speaker"], s["text"]) for s in segments] == [(n, " " + t) for n, t in TURNS]
    assert [s["channel"] for s in segments] == [channel for channel, _, _ in SCRIPT]
    words = result.model_dump()["words"]
    assert {(w["channel"], w["speaker"]) for w in words} == {(0, "agent"), (1, "client")}
    text = openai_client.audio.transcriptions.create(
        model="whisper-1", file=call, response_format="text", extra_body=fields
    )
    assert text == "".join(f"{name}: {line}\n" for name, line in TURNS)


def test_openai_split_of_a_mono_file_is_refused(openai_client: OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        openai_client.audio.transcriptions.create(
            model="whisper-1", file=MONO, extra_body={"channels": "split"}
        )
    expect_error(refused.value, 422, "audio_not_multichannel", "channels")
    with pytest.raises(openai.BadRequestError) as refused_bad:
        openai_client.audio.transcriptions.create(
            model="whisper-1", file=MONO, extra_body={"channels": "both"}
        )
    expect_error(refused_bad.value, 400, "invalid_channels", "channels")


def test_the_cli_splits_stereo_files_and_reads_mono_ones_as_they_are(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    call: Path,
    tmp_path: Path,
) -> None:
    from asr.__main__ import main

    short_passes(monkeypatch)
    folder = tmp_path / "calls"
    folder.mkdir()
    shutil.copy(call, folder / "a-call.wav")
    shutil.copy(MONO, folder / "b-mono.wav")
    bundle = Path(__file__).resolve().parents[1] / "demo" / "bundle"
    argv = ["--bundle", str(bundle), "--no-progress", str(folder), "--json"]
    assert main([*argv, "--channels", "split", "--speakers", "agent, client"]) == 0
    split, mono = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert [(s["speaker"], s["text"]) for s in split["segments"]] == TURNS
    assert (mono["channel_mode"], mono["text"]) == ("mix", MANIFEST[0]["text"])
    assert main([*argv, "--speakers", "agent"]) == 2
    assert "--speakers name the channels" in capsys.readouterr().err

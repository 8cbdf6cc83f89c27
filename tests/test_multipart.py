"""The multipart/form-data parser behind the OpenAI-compatible route."""

from __future__ import annotations

import pytest
from asr.errors import stable_codes
from asr_service.multipart import (
    MAX_PART_HEADER_BYTES,
    FormPart,
    InvalidMultipart,
    parse_form,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3.filepost import encode_multipart_formdata

BOUNDARY = "xYz-123"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def form(*parts: str | bytes, close: bool = True) -> bytes:
    body = b"".join(
        f"--{BOUNDARY}\r\n".encode() + (p.encode() if isinstance(p, str) else p) + b"\r\n"
        for p in parts
    )
    return body + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def field(name: str, value: str) -> str:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.dictionaries(
        st.text(st.characters(codec="utf-8", exclude_characters='"\r\n\\'), min_size=1),
        st.binary(max_size=300),
        max_size=6,
    )
)
def test_forms_encoded_by_urllib3_parse_back(fields: dict[str, bytes]) -> None:
    files = {name: (f"{i}.wav", data, "audio/wav") for i, (name, data) in enumerate(fields.items())}
    body, content_type = encode_multipart_formdata(files)
    parsed = parse_form(body, content_type)
    assert [(p.name, p.data, p.filename, p.content_type) for p in parsed] == [
        (name, data, filename, kind) for name, (filename, data, kind) in files.items()
    ]


def test_binary_data_that_looks_like_a_boundary_is_kept() -> None:
    tricky = b"\r\n--xYz-12\r\n--xYz-1234-not-quite\r\n\r\n--"
    raw = b'Content-Disposition: form-data; name="file"; filename="a.bin"\r\n\r\n'
    (part,) = parse_form(form(raw + tricky), CONTENT_TYPE)
    assert part == FormPart(name="file", data=tricky, filename="a.bin")


def test_quoted_boundary_preamble_folded_and_rfc2231_names() -> None:
    body = b"preamble to ignore\r\n" + form(
        field("model", "whisper-1"),
        'Content-Disposition: form-data;\r\n name="file"; '
        "filename*=UTF-8''%D0%B7%D0%B2%D1%83%D0%BA.wav\r\n"
        "Content-Type: audio/wav\r\n\r\nRIFF",
    )
    parsed = parse_form(body, f'multipart/form-data; boundary="{BOUNDARY}"')
    assert [(p.name, p.filename, p.data) for p in parsed] == [
        ("model", None, b"whisper-1"),
        ("file", "звук.wav", b"RIFF"),
    ]
    assert parsed[0].text(100) == "whisper-1"


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (form(field("a", "1")), "multipart/form-data", "no valid boundary"),
        (form(field("a", "1")), f"multipart/mixed; boundary={BOUNDARY}", "expected a multipart"),
        (form(field("a", "1")), f"multipart/form-data; boundary={'b' * 71}", "no valid boundary"),
        (b"no boundary anywhere", CONTENT_TYPE, "does not contain"),
        (form(field("a", "1"), close=False), CONTENT_TYPE, "closing boundary"),
        (form("\r\nno headers"), CONTENT_TYPE, "no Content-Disposition"),
        (form('Content-Disposition: attachment; name="a"\r\n\r\n1'), CONTENT_TYPE, "form-data"),
        (form("Content-Disposition: form-data\r\n\r\n1"), CONTENT_TYPE, "no name"),
        (form("no colon here\r\n\r\n1"), CONTENT_TYPE, "malformed form part header"),
        (form("X-Big: " + "h" * MAX_PART_HEADER_BYTES + "\r\n\r\n1"), CONTENT_TYPE, "headers"),
        (form(*[field(f"f{i}", "v") for i in range(65)]), CONTENT_TYPE, "more than 64 parts"),
        (form(field("a", "1")).replace(b"\r\n", b"\n"), CONTENT_TYPE, "delimiter line"),
        (f"--{BOUNDARY}junk\r\n".encode() + form(field("a", "1")), CONTENT_TYPE, "delimiter"),
    ],
)
def test_malformed_forms_are_refused(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(InvalidMultipart, match=message) as refused:
        parse_form(body, content_type)
    assert refused.value.code == "invalid_multipart" and refused.value.http_status == 400
    assert "invalid_multipart" in stable_codes()


def test_text_fields_are_bounded_utf8() -> None:
    part = FormPart(name="prompt", data="привет".encode())
    assert part.text(12) == "привет"
    with pytest.raises(InvalidMultipart, match="longer than 11 bytes"):
        part.text(11)
    with pytest.raises(InvalidMultipart, match="not UTF-8"):
        FormPart(name="model", data=b"\xff").text(10)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=400), st.sampled_from([0, 1, 2]))
def test_arbitrary_bytes_parse_or_are_refused_cleanly(noise: bytes, framing: int) -> None:
    body = [noise, form(noise), form(field("a", "1")) + noise][framing]
    try:
        parts = parse_form(body, CONTENT_TYPE)
    except InvalidMultipart:
        return
    assert all(isinstance(p, FormPart) and p.name for p in parts)

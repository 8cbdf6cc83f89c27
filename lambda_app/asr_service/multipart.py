"""A small multipart/form-data parser (RFC 7578) for request bodies already in memory.

API Gateway hands the body over whole (base64-encoded for multipart), and its size is capped
before this runs, so parsing is a few ``bytes.find`` calls; what is bounded here is the
number of parts and the size of each part's headers. Malformed bodies raise
``InvalidMultipart`` (400 ``invalid_multipart``).
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import Final

from asr.errors import InvalidRequest

MAX_PARTS: Final = 64
MAX_PART_HEADER_BYTES: Final = 8192
MAX_BOUNDARY_CHARS: Final = 70  # RFC 2046
_CRLF: Final = b"\r\n"


class InvalidMultipart(InvalidRequest):
    """A body that says it is multipart/form-data and is not."""

    code = "invalid_multipart"


@dataclass(frozen=True)
class FormPart:
    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    def text(self, max_bytes: int) -> str:
        """The part as a text field: UTF-8 of at most ``max_bytes``."""
        if len(self.data) > max_bytes:
            raise InvalidMultipart(f'form field "{self.name}" is longer than {max_bytes} bytes')
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidMultipart(f'form field "{self.name}" is not UTF-8 text') from exc


def is_multipart_form(content_type: str) -> bool:
    return content_type.split(";", maxsplit=1)[0].strip().lower() == "multipart/form-data"


def boundary_of(content_type: str) -> bytes:
    header = Message()
    header["content-type"] = content_type
    if header.get_content_type() != "multipart/form-data":
        raise InvalidMultipart(
            f"expected a multipart/form-data body, got content type {content_type[:100]!r}"
        )
    boundary = header.get_boundary()
    if not boundary or len(boundary) > MAX_BOUNDARY_CHARS or not boundary.isascii():
        raise InvalidMultipart("the multipart/form-data content type has no valid boundary")
    return boundary.encode("ascii")


def parse_form(body: bytes, content_type: str, *, max_parts: int = MAX_PARTS) -> list[FormPart]:
    delimiter = b"--" + boundary_of(content_type)
    if body.startswith(delimiter):
        position = len(delimiter)
    else:  # a preamble before the first delimiter is allowed, and ignored
        found = body.find(_CRLF + delimiter)
        if found < 0:
            raise InvalidMultipart("the body does not contain the multipart boundary")
        position = found + len(_CRLF) + len(delimiter)
    parts: list[FormPart] = []
    while not body.startswith(b"--", position):  # "--" after a delimiter closes the body
        line_end = body.find(_CRLF, position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise InvalidMultipart("malformed multipart delimiter line")
        start = line_end + len(_CRLF)
        end = _next_delimiter(body, _CRLF + delimiter, start)
        if end < 0:
            raise InvalidMultipart("the multipart body ends without its closing boundary")
        if len(parts) == max_parts:
            raise InvalidMultipart(f"the form has more than {max_parts} parts")
        parts.append(_part(body[start:end]))
        position = end + len(_CRLF) + len(delimiter)
    return parts


def _next_delimiter(body: bytes, delimiter: bytes, start: int) -> int:
    """Where the next delimiter starts: CRLF--boundary followed by "--" or by the end of its
    line; the same bytes followed by anything else are data (a sender's careless boundary)."""
    found = body.find(delimiter, start)
    while found >= 0:
        after = found + len(delimiter)
        if body.startswith(b"--", after):
            return found
        line_end = body.find(_CRLF, after)
        if line_end >= 0 and not body[after:line_end].strip(b" \t"):
            return found
        found = body.find(delimiter, found + 1)
    return -1


def _part(raw: bytes) -> FormPart:
    if raw.startswith(_CRLF):
        raise InvalidMultipart("a form part has no Content-Disposition header")
    header_end = raw.find(_CRLF + _CRLF, 0, MAX_PART_HEADER_BYTES + 2 * len(_CRLF))
    if header_end < 0:
        raise InvalidMultipart(
            f"a form part's headers are malformed or longer than {MAX_PART_HEADER_BYTES} bytes"
        )
    headers = _headers(raw[:header_end].decode("utf-8", errors="replace"))
    data = raw[header_end + 2 * len(_CRLF) :]
    if headers.get_content_disposition() != "form-data":
        raise InvalidMultipart("a form part lacks Content-Disposition: form-data")
    name = headers.get_param("name", header="content-disposition")
    if not name:
        raise InvalidMultipart("a form part has no name")
    filename = headers.get_filename()
    return FormPart(
        name=collapse_rfc2231_value(name),
        data=data,
        filename=filename,
        content_type=headers.get("content-type"),
    )


def _headers(block: str) -> Message:
    headers = Message()
    name: str | None = None
    value = ""
    for line in block.split("\r\n"):
        if line[:1] in (" ", "\t") and name is not None:  # an obsolete folded continuation
            value += " " + line.strip()
            continue
        if name is not None:
            headers[name] = value
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise InvalidMultipart(f"malformed form part header line {line[:80]!r}")
        name, value = name.strip(), value.strip()
    if name is not None:
        headers[name] = value
    return headers

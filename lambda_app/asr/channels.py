"""Channel identification: each channel of a call transcribed on its own, as one dialogue.

Call centres record each side of a call on its own channel; down-mixing merges both
speakers into one text. ``ChannelOptions(mode="split")`` transcribes every channel through
the same path as a mono file (``Transcriber.transcribe``), labels its words and segments
with ``channel`` and ``speaker`` (the request's names, else ``ch_0``, ``ch_1``, … as Amazon
Transcribe's channel identification names them), and orders the turns of all channels by
time. A turn is a channel's run of words without a pause of ``TURN_GAP_SECONDS``; where
both sides speak at once, both turns are kept. A "stereo" file whose channels hold the same
signal (a mono source copied, within ``IDENTICAL_CHANNELS``) is transcribed once.

Request fields: ``channels`` ("mix", the default, or "split") and ``speakers`` (names in
channel order: a list, or "agent, client"); bad values are ``invalid_channels``. A request
that asks to split a mono file, or more channels than ``MAX_SPLIT_CHANNELS``, is refused;
a deployment's or an S3 prefix's split (``required=False``) down-mixes those instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from .errors import InvalidRequest
from .results import Segment
from .words import Word

ChannelMode = Literal["mix", "split"]
CHANNEL_MODES: Final[tuple[ChannelMode, ...]] = ("mix", "split")
REQUEST_FIELDS: Final = frozenset({"channels", "speakers"})
# Channels one split request may transcribe (each costs a full transcription).
MAX_SPLIT_CHANNELS: Final = 2
MAX_SPEAKER_CHARS: Final = 64
# Largest sample difference between channels still taken as one signal copied (-80 dBFS:
# below 16-bit PCM's rounding of a real second voice).
IDENTICAL_CHANNELS: Final = 1e-4
TURN_GAP_SECONDS: Final = 1.0


@dataclass(frozen=True)
class ChannelOptions:
    mode: ChannelMode = "mix"
    speakers: tuple[str, ...] = ()  # names in channel order; the rest are ch_<n>
    # A request's split refuses audio it cannot split; a deployment's default down-mixes it.
    required: bool = True

    def speaker(self, channel: int) -> str:
        if channel < len(self.speakers):
            return self.speakers[channel]
        return f"ch_{channel}"


MIX: Final = ChannelOptions()


def parse_channel_options(
    fields: Mapping[str, Any], default: ChannelOptions = MIX
) -> ChannelOptions:
    """``channels``/``speakers`` from a JSON body, form, query or CLI; without a
    ``channels`` field, ``default`` (the deployment's). Channels split without
    ``speakers`` keep the default's names."""
    mode = fields.get("channels")
    speakers = _speakers(fields.get("speakers"))
    if mode is None or mode == "":
        chosen = default
    elif not isinstance(mode, str) or mode.strip().lower() not in CHANNEL_MODES:
        raise _invalid(f'"channels" must be one of {", ".join(CHANNEL_MODES)}')
    else:
        chosen = MIX if mode.strip().lower() == "mix" else ChannelOptions("split", default.speakers)
    if speakers:
        if chosen.mode != "split":
            raise _invalid('"speakers" name the channels of "channels": "split"')
        chosen = replace(chosen, speakers=speakers)
    return chosen


def deployment_channels(mode: str, speakers: str = "") -> ChannelOptions:
    """The ``CHANNELS``/``SPEAKERS`` settings: split where a file has channels to split.
    ``speakers`` also name the channels of the S3 prefixes split under a "mix" default."""
    chosen = parse_channel_options({"channels": mode})
    return ChannelOptions(chosen.mode, _speakers(speakers), required=False)


def _speakers(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid('"speakers" must be a list of names or "name, name"')
    names = tuple(v.strip() for v in value)
    if len(names) > MAX_SPLIT_CHANNELS:
        raise _invalid(f"at most {MAX_SPLIT_CHANNELS} speakers (one per channel)")
    for name in names:
        if not name or len(name) > MAX_SPEAKER_CHARS or not name.isprintable():
            raise _invalid(f"a speaker name must be 1-{MAX_SPEAKER_CHARS} printable characters")
    if len(set(names)) != len(names):
        raise _invalid("speaker names must differ")
    return names


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_channels")


def turns(channel: int, speaker: str, words: Sequence[Word]) -> list[Segment]:
    """A channel's words (in time order) cut at pauses into segments, all labelled with
    the channel and speaker."""
    labelled = [replace(word, channel=channel, speaker=speaker) for word in words]
    runs: list[list[Word]] = []
    for word in labelled:
        if not runs or word.start - runs[-1][-1].end >= TURN_GAP_SECONDS:
            runs.append([])
        runs[-1].append(word)
    return [
        Segment(
            run[0].start,
            run[-1].end,
            " ".join(word.text for word in run),
            tuple(run),
            channel=channel,
            speaker=speaker,
        )
        for run in runs
    ]


def dialogue(per_channel: Sequence[Sequence[Segment]]) -> list[Segment]:
    """Every channel's turns in order of their start (ties: the lower channel first)."""
    return sorted((t for ts in per_channel for t in ts), key=lambda t: (t.start, t.channel or 0))

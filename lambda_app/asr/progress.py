"""The CLI's progress display on stderr: a tqdm bar when tqdm is installed, else a counter.

tqdm is a CLI/dev extra (requirements-dev.txt), imported only here and only when a bar is
wanted, so the Lambda runtime and its layer never need it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, TextIO


class Progress(Protocol):
    def advance(self) -> None: ...

    def message(self, text: str) -> None:
        """Print a line without garbling the display."""

    def close(self) -> None: ...


class _Silent:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def advance(self) -> None:
        pass

    def message(self, text: str) -> None:
        print(text, file=self._stream, flush=True)

    def close(self) -> None:
        pass


class _Counter:
    """``done/total`` rewritten in place."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self._done, self._total, self._stream = 0, total, stream
        self._show()

    def _show(self) -> None:
        self._stream.write(f"\r{self._done}/{self._total} files")
        self._stream.flush()

    def advance(self) -> None:
        self._done += 1
        self._show()

    def message(self, text: str) -> None:
        self._stream.write("\r\033[K" + text + "\n")
        self._show()

    def close(self) -> None:
        self._stream.write("\n")
        self._stream.flush()


class _Bar:
    def __init__(self, total: int, stream: TextIO) -> None:
        from tqdm import tqdm  # noqa: PLC0415 - a CLI extra, absent from the Lambda layer

        self._tqdm = tqdm
        self._bar = tqdm(total=total, file=stream, unit="file", dynamic_ncols=True)
        self._stream = stream

    def advance(self) -> None:
        self._bar.update(1)

    def message(self, text: str) -> None:
        self._tqdm.write(text, file=self._stream)

    def close(self) -> None:
        self._bar.close()


class ProgressDisplay:
    """``with ProgressDisplay(total, stream, enabled) as progress: ...``"""

    def __init__(self, total: int, stream: TextIO, *, enabled: bool) -> None:
        self.display: Progress
        if not enabled:
            self.display = _Silent(stream)
            return
        try:
            self.display = _Bar(total, stream)
        except ImportError:
            self.display = _Counter(total, stream)

    def __enter__(self) -> Progress:
        return self.display

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.display.close()

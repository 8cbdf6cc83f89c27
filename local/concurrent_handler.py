"""The handler invoked from many threads at once, all sharing one warm model.

Lambda gives a container one invocation at a time, and Powertools relies on it: the
request being served lives in process-wide places. The resolvers' ``current_event`` and
``lambda_context`` are class attributes of ``BaseRouter`` (``resolve`` assigns them there),
each resolver's ``context`` dict is cleared when any ``resolve`` ends, and Logger's keys are
shared. Measured on this handler with 100 threads calling it at once: 99 responses carried
another request's ``request_id`` and one carried another request's transcript.

So the handler's own code runs one invocation at a time behind a gate, and the gate opens
while the shared Transcriber transcribes: decoding, features and onnxruntime (whose
``InferenceSession.run`` is thread-safe) hold no per-request state and are where the time
goes, so they run in parallel. An invocation saves the Powertools request state before it
opens the gate and restores it after, so what the handler reads once the transcript is back
(the request id, the event the response is built for) is its own. Metrics are added and
flushed with the gate held; a metric added before transcribing could be flushed with
another invocation's, never lost.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asr.results import Transcript
from asr.transcribe import Transcriber
from asr_service import model_cache
from asr_service.settings import Settings
from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver, BaseRouter

from . import LAMBDA_APP
from .runtime import Handler, LocalContext

# Class attributes of BaseRouter that ``resolve`` sets for the request it serves.
_ROUTER_STATE = ("current_event", "lambda_context")
_UNSET = object()


class _Gate:
    """A lock that knows whether the calling thread holds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder = threading.local()

    @property
    def held_here(self) -> bool:
        return bool(getattr(self._holder, "held", False))

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            self._holder.held = True
            try:
                yield
            finally:
                self._holder.held = False

    @contextlib.contextmanager
    def opened(self) -> Iterator[None]:
        """Let other invocations in for a while; the caller must hold the gate."""
        self._holder.held = False
        self._lock.release()
        try:
            yield
        finally:
            self._lock.acquire()
            self._holder.held = True


@dataclass(frozen=True)
class _Powertools:
    """The function's resolvers and loggers: module-level objects of its code directory."""

    resolvers: list[ApiGatewayResolver]
    loggers: list[Logger]

    @classmethod
    def of_function(cls) -> _Powertools:
        found: dict[int, Any] = {}
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if path and Path(path).resolve().is_relative_to(LAMBDA_APP):
                for value in vars(module).values():
                    if isinstance(value, ApiGatewayResolver | Logger):
                        found[id(value)] = value
        return cls(
            resolvers=[v for v in found.values() if isinstance(v, ApiGatewayResolver)],
            loggers=[v for v in found.values() if isinstance(v, Logger)],
        )


@dataclass(frozen=True)
class _RequestState:
    router: dict[str, Any]
    resolver_contexts: list[tuple[dict[str, Any], dict[str, Any]]]
    log_keys: list[tuple[Logger, dict[str, Any]]]

    @classmethod
    def save(cls, powertools: _Powertools) -> _RequestState:
        router = {name: BaseRouter.__dict__.get(name, _UNSET) for name in _ROUTER_STATE}
        return cls(
            router=router,
            resolver_contexts=[(r.context, dict(r.context)) for r in powertools.resolvers],
            log_keys=[(log, dict(log.get_current_keys())) for log in powertools.loggers],
        )

    def restore(self) -> None:
        for name, value in self.router.items():
            if value is _UNSET:
                if name in BaseRouter.__dict__:
                    delattr(BaseRouter, name)
            else:
                setattr(BaseRouter, name, value)
        for context, saved in self.resolver_contexts:
            context.clear()
            context.update(saved)
        for logger, keys in self.log_keys:
            logger.remove_keys([key for key in logger.get_current_keys() if key not in keys])
            logger.append_keys(**keys)


class ConcurrentHandler:
    """``handler`` callable from many threads; see the module docstring.

    Use it as a context manager: inside, the shared ``transcriber`` opens the gate while it
    transcribes, and what the handler prints goes to stderr (as ``call_handler`` does per
    call, which is not safe from several threads).
    """

    def __init__(self, handler: Handler, transcriber: Transcriber) -> None:
        self._handler = handler
        self._powertools = _Powertools.of_function()
        self._transcriber = transcriber
        self._transcribe = transcriber.transcribe
        self._gate = _Gate()
        self._stdout = contextlib.redirect_stdout(sys.stderr)
        self._shadowed: Any = None

    def __call__(
        self, event: dict[str, Any], context: LocalContext | None = None
    ) -> dict[str, Any]:
        with self._gate.held():
            return self._handler(event, LocalContext() if context is None else context)

    def __enter__(self) -> ConcurrentHandler:
        self._stdout.__enter__()
        # An instance attribute: the handler reaches this Transcriber through model_cache.
        self._shadowed = vars(self._transcriber).get("transcribe")
        setattr(self._transcriber, "transcribe", self._transcribe_with_gate_open)  # noqa: B010
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._shadowed is None:
            vars(self._transcriber).pop("transcribe", None)
        else:
            setattr(self._transcriber, "transcribe", self._shadowed)  # noqa: B010
        self._stdout.__exit__(None, None, None)

    def _transcribe_with_gate_open(self, *args: Any, **kwargs: Any) -> Transcript:
        if not self._gate.held_here:  # called from outside an invocation
            return self._transcribe(*args, **kwargs)
        state = _RequestState.save(self._powertools)
        try:
            with self._gate.opened():
                return self._transcribe(*args, **kwargs)
        finally:
            state.restore()


def warm_transcriber() -> Transcriber:
    """The Transcriber the handler will use (loaded now if it is not yet): the environment
    must be the handler's (``runtime.load_handler`` sets it)."""
    return model_cache.get_transcriber(Settings.from_env())

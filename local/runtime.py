"""Import ``handler`` the way Lambda would: environment first, then the module.

``handler`` reads its settings once, at import (``Settings.from_env()``), so the environment
must be in place before the first import; a later call with different settings re-imports
it (a new "container") and drops the cached model.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from asr_service import model_cache
from asr_service.settings import Settings
from aws_lambda_powertools.utilities.typing import LambdaContext

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]

DEFAULT_INPUT_BUCKET = "asr-local-input"
DEFAULT_OUTPUT_BUCKET = "asr-local-output"
DEFAULT_REGION = "us-east-1"
FUNCTION_NAME = "asr-local"

# Used only where the user has not set them: no EMF metric blobs and fewer log lines
# mixed into the tool's output. Set POWERTOOLS_METRICS_DISABLED=false to see the metrics.
QUIET_DEFAULTS = {
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_SERVICE_NAME": "asr",
    "AWS_DEFAULT_REGION": DEFAULT_REGION,
}


@dataclass(frozen=True)
class LocalEnvironment:
    """What template.yaml sets on the deployed function, with local values."""

    model_dir: Path
    output_bucket: str = DEFAULT_OUTPUT_BUCKET
    output_prefix: str = "transcripts/"

    def variables(self) -> dict[str, str]:
        return {
            "MODEL_DIR": str(self.model_dir),
            "OUTPUT_BUCKET": self.output_bucket,
            "OUTPUT_PREFIX": self.output_prefix,
        }


class LocalContext(LambdaContext):
    """A Lambda context: request id, function identity and a running deadline."""

    def __init__(
        self,
        *,
        timeout_s: float = 900.0,
        memory_mb: int = 1769,
        request_id: str | None = None,
        function_name: str = FUNCTION_NAME,
    ) -> None:
        region = os.environ.get("AWS_DEFAULT_REGION", DEFAULT_REGION)
        self._function_name = function_name
        self._function_version = "$LATEST"
        self._invoked_function_arn = (
            f"arn:aws:lambda:{region}:123456789012:function:{function_name}"
        )
        self._memory_limit_in_mb = memory_mb
        self._aws_request_id = request_id or str(uuid.uuid4())
        self._log_group_name = f"/aws/lambda/{function_name}"
        self._log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]local")
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def apply_environment(environment: LocalEnvironment) -> None:
    os.environ.update(environment.variables())
    for name, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(name, value)


def load_handler(environment: LocalEnvironment) -> Handler:
    """``handler.lambda_handler``, imported (or re-imported) under ``environment``."""
    apply_environment(environment)
    module = sys.modules.get("handler")
    if module is None or getattr(module, "settings", None) != Settings.from_env():
        model_cache.reset()
        module = importlib.import_module("handler") if module is None else importlib.reload(module)
    return cast(Handler, module.lambda_handler)


@contextlib.contextmanager
def handler_in_environment(environment: LocalEnvironment) -> Iterator[Handler]:
    """The handler imported under ``environment``; afterwards the process environment is as
    it was and ``handler`` is a fresh import under it (tests switch bundles this way)."""
    names = [*environment.variables(), *QUIET_DEFAULTS]
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield load_handler(environment)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        model_cache.reset()
        if "handler" in sys.modules:
            importlib.reload(sys.modules["handler"])


def call_handler(handler: Handler, event: dict[str, Any]) -> dict[str, Any]:
    """One invocation with a fresh context. What the function prints (its logs, EMF metrics)
    goes to stderr, as it would go to CloudWatch rather than into the response."""
    with contextlib.redirect_stdout(sys.stderr):
        return handler(event, LocalContext())

"""Init-time model loading, safe under SnapStart snapshot and restore.

With SnapStart, Lambda runs the init phase once per published version, snapshots the
memory, and starts every cold sandbox from that snapshot. So init is where the model
should load (the snapshot then holds the ready ONNX Runtime session), and nothing made in
init may assume it runs only once or in the sandbox that uses it:

* network connections (boto3 clients' pools) would be stale or shared: clients are made
  lazily and dropped after restore (``register_after_restore``);
* uniqueness (request ids, temp names) must come from the OS after restore: we keep no
  random state from init, and temp files are made per request (``tempfile``), never in init;
* /tmp is not part of the snapshot: the model is only preloaded from the layer (/opt), never
  from the /tmp copy of an S3 bundle (SnapStart is off for those in template.yaml).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from .settings import Settings

# Set by Lambda for every init: "on-demand", "provisioned-concurrency" or "snap-start".
INIT_TYPE_ENV = "AWS_LAMBDA_INITIALIZATION_TYPE"


def should_preload(settings: Settings, environ: Mapping[str, str] = os.environ) -> bool:
    """Load the model during init: in Lambda, from a bundle that ships with the function.

    A bundle from S3 loads at the first request instead: its download can outlast the
    10 s init phase of on-demand functions, and /tmp is not snapshotted.
    """
    return bool(environ.get(INIT_TYPE_ENV)) and not settings.model_s3_uri


def register_after_restore(*callbacks: Callable[[], object]) -> bool:
    """Run ``callbacks`` after each SnapStart restore; False outside a SnapStart runtime.

    ``snapshot_restore_py`` is part of Lambda's Python runtime (3.12+), not a package we ship.
    """
    try:
        from snapshot_restore_py import (  # type: ignore[import-not-found]  # noqa: PLC0415
            register_after_restore as register,
        )
    except ImportError:
        return False
    for callback in callbacks:
        register(callback)
    return True

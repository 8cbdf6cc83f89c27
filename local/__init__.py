"""Developer tooling to run the Lambda handler on this machine (not shipped to Lambda).

    python -m local invoke EVENT.json [--audio FILE] [--bucket B] [--key K] [--bundle DIR]
    python -m local serve [--port 3000] [--bundle DIR] [--upload FILE ...]
    python -m local demo [--bundle demo/bundle] [--manifest demo/audio/manifest.jsonl]

The handler runs in this process with a fake Lambda context; S3 is moto's in-process fake,
so nothing here talks to AWS. ``lambda_app/`` (the function's code directory) is put on
``sys.path`` the way Lambda puts /var/task there.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LAMBDA_APP = REPO_ROOT / "lambda_app"
EVENTS_DIR = REPO_ROOT / "events"


def ensure_lambda_app_importable() -> None:
    if str(LAMBDA_APP) not in sys.path:
        sys.path.insert(0, str(LAMBDA_APP))


# The modules of this package import lambda_app's packages (asr, asr_service) at the top.
ensure_lambda_app_importable()

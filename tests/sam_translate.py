"""Run the SAM transform on template.yaml offline, as CloudFormation would at deploy time.

Runs inside the SAM CLI's virtualenv (.tools/sam), which has samtranslator:

    .tools/sam/bin/python tests/sam_translate.py template.yaml '{"ApiAuth": "JWT"}' > out.json

Local CodeUri/ContentUri paths become S3 URIs first, as `sam package` would make them. The
managed policies SAM may attach are resolved from a fixed table instead of IAM (no network).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from samtranslator.translator.transform import transform  # type: ignore[import-not-found,import-untyped,unused-ignore]
from samtranslator.yaml_helper import yaml_parse  # type: ignore[import-not-found,import-untyped,unused-ignore]

MANAGED_POLICIES = {
    "AWSLambdaBasicExecutionRole": (
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    ),
    "AWSXrayWriteOnlyAccess": "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}


class _PolicyLoader:
    def load(self) -> dict[str, str]:
        return MANAGED_POLICIES


def translate(template_text: str, parameters: dict[str, Any]) -> dict[str, Any]:
    template = yaml_parse(template_text)
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = f"s3://packaged-artifacts/{key}"
    translated: dict[str, Any] = transform(template, parameters, _PolicyLoader())
    return translated


def main() -> None:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    parameters = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    json.dump(translate(text, parameters), sys.stdout, indent=1)


if __name__ == "__main__":
    main()

"""template.yaml's security posture and wiring, checked statically and after the SAM transform.

The template is read with its short-form intrinsics (!Ref, !Sub, !If ...) as plain dicts; the
parameter-dependent parts are checked by resolving the conditions for each deployment
variant (API auth mode x model source) the way CloudFormation would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asr_service.job_store import JOBS_SEGMENT

from bench.memory import MALLOC_TUNED
from tests.cfn_yaml import load_template

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template.yaml"
SAM_PYTHON = REPO / ".tools" / "sam" / "bin" / "python"
CFN_LINT = REPO / ".tools" / "sam" / "bin" / "cfn-lint"
NO_VALUE = {"Ref": "AWS::NoValue"}
VARIANTS = [
    {"ApiAuth": "IAM", "ModelS3Uri": ""},
    {"ApiAuth": "JWT", "ModelS3Uri": "", "JwtIssuer": "https://issuer.example"},
    {"ApiAuth": "API_KEY", "ModelS3Uri": "s3://models-bucket/gigaam/v3/"},
    {
        "ApiAuth": "IAM",
        "ModelS3Uri": "s3://models-bucket/gigaam/v3/",
        "SnapStart": "Enabled",
        "EmotionModelS3Uri": "s3://models-bucket/gigaam/emo/",
    },
]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


# --- resolving conditions for one set of parameter values


class Deployment:
    """The template as CloudFormation would create it for ``overrides``."""

    def __init__(self, template: dict[str, Any], overrides: dict[str, str]) -> None:
        self.parameters = {
            name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()
        }
        self.parameters.update(overrides)
        self._conditions_src = template["Conditions"]
        self.conditions: dict[str, bool] = {}
        for name in self._conditions_src:
            self.conditions[name] = self._condition(name)
        self.resources = {
            name: self.resolve(resource)
            for name, resource in template["Resources"].items()
            if "Condition" not in resource or self.conditions[resource["Condition"]]
        }

    def _condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self._evaluate(self._conditions_src[name]))
        return self.conditions[name]

    def _evaluate(self, node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((key, value),) = node.items()
            if key == "Condition":
                return self._condition(value)
            if key == "Fn::Equals":
                return self._evaluate(value[0]) == self._evaluate(value[1])
            if key == "Fn::Not":
                return not self._evaluate(value[0])
            if key == "Fn::And":
                return all(self._evaluate(v) for v in value)
            if key == "Ref" and value in self.parameters:
                return self.parameters[value]
        return node

    def resolve(self, node: Any) -> Any:
        """Replace Fn::If by its chosen branch and drop AWS::NoValue, recursively."""
        if isinstance(node, dict):
            if set(node) == {"Fn::If"}:
                name, yes, no = node["Fn::If"]
                return self.resolve(yes if self.conditions[name] else no)
            resolved = {k: self.resolve(v) for k, v in node.items()}
            return {k: v for k, v in resolved.items() if v != NO_VALUE}
        if isinstance(node, list):
            return [r for r in (self.resolve(v) for v in node) if r != NO_VALUE]
        return node

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == kind}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(deployment: Deployment) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement the stack grants its own roles."""
    for name, resource in deployment.resources.items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            for policy in _as_list(props.get("Policies", [])):
                # Inline statements only: a managed policy or SAM policy template
                # (S3CrudPolicy, AmazonS3FullAccess ...) would hide what is granted.
                assert isinstance(policy, dict) and set(policy) == {"Statement"}, (name, policy)
                for statement in policy["Statement"]:
                    yield name, statement
        elif resource["Type"] in {"AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}:
            documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
            documents += [props["PolicyDocument"]] if "PolicyDocument" in props else []
            for document in documents:
                yield from ((name, s) for s in document["Statement"])


def _variant_id(overrides: dict[str, str]) -> str:
    emotion = "-emotion" if overrides.get("EmotionModelS3Uri") else ""
    return f"{overrides['ApiAuth']}-{'s3' if overrides['ModelS3Uri'] else 'layer'}-model{emotion}"


@pytest.fixture(scope="module", params=VARIANTS, ids=_variant_id)
def deployment(request: pytest.FixtureRequest, template: dict[str, Any]) -> Deployment:
    return Deployment(template, request.param)


# --- IAM: least privilege


def test_no_allow_statement_uses_a_wildcard_action(deployment: Deployment) -> None:
    statements = list(_statements(deployment))
    assert statements
    for name, statement in statements:
        assert "NotAction" not in statement and "NotResource" not in statement, name
        if statement["Effect"] == "Allow":
            for action in _as_list(statement["Action"]):
                assert "*" not in action, f"{name} grants wildcard action {action}"
                assert action.split(":")[0] in {"s3", "sqs", "dynamodb"}, action


def test_object_access_is_scoped_to_the_configured_buckets_and_prefixes(
    deployment: Deployment,
) -> None:
    granted: dict[str, list[Any]] = {}
    for _, statement in _statements(deployment):
        assert statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"]):
            granted.setdefault(action, []).extend(_as_list(statement["Resource"]))
    s3_reads: list[Any] = [
        {"Fn::Sub": "${InputBucket.Arn}/${InputPrefix}*"},
        # Results are read back for GET /jobs/{id} (inline transcript, presigned result URLs).
        {"Fn::Sub": "${OutputBucket.Arn}/${OutputPrefix}*"},
    ]
    for uri in ("ModelS3Uri", "EmotionModelS3Uri"):
        if deployment.parameters.get(uri):
            # CloudFormation's Select [1, Split ["s3://", uri]]: "bucket/prefix/" of the URI.
            path = {"Fn::Select": [1, {"Fn::Split": ["s3://", {"Ref": uri}]}]}
            s3_reads.append(
                {"Fn::Sub": ["arn:${AWS::Partition}:s3:::${BundlePath}*", {"BundlePath": path}]}
            )
    assert granted.pop("s3:GetObject") == s3_reads
    # Presigned job upload forms are authorised by this grant: job uploads only.
    assert granted.pop("s3:PutObject") == [
        {"Fn::Sub": "${OutputBucket.Arn}/${OutputPrefix}*"},
        {"Fn::Sub": f"${{InputBucket.Arn}}/${{InputPrefix}}{JOBS_SEGMENT}*"},
    ]
    tables = [{"Fn::GetAtt": [t, "Arn"]} for t in ("IdempotencyTable", "JobsTable")]
    assert granted.pop("dynamodb:DeleteItem") == tables[:1]  # job records only expire
    for action, resources in granted.items():
        if action.startswith("sqs:"):
            assert resources == [{"Fn::GetAtt": ["UploadQueue", "Arn"]}], action
        else:
            assert action in {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}
            assert resources == tables, action


# --- storage and queues: encrypted, private, TLS only


def _deny_plain_transport(policy: dict[str, Any], resources: list[Any]) -> None:
    denies = [
        s
        for s in policy["Statement"]
        if s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    ]
    assert len(denies) == 1
    assert denies[0]["Resource"] == resources


def test_buckets_are_separate_encrypted_private_and_tls_only(deployment: Deployment) -> None:
    buckets = deployment.of_type("AWS::S3::Bucket")
    assert set(buckets) == {"InputBucket", "OutputBucket"}
    policies = {
        p["Properties"]["Bucket"]["Ref"]: p["Properties"]["PolicyDocument"]
        for p in deployment.of_type("AWS::S3::BucketPolicy").values()
    }
    for name, bucket in buckets.items():
        props = bucket["Properties"]
        sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert sse == [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}], name
        block = props["PublicAccessBlockConfiguration"]
        assert len(block) == 4 and all(block.values()), name
        _deny_plain_transport(
            policies[name], [{"Fn::GetAtt": [name, "Arn"]}, {"Fn::Sub": f"${{{name}.Arn}}/*"}]
        )
    # Results go to the other bucket, which notifies nobody: no output can re-trigger.
    assert "NotificationConfiguration" not in buckets["OutputBucket"]["Properties"]
    env = deployment.resources["AsrFunction"]["Properties"]["Environment"]["Variables"]
    assert env["OUTPUT_BUCKET"] == {"Ref": "OutputBucket"}


def test_uploads_reach_the_function_through_a_queue_with_a_dead_letter_queue(
    deployment: Deployment,
) -> None:
    resources = deployment.resources
    (notification,) = resources["InputBucket"]["Properties"]["NotificationConfiguration"][
        "QueueConfigurations"
    ]
    assert notification["Event"] == "s3:ObjectCreated:*"
    assert notification["Queue"] == {"Fn::GetAtt": ["UploadQueue", "Arn"]}
    assert notification["Filter"]["S3Key"]["Rules"] == [
        {"Name": "prefix", "Value": {"Ref": "InputPrefix"}}
    ]
    # The bucket validates its notification target on creation: the policy must exist first.
    assert resources["InputBucket"]["DependsOn"] == "UploadQueuePolicy"

    queue = resources["UploadQueue"]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["UploadDeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "MaxReceiveCount"},
    }
    for name in ("UploadQueue", "UploadDeadLetterQueue"):
        props = resources[name]["Properties"]
        assert props["SqsManagedSseEnabled"] is True, name
        assert props["MessageRetentionPeriod"] == 1209600, name  # 14 days: nothing expires

    policy = resources["UploadQueuePolicy"]["Properties"]["PolicyDocument"]
    (allow,) = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"}
    assert allow["Action"] == "sqs:SendMessage"
    bucket_arn = allow["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    bucket_name = resources["InputBucket"]["Properties"]["BucketName"]["Fn::Sub"]
    assert bucket_arn == "arn:${AWS::Partition}:s3:::" + bucket_name
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    _deny_plain_transport(
        policy,
        [
            {"Fn::GetAtt": ["UploadQueue", "Arn"]},
            {"Fn::GetAtt": ["UploadDeadLetterQueue", "Arn"]},
        ],
    )

    mapping = resources["UploadQueueMapping"]["Properties"]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["UploadQueue", "Arn"]}
    assert mapping["FunctionName"] == {"Ref": "AsrFunction.Alias"}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]

    alarm = resources["DeadLetterAlarm"]["Properties"]
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["UploadDeadLetterQueue", "QueueName"]}}
    ]
    assert (alarm["MetricName"], alarm["Threshold"]) == ("ApproximateNumberOfMessagesVisible", 0)


def test_idempotency_table_matches_what_the_function_expects(deployment: Deployment) -> None:
    table = deployment.resources["IdempotencyTable"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    env = deployment.resources["AsrFunction"]["Properties"]["Environment"]["Variables"]
    assert env["IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}


def test_jobs_table_matches_what_the_function_expects(deployment: Deployment) -> None:
    table = deployment.resources["JobsTable"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": "job_id", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    env = deployment.resources["AsrFunction"]["Properties"]["Environment"]["Variables"]
    assert env["JOBS_TABLE"] == {"Ref": "JobsTable"}
    # A job is marked failed on the delivery the queue will not repeat.
    assert env["MAX_RECEIVE_COUNT"] == {"Ref": "MaxReceiveCount"}
    redrive = deployment.resources["UploadQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == env["MAX_RECEIVE_COUNT"]


# --- the API: authenticated in every variant


def test_every_api_route_requires_authentication(deployment: Deployment) -> None:
    auth = deployment.parameters["ApiAuth"]
    routes = deployment.of_type("AWS::ApiGatewayV2::Route")
    methods = deployment.of_type("AWS::ApiGateway::Method")
    permissions = deployment.of_type("AWS::Lambda::Permission")
    assert len(permissions) == 1
    (permission,) = permissions.values()
    assert permission["Properties"]["FunctionName"] == {"Ref": "AsrFunction.Alias"}
    if auth == "API_KEY":
        assert not routes and methods
        for method in methods.values():
            assert method["Properties"]["ApiKeyRequired"] is True
        assert deployment.of_type("AWS::ApiGateway::UsagePlanKey")
        return
    assert routes and not methods
    authorizers = deployment.of_type("AWS::ApiGatewayV2::Authorizer")
    for route in routes.values():
        props = route["Properties"]
        if auth == "IAM":
            assert props["AuthorizationType"] == "AWS_IAM"
            assert "AuthorizerId" not in props and not authorizers
        else:
            assert props["AuthorizationType"] == "JWT"
            assert props["AuthorizerId"] == {"Ref": "HttpApiJwtAuthorizer"}
            (authorizer,) = authorizers.values()
            config = authorizer["Properties"]["JwtConfiguration"]
            assert config == {"Issuer": {"Ref": "JwtIssuer"}, "Audience": {"Ref": "JwtAudience"}}


def test_the_default_deployment_uses_iam_auth(template: dict[str, Any]) -> None:
    assert template["Parameters"]["ApiAuth"]["Default"] == "IAM"


# --- the function: model source, SnapStart, tracing


def test_function_wiring(deployment: Deployment) -> None:
    function = deployment.resources["AsrFunction"]["Properties"]
    from_layer = not deployment.parameters["ModelS3Uri"]
    assert (function["Handler"], function["Runtime"]) == ("handler.lambda_handler", "python3.12")
    assert function["CodeUri"] == "lambda_app/"
    assert function["Architectures"] == [{"Ref": "Architecture"}]
    layers = [{"Ref": "RuntimeDepsLayer"}, {"Ref": "FfmpegLayer"}]
    assert function["Layers"] == layers + ([{"Ref": "ModelLayer"}] if from_layer else [])
    assert ("ModelLayer" in deployment.resources) == from_layer
    # SnapStart snapshots the loaded model: only with the model in the zip (and /tmp <= 512 MB).
    snap = deployment.parameters["SnapStart"] == "Enabled" and from_layer
    assert function["SnapStart"] == {"ApplyOn": "PublishedVersions" if snap else "None"}
    assert function["AutoPublishAlias"] == "live"
    assert function["EphemeralStorage"]["Size"] == (512 if snap else {"Ref": "EphemeralStorageMB"})
    env = function["Environment"]["Variables"]
    assert env["MODEL_DIR"] == "/opt/model"
    assert env["MODEL_S3_URI"] == {"Ref": "ModelS3Uri"}
    assert env["ASR_FFMPEG_PATH"] == "/opt/bin/ffmpeg"
    assert {"MALLOC_MMAP_THRESHOLD_": env["MALLOC_MMAP_THRESHOLD_"]} == MALLOC_TUNED
    assert function["Tracing"] == {"Ref": "Tracing"}
    assert "Events" not in function  # entry points are the API and the queue mapping, on the alias


def test_every_environment_variable_the_template_sets_is_read_by_the_code(
    template: dict[str, Any],
) -> None:
    env = template["Resources"]["AsrFunction"]["Properties"]["Environment"]["Variables"]
    code = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "lambda_app").rglob("*.py"))
    for name in env:
        if name.startswith(("POWERTOOLS_", "MALLOC_")):
            continue  # read by aws-lambda-powertools itself, or by glibc
        assert re.search(rf"[\"']{name}[\"']", code), f"{name} is set but never read"


# --- tools: cfn-lint with the serverless rules, and the SAM transform


def _require_sam_tools() -> None:
    if SAM_PYTHON.is_file() and CFN_LINT.is_file():
        return
    if os.environ.get("CI"):
        pytest.fail("CI must lint the template: scripts/setup.sh dev installs .tools/sam")
    pytest.skip("the SAM CLI virtualenv (.tools/sam) is not installed")


def test_cfn_lint_with_serverless_rules_is_clean() -> None:
    _require_sam_tools()
    result = subprocess.run(
        [str(CFN_LINT), "--append-rules", "cfn_lint_serverless.rules", "--", str(TEMPLATE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overrides", VARIANTS, ids=_variant_id)
def test_sam_transform_resolves_every_variant(overrides: dict[str, str], tmp_path: Path) -> None:
    _require_sam_tools()
    result = subprocess.run(
        [
            str(SAM_PYTHON),
            str(REPO / "tests" / "sam_translate.py"),
            str(TEMPLATE),
            json.dumps(overrides),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    translated = json.loads(result.stdout)
    resources = translated["Resources"]
    alias = [k for k, v in resources.items() if v["Type"] == "AWS::Lambda::Alias"]
    assert len(alias) == 1
    # Both entry points target the alias (SnapStart only applies to published versions).
    assert resources["UploadQueueMapping"]["Properties"]["FunctionName"] == {"Ref": alias[0]}
    role = next(v for v in resources.values() if v["Type"] == "AWS::IAM::Role")["Properties"]
    assert set(role["ManagedPolicyArns"]) <= {
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
    }
    out = tmp_path / "translated.json"
    out.write_text(result.stdout, encoding="utf-8")
    lint = subprocess.run(
        [str(CFN_LINT), "--", str(out)], capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr

"""template.yaml: SAM lint, a real `sam build`, and static checks of its security posture."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.stage_layers import StagingError, elf_architecture, stage_model

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template.yaml"
RUNTIME_REQUIREMENTS = REPO / "layers" / "runtime" / "requirements.txt"
LAMBDA_UNZIPPED_LIMIT = 262_144_000  # function + all layers
INPUT_BUCKET_NAME = "${AWS::StackName}-input-${AWS::AccountId}-${AWS::Region}"
OUTPUT_OBJECTS_ARN = "arn:${AWS::Partition}:s3:::${OutputBucket}/${OutputPrefix}*"
INPUT_OBJECTS_ARN = f"arn:${{AWS::Partition}}:s3:::{INPUT_BUCKET_NAME}/*"


# --- CloudFormation YAML: short-form intrinsics (!Ref, !Sub, !GetAtt ...) as plain dicts.


class _CfnLoader(yaml.SafeLoader):
    pass


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded = yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_CfnLoader)
    assert isinstance(loaded, dict)
    return loaded


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement the stack grants, with the resource it belongs to."""
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            for policy in _as_list(props.get("Policies", [])):
                # Only inline statements: a managed policy or SAM policy template
                # (S3CrudPolicy, AmazonS3FullAccess ...) would hide what is granted.
                assert isinstance(policy, dict) and set(policy) == {"Statement"}, (name, policy)
                for statement in policy["Statement"]:
                    yield name, statement
        elif resource["Type"] in {"AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}:
            documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
            documents += [
                props[k] for k in ("PolicyDocument", "AssumeRolePolicyDocument") if k in props
            ]
            for document in documents:
                for statement in document["Statement"]:
                    yield name, statement


def test_no_allow_statement_uses_a_wildcard_action(template: dict[str, Any]) -> None:
    statements = list(_statements(template))
    assert statements
    for name, statement in statements:
        assert "NotAction" not in statement, name
        if statement["Effect"] != "Allow":
            continue
        for action in _as_list(statement["Action"]):
            assert "*" not in action, f"{name} grants wildcard action {action}"


def test_s3_object_permissions_are_scoped_to_the_two_buckets(template: dict[str, Any]) -> None:
    granted: dict[str, list[Any]] = {}
    for _, statement in _statements(template):
        actions = [a for a in _as_list(statement["Action"]) if a.startswith("s3:")]
        if statement["Effect"] == "Allow" and actions:
            for action in actions:
                granted.setdefault(action, []).extend(_as_list(statement["Resource"]))
    assert granted == {
        "s3:GetObject": [{"Fn::Sub": INPUT_OBJECTS_ARN}],
        "s3:PutObject": [{"Fn::Sub": OUTPUT_OBJECTS_ARN}],
    }
    # The policy spells the input bucket's name out (a !Ref would be a dependency cycle
    # through the S3 trigger), so it must be exactly the name the bucket gets.
    input_bucket = template["Resources"]["InputBucket"]["Properties"]
    assert input_bucket["BucketName"] == {"Fn::Sub": INPUT_BUCKET_NAME}


def test_buckets_are_separate_encrypted_private_and_tls_only(template: dict[str, Any]) -> None:
    buckets = _resources(template, "AWS::S3::Bucket")
    assert set(buckets) == {"InputBucket", "OutputBucket"}
    names = [b["Properties"]["BucketName"] for b in buckets.values()]
    assert names[0] != names[1]
    policies = {
        p["Properties"]["Bucket"]["Ref"]: p["Properties"]["PolicyDocument"]
        for p in _resources(template, "AWS::S3::BucketPolicy").values()
    }
    for name, bucket in buckets.items():
        props = bucket["Properties"]
        sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert sse == [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}], name
        assert all(props["PublicAccessBlockConfiguration"].values()), name
        assert len(props["PublicAccessBlockConfiguration"]) == 4, name
        deny_plain_http = [
            s
            for s in policies[name]["Statement"]
            if s["Effect"] == "Deny"
            and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert len(deny_plain_http) == 1, name
        assert deny_plain_http[0]["Resource"] == [
            {"Fn::GetAtt": [name, "Arn"]},
            {"Fn::Sub": f"${{{name}.Arn}}/*"},
        ]


def test_function_wiring(template: dict[str, Any]) -> None:
    function = template["Resources"]["AsrFunction"]["Properties"]
    assert function["Handler"] == "handler.lambda_handler"
    assert function["Runtime"] == "python3.12"
    assert function["CodeUri"] == "lambda_app/"
    assert function["Architectures"] == [{"Ref": "Architecture"}]
    assert function["Layers"] == [
        {"Ref": "RuntimeDepsLayer"},
        {"Ref": "FfmpegLayer"},
        {"Ref": "ModelLayer"},
    ]
    env = function["Environment"]["Variables"]
    assert env["MODEL_DIR"] == "/opt/model"
    assert env["ASR_FFMPEG_PATH"] == "/opt/bin/ffmpeg"
    # Transcripts go to the other bucket: the trigger can never see them.
    assert env["OUTPUT_BUCKET"] == {"Ref": "OutputBucket"}
    s3_events = [e for e in function["Events"].values() if e["Type"] == "S3"]
    assert len(s3_events) == 1
    trigger = s3_events[0]["Properties"]
    assert trigger["Bucket"] == {"Ref": "InputBucket"}
    assert trigger["Events"] == "s3:ObjectCreated:*"
    assert trigger["Filter"]["S3Key"]["Rules"] == [
        {"Name": "prefix", "Value": {"Ref": "InputPrefix"}}
    ]
    routes = {
        (e["Properties"]["Method"], e["Properties"]["Path"])
        for e in function["Events"].values()
        if e["Type"] == "HttpApi"
    }
    assert routes == {("POST", "/transcribe"), ("GET", "/health")}
    layer = template["Resources"]["RuntimeDepsLayer"]
    assert layer["Metadata"]["BuildMethod"] == "python3.12"
    assert layer["Properties"]["ContentUri"] == "layers/runtime/"


def test_runtime_layer_requirements_are_pinned_to_the_tested_versions() -> None:
    pins = {}
    for raw in RUNTIME_REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    assert set(pins) == {"numpy", "onnxruntime", "soundfile", "aws-lambda-powertools"}
    for name, version in pins.items():
        assert version == metadata.version(name), f"{name}: layer pins {version}"


# --- scripts/stage_layers.py


def test_stage_model_copies_once_and_refuses_a_corrupt_bundle(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    target = tmp_path / "layers" / "model" / "model"
    assert stage_model(tiny_bundle, target).startswith("copied")
    assert stage_model(tiny_bundle, target).startswith("unchanged")
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in tiny_bundle.iterdir())
    assert target.stat().st_mode & 0o777 == 0o755  # readable by Lambda's sandbox user

    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_bundle, corrupt)
    (corrupt / "tokens.txt").write_text("x\n", encoding="utf-8")
    with pytest.raises(StagingError, match="sha256"):
        stage_model(corrupt, target)
    assert stage_model(tiny_bundle, target).startswith("unchanged")  # the old copy survived


@pytest.mark.parametrize(("machine", "expected"), [(0x3E, "x86_64"), (0xB7, "arm64"), (3, None)])
def test_elf_architecture(tmp_path: Path, machine: int, expected: str | None) -> None:
    binary = tmp_path / "ffmpeg"
    binary.write_bytes(b"\x7fELF\x02\x01" + bytes(12) + machine.to_bytes(2, "little") + bytes(8))
    assert elf_architecture(binary) == expected
    binary.write_bytes(b"#!/bin/sh\n")
    assert elf_architecture(binary) is None


# --- the SAM CLI


def _sam() -> str:
    candidates = [REPO / ".tools" / "sam" / "bin" / "sam", Path(sys.executable).with_name("sam")]
    installed = [str(path) for path in candidates if path.is_file()]
    found = installed[0] if installed else shutil.which("sam")
    if found is None and os.environ.get("CI"):
        pytest.fail("CI must run the SAM checks: scripts/setup.sh dev installs .tools/sam")
    if found is None:
        pytest.skip("the AWS SAM CLI is not installed (pip install aws-sam-cli)")
    return found


def _python312_dir() -> str:
    """A directory holding a real python3.12, which `sam build` uses for the runtime."""
    candidates = sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"), reverse=True)
    on_path = shutil.which("python3.12")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        probe = subprocess.run(
            [str(candidate), "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 12)":
            return str(candidate.parent)
    pytest.fail("sam build needs python3.12 (the function's runtime) and none was found")


def _run_sam(args: list[str], *, path_first: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    if path_first:
        env["PATH"] = f"{path_first}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [_sam(), *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )


def test_sam_validate_lint() -> None:
    result = _run_sam(["validate", "--lint", "--template", str(TEMPLATE), "--region", "us-east-1"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.mark.slow
def test_sam_build(tmp_path: Path) -> None:
    build_dir = tmp_path / "build"
    started = time.perf_counter()
    result = _run_sam(
        ["build", "--template", str(TEMPLATE), "--build-dir", str(build_dir)],
        path_first=_python312_dir(),
    )
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stdout + result.stderr

    function = build_dir / "AsrFunction"
    assert (function / "handler.py").is_file()
    assert (function / "asr" / "__init__.py").is_file()
    assert (function / "asr_service" / "__init__.py").is_file()
    shipped = {p.name for p in function.rglob("*")}
    assert not shipped & {"tests", "export", "torch", "__pycache__", "conftest.py"}, shipped

    packages = build_dir / "RuntimeDepsLayer" / "python"
    present = {p.name for p in packages.iterdir()}
    assert {"numpy", "onnxruntime", "soundfile.py", "aws_lambda_powertools"} <= present
    assert not present & {"boto3", "botocore", "torch", "sympy"}, present & {"boto3", "torch"}

    # Lambda's unzipped limit covers the function and all its layers together; the ffmpeg
    # and model layers ship as staged (scripts/stage_layers.py), without a build step.
    sizes = {
        "AsrFunction": _tree_bytes(function),
        "RuntimeDepsLayer": _tree_bytes(build_dir / "RuntimeDepsLayer"),
        "FfmpegLayer": _tree_bytes(REPO / "layers" / "ffmpeg"),
        "ModelLayer": _tree_bytes(REPO / "layers" / "model"),
    }
    print(f"sam build: {seconds:.1f} s; unzipped bytes: {sizes}")
    assert sum(sizes.values()) <= LAMBDA_UNZIPPED_LIMIT, sizes

"""The container-image variant: Dockerfile, .dockerignore and template-image.yaml.

No Docker engine here, so the image is never built: these checks are static (the Dockerfile
copies files that the repository or its staging scripts provide; .dockerignore sends them)
plus SAM/cfn-lint on the template, and a check that template-image.yaml is template.yaml
with only its packaging changed.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from scripts.stage_layers import FFMPEG_LAYER_BINARY, MODEL_LAYER_DIR
from tests.cfn_yaml import load_template

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
TEMPLATE = REPO / "template.yaml"
IMAGE_TEMPLATE = REPO / "template-image.yaml"
SAM_BIN = REPO / ".tools" / "sam" / "bin"

# What only the zip variant has (layers, SnapStart, the S3 model download) and what only
# the image has; everything else must be the same in both templates.
ZIP_ONLY = {
    "Parameters": {"ModelS3Uri", "SnapStart"},
    "Conditions": {"ModelFromLayer", "ModelFromS3", "UseSnapStart"},
    "Resources": {"RuntimeDepsLayer", "FfmpegLayer", "ModelLayer"},
    "FunctionProperties": {"CodeUri", "Handler", "Runtime", "Layers", "SnapStart"},
    "Environment": {"MODEL_S3_URI", "MODEL_CACHE_DIR"},
}
IMAGE_ONLY = {
    "FunctionProperties": {"PackageType", "ImageUri", "ImageConfig"},
    "FunctionMetadata": {"Dockerfile", "DockerContext", "DockerTag", "DockerBuildArgs"},
}
# Differs by design: /tmp holds the downloaded model in one, only request files in the other.
DIFFERENT = {"FunctionProperties": {"EphemeralStorage"}}


# --- reading the files


def _load(path: Path) -> dict[str, Any]:
    return load_template(path)


@cache
def _dockerfile() -> tuple[dict[str, str], list[tuple[str, str]]]:
    """ARG defaults and the instructions (keyword, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    args: dict[str, str] = {}
    instructions = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, rest = line.strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        if keyword.upper() == "ARG":
            name, _, default = rest.strip().partition("=")
            args[name] = default
    return args, instructions


def _copies() -> dict[str, str]:
    """COPY source → destination, build arguments at their defaults, flags dropped."""
    args, instructions = _dockerfile()
    copies = {}
    for keyword, rest in instructions:
        if keyword == "COPY":
            paths = [w for w in shlex.split(rest) if not w.startswith("--")]
            assert len(paths) == 2, rest
            source = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], paths[0])
            copies[source.rstrip("/")] = paths[1]
    return copies


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    excluded = False
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        parts = path.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
        out += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
            token, re.escape(token)
        )
    return re.compile(out)


# --- the Dockerfile and .dockerignore


def test_dockerfile_copies_what_the_repository_and_its_staging_scripts_provide() -> None:
    copies = _copies()
    # Committed files exist; the two staged inputs are where the staging scripts put them.
    assert (REPO / "requirements.txt").is_file() and (REPO / "lambda_app" / "handler.py").is_file()
    staged = {
        FFMPEG_LAYER_BINARY.relative_to(REPO).as_posix(): "/opt/bin/ffmpeg",
        MODEL_LAYER_DIR.relative_to(REPO).as_posix(): "/opt/model/",
    }
    assert copies == {
        "requirements.txt": "/tmp/requirements.txt",  # the run-time list, not requirements-dev
        "lambda_app": "${LAMBDA_TASK_ROOT}/",
        **staged,
    }
    # The paths the code is told about are the ones the image fills (as the zip's layers do).
    _, instructions = _dockerfile()
    env = dict(
        w.split("=", 1)
        for keyword, rest in instructions
        if keyword == "ENV"
        for w in shlex.split(rest)
    )
    zip_function = _load(TEMPLATE)["Resources"]["AsrFunction"]["Properties"]
    zip_env = zip_function["Environment"]["Variables"]
    assert env == {"MODEL_DIR": zip_env["MODEL_DIR"], "ASR_FFMPEG_PATH": zip_env["ASR_FFMPEG_PATH"]}
    assert env["MODEL_DIR"] + "/" == staged["layers/model/model"]
    assert env["ASR_FFMPEG_PATH"] == staged["layers/ffmpeg/bin/ffmpeg"]
    assert ("FROM", "public.ecr.aws/lambda/python:3.12") in instructions
    keyword, command = instructions[-1]
    assert (keyword, json.loads(command)) == ("CMD", [zip_function["Handler"]])


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        ("requirements.txt", True),
        ("lambda_app/handler.py", True),
        ("lambda_app/asr/bundle.py", True),
        ("layers/ffmpeg/bin/ffmpeg", True),
        ("layers/model/model/model.onnx", True),
        ("bundles/gigaam-v3/model.onnx", True),
        ("demo/bundle/model.onnx", True),
        ("lambda_app/asr/__pycache__/bundle.cpython-312.pyc", False),
        ("requirements-dev.txt", False),
        (".venv/lib/python3.11/site-packages/torch/__init__.py", False),
        (".git/HEAD", False),
        ("tests/test_model_source.py", False),
        ("export/pipeline.py", False),
        ("demo/model/demo_gigaam_ru.ckpt", False),
        ("layers/runtime/requirements.txt", False),
    ],
)
def test_dockerignore_sends_only_what_the_image_needs(path: str, sent: bool) -> None:
    assert _dockerignore_excludes(path) is not sent


def test_every_copy_source_is_sent_to_the_builder() -> None:
    for source in _copies():
        assert not _dockerignore_excludes(source), source


# --- template-image.yaml


def _normalised(template: dict[str, Any], *, image: bool) -> dict[str, Any]:
    """The template without the parts that are allowed to differ between the variants."""
    t = copy.deepcopy(template)
    t.pop("Description", None)
    for spec in t.get("Parameters", {}).values():
        spec.pop("Description", None)
    function = t["Resources"]["AsrFunction"]
    props, metadata = function["Properties"], function.get("Metadata", {})
    dropped_properties = IMAGE_ONLY if image else ZIP_ONLY
    for name in dropped_properties["FunctionProperties"] | DIFFERENT["FunctionProperties"]:
        props.pop(name, None)
    if image:
        for name in IMAGE_ONLY["FunctionMetadata"]:
            metadata.pop(name, None)
    else:
        for section in ("Parameters", "Conditions", "Resources"):
            for name in ZIP_ONLY[section]:
                t.get(section, {}).pop(name, None)
        for name in ZIP_ONLY["Environment"]:
            props["Environment"]["Variables"].pop(name, None)
        for policy in props.get("Policies", []):
            policy["Statement"] = [
                s
                for s in policy["Statement"]
                if not ("Fn::If" in s and s["Fn::If"][0] in ZIP_ONLY["Conditions"])
            ]
    return t


def test_the_image_template_is_template_yaml_with_only_the_packaging_changed() -> None:
    zip_variant = _normalised(_load(TEMPLATE), image=False)
    image_variant = _normalised(_load(IMAGE_TEMPLATE), image=True)
    for section in sorted(set(zip_variant) | set(image_variant)):
        ours, theirs = image_variant.get(section, {}), zip_variant.get(section, {})
        if isinstance(ours, dict) and isinstance(theirs, dict):
            differing = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
            assert not differing, (
                f"template-image.yaml {section} differs from template.yaml in {differing}: "
                "port the change (see ZIP_ONLY/IMAGE_ONLY for what may differ)"
            )
        assert ours == theirs, section


def test_the_image_function_is_built_from_the_dockerfile() -> None:
    function = _load(IMAGE_TEMPLATE)["Resources"]["AsrFunction"]
    props, metadata = function["Properties"], function["Metadata"]
    assert props["PackageType"] == "Image"
    assert not set(props) & ZIP_ONLY["FunctionProperties"]
    assert props["EphemeralStorage"] == {"Size": {"Ref": "EphemeralStorageMB"}}
    assert not set(props["Environment"]["Variables"]) & ZIP_ONLY["Environment"]
    assert (REPO / metadata["DockerContext"] / metadata["Dockerfile"]).resolve() == DOCKERFILE
    args, _ = _dockerfile()
    assert metadata["DockerBuildArgs"] == {"MODEL_BUNDLE": args["MODEL_BUNDLE"]}


def _sam_tool(name: str) -> str:
    found = SAM_BIN / name
    if found.is_file():
        return str(found)
    if os.environ.get("CI"):
        pytest.fail("CI must lint the templates: scripts/setup.sh dev installs .tools/sam")
    pytest.skip(f"{name} is not installed (.tools/sam)")


def _python312_dir() -> str:
    candidates = sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"), reverse=True)
    on_path = shutil.which("python3.12")
    found = [str(p.parent) for p in candidates] + ([str(Path(on_path).parent)] if on_path else [])
    if not found:
        pytest.fail("sam validate needs python3.12 (the function's runtime) on PATH")
    return found[0]


def test_sam_validate_lint_of_the_image_template() -> None:
    sam = _sam_tool("sam")
    env = {
        **os.environ,
        "SAM_CLI_TELEMETRY": "0",
        "PATH": f"{_python312_dir()}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    result = subprocess.run(
        [sam, "validate", "--lint", "--template", str(IMAGE_TEMPLATE), "--region", "us-east-1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


def test_cfn_lint_with_serverless_rules_of_the_image_template() -> None:
    result = subprocess.run(
        [
            _sam_tool("cfn-lint"),
            "--append-rules",
            "cfn_lint_serverless.rules",
            "--",
            str(IMAGE_TEMPLATE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

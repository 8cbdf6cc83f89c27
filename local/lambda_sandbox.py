"""Run the function that `sam build` produced the way Lambda runs it, on this machine.

    python -m local.lambda_sandbox [--build-dir .aws-sam/build] EVENT.json [EVENT.json ...]

Nothing of the repository is used: the code is the built function directory, the packages
come only from the built layers, the settings from the built template. In a fresh process:

* a private mount namespace (``unshare -m``; needs root) in which the function directory is
  mounted read-only at /var/task, the layers merged in the function's order at /opt (also
  read-only), Python 3.12 at /var/lang (Lambda's path), an AWS SDK (boto3, as the
  python3.12 runtime ships it) at /var/runtime and a size-capped tmpfs at /tmp;
* an unprivileged uid (65534), so nothing but /tmp is writable even where modes would allow;
* ``python3.12 -S``: the interpreter's own site-packages cannot stand in for a layer file;
* ``sys.path``, ``PATH``, ``LD_LIBRARY_PATH`` and the reserved variables as Lambda sets
  them, plus the function's environment from the template (parameters at their defaults
  unless overridden; resources by sandbox names, see ``physical_names``);
* CPUs pinned to what the memory size buys (1,769 MB per vCPU).

``local/sandbox_bootstrap.py`` is the runtime inside: it imports the handler, invokes it
once per event with a Lambda-like context and reports timings and responses.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import REPO_ROOT
from .sandbox_bootstrap import RESULT_PREFIX

BOOTSTRAP = Path(__file__).with_name("sandbox_bootstrap.py")
DEFAULT_PYTHON = Path("/root/.pyenv/versions/3.12.1/bin/python3.12")
RUNTIME_SDK_CACHE = REPO_ROOT / ".cache" / "lambda-runtime"
SANDBOX_UID = 65534  # nobody: Lambda runs functions as an unprivileged user too
DEFAULT_TMP_MB = 512
MB_PER_VCPU = 1769
DEFAULT_PRELOAD = ("numpy", "onnxruntime", "soundfile", "aws_lambda_powertools")
# Reported with the file each was loaded from: the layers, the runtime's SDK, the code.
ORIGIN_MODULES = ("numpy", "onnxruntime", "soundfile", "aws_lambda_powertools", "boto3", "handler")
# Resource types the function talks to, created in the S3/DynamoDB endpoint it is given.
DATA_RESOURCE_TYPES = ("AWS::S3::Bucket", "AWS::DynamoDB::Table")
FUNCTION_SETTINGS = (
    "Handler", "Runtime", "Architectures", "CodeUri", "Layers", "Environment", "MemorySize",
    "Timeout", "EphemeralStorage",
)  # fmt: skip
PSEUDO_PARAMETERS = {
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "sandbox",
}

# What the runtime puts on the process (Lambda's documented defaults for python3.12).
LAMBDA_PATH = "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin"
LAMBDA_LD_LIBRARY_PATH = (
    "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib"
)
# /var/task first, then the layers, then the runtime's SDK: Lambda's sys.path order.
LAMBDA_PYTHONPATH = "/var/task:/opt/python/lib/python3.12/site-packages:/opt/python:/var/runtime"

# Runs as root inside the new mount namespace, then becomes the function's process.
MOUNT_SCRIPT = r"""
set -eu
task=$1 opt=$2 lang=$3 sdk=$4 boot=$5 tmp_mb=$6 uid=$7 cpus=$8
bind_ro() { mount --bind "$1" "$2"; mount -o remount,bind,ro "$2"; }
mount -t tmpfs -o size=4m,mode=755 sandbox-var /var
mkdir /var/task /var/lang /var/runtime /var/sandbox
bind_ro "$task" /var/task
bind_ro "$lang" /var/lang
bind_ro "$sdk" /var/runtime
bind_ro "$boot" /var/sandbox
bind_ro "$opt" /opt
mount -t tmpfs -o "size=${tmp_mb}m,mode=1777" lambda-tmp /tmp
cd /var/task
exec taskset -c "$cpus" setpriv --reuid "$uid" --regid "$uid" --clear-groups --no-new-privs \
    /var/lang/bin/python3.12 -S /var/sandbox/sandbox_bootstrap.py
"""


class SandboxError(RuntimeError):
    """The sandbox cannot be set up; the message says why."""


# --- the built template


class _Resolver:
    """Enough of CloudFormation's intrinsics to read a function's settings."""

    NO_VALUE = object()

    def __init__(
        self,
        template: dict[str, Any],
        parameters: Mapping[str, str],
        names: Mapping[str, str],
        region: str,
    ) -> None:
        self.template = template
        self.names = names
        self.values: dict[str, str] = {**PSEUDO_PARAMETERS, "AWS::Region": region}
        for name, spec in template.get("Parameters", {}).items():
            if name in parameters:
                self.values[name] = str(parameters[name])
            elif "Default" in spec:
                self.values[name] = _scalar(spec["Default"])
        unknown = set(parameters) - set(template.get("Parameters", {}))
        if unknown:
            raise SandboxError(f"the template has no parameters {sorted(unknown)}")

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.resolve(item) for item in node]
            return [item for item in items if item is not self.NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref" or key.startswith("Fn::") or key == "Condition":
                return self._intrinsic(key, arg)
        values = {k: self.resolve(v) for k, v in node.items()}
        return {k: v for k, v in values.items() if v is not self.NO_VALUE}

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    def _intrinsic(self, key: str, arg: Any) -> Any:
        if key == "Ref":
            return self._ref(arg)
        if key == "Condition":
            return self.condition(arg)
        if key == "Fn::If":
            name, if_true, if_false = arg
            return self.resolve(if_true if self.condition(name) else if_false)
        if key == "Fn::Equals":
            left, right = (_scalar(self.resolve(v)) for v in arg)
            return left == right
        if key == "Fn::Not":
            return not self.resolve(arg[0])
        if key == "Fn::And":
            return all(self.resolve(v) for v in arg)
        if key == "Fn::Or":
            return any(self.resolve(v) for v in arg)
        if key == "Fn::Join":
            separator, parts = arg
            return separator.join(_scalar(p) for p in self.resolve(parts))
        if key == "Fn::Select":
            index, items = self.resolve(arg)
            return items[int(index)]
        if key == "Fn::Split":
            separator, text = self.resolve(arg)
            return str(text).split(separator)
        if key == "Fn::Sub":
            return self._sub(arg)
        raise SandboxError(f"{key} is not supported by the sandbox: pass the value explicitly")

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return self.NO_VALUE
        if name in self.values:
            return self.values[name]
        if name in self.names:
            return self.names[name]
        if name in self.template.get("Resources", {}):
            return name
        raise SandboxError(f"Ref {name}: no such parameter or resource")

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        resolved = {k: _scalar(self.resolve(v)) for k, v in variables.items()}
        out, rest = [], text
        while "${" in rest:
            before, _, after = rest.partition("${")
            name, _, rest = after.partition("}")
            out.append(before)
            if name.startswith("!"):
                out.append("${" + name[1:] + "}")
            elif name in resolved:
                out.append(resolved[name])
            elif "." in name:
                raise SandboxError(f"${{{name}}} (an attribute) is not supported by the sandbox")
            else:
                out.append(_scalar(self._ref(name)))
        return "".join([*out, rest])


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_scalar(v) for v in value)
    return str(value)


def physical_names(template: dict[str, Any]) -> dict[str, str]:
    """Sandbox names of the buckets and tables the function reaches by ``!Ref``."""
    return {
        logical: f"sandbox-{logical.lower()}"
        for logical, resource in template.get("Resources", {}).items()
        if resource.get("Type") in DATA_RESOURCE_TYPES
    }


@dataclass(frozen=True)
class BuiltFunction:
    """A function of a `sam build` output, with its settings resolved."""

    build_dir: Path
    logical_id: str
    handler: str
    runtime: str
    architecture: str
    code_dir: Path
    layer_dirs: dict[str, Path]  # logical id -> content directory, in the function's order
    environment: dict[str, str]
    memory_mb: int
    timeout_s: int
    ephemeral_mb: int
    # Buckets and tables of the template: logical id -> (type, resolved properties).
    data_resources: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"sandbox-{self.logical_id}"


def load_built_function(
    build_dir: Path,
    logical_id: str = "AsrFunction",
    *,
    parameters: Mapping[str, str] | None = None,
    region: str = "us-east-1",
) -> BuiltFunction:
    template_path = build_dir / "template.yaml"
    if not template_path.is_file():
        raise SandboxError(f"no built template at {template_path}: run `sam build` first")
    template = yaml.safe_load(template_path.read_text(encoding="utf-8"))
    resources: dict[str, Any] = template.get("Resources", {})
    if resources.get(logical_id, {}).get("Type") != "AWS::Serverless::Function":
        raise SandboxError(f"{template_path} has no AWS::Serverless::Function {logical_id}")
    names = physical_names(template)
    resolver = _Resolver(template, parameters or {}, names, region)

    def settings(props: dict[str, Any]) -> dict[str, Any]:
        # Only what the sandbox uses: policies and events may hold attributes (!GetAtt).
        return {k: resolver.resolve(v) for k, v in props.items() if k in FUNCTION_SETTINGS}

    globals_ = settings(template.get("Globals", {}).get("Function", {}))
    props = {**globals_, **settings(resources[logical_id]["Properties"])}
    variables = {
        **globals_.get("Environment", {}).get("Variables", {}),
        **props.get("Environment", {}).get("Variables", {}),
    }
    layer_dirs = {}
    for layer in props.get("Layers", []):
        content = resources.get(layer, {}).get("Properties", {}).get("ContentUri")
        if not isinstance(content, str):
            raise SandboxError(
                f"layer {layer} is not a layer of this template with a local ContentUri"
            )
        layer_dirs[layer] = (build_dir / content).resolve()
    data = {
        logical: (
            resources[logical]["Type"],
            {
                k: resolver.resolve(v)
                for k, v in resources[logical].get("Properties", {}).items()
                if k in ("KeySchema", "AttributeDefinitions")
            },
        )
        for logical in names
    }
    return BuiltFunction(
        build_dir=build_dir,
        logical_id=logical_id,
        handler=props["Handler"],
        runtime=props["Runtime"],
        architecture=(props.get("Architectures") or ["x86_64"])[0],
        code_dir=(build_dir / props["CodeUri"]).resolve(),
        layer_dirs=layer_dirs,
        environment={k: _scalar(v) for k, v in variables.items()},
        memory_mb=int(props.get("MemorySize", 128)),
        timeout_s=int(props.get("Timeout", 3)),
        ephemeral_mb=int(props.get("EphemeralStorage", {}).get("Size", DEFAULT_TMP_MB)),
        data_resources=data,
        names=names,
    )


def create_data_resources(function: BuiltFunction, client: Callable[[str], Any]) -> None:
    """Create the template's buckets and tables, by their sandbox names, through ``client``
    (``client("s3")`` / ``client("dynamodb")``, e.g. boto3 clients of a moto server)."""
    for logical, (kind, props) in function.data_resources.items():
        name = function.names[logical]
        if kind == "AWS::S3::Bucket":
            client("s3").create_bucket(Bucket=name)
        elif kind == "AWS::DynamoDB::Table":
            client("dynamodb").create_table(
                TableName=name,
                KeySchema=props["KeySchema"],
                AttributeDefinitions=props["AttributeDefinitions"],
                BillingMode="PAY_PER_REQUEST",
            )


# --- the file system the function sees


@dataclass(frozen=True)
class StagedFunction:
    """The function's /var/task and /opt, assembled under ``root`` (hard links, cheap)."""

    function: BuiltFunction
    root: Path

    @property
    def task(self) -> Path:
        return self.root / "task"

    @property
    def opt(self) -> Path:
        return self.root / "opt"


def stage(function: BuiltFunction, root: Path) -> StagedFunction:
    """Lay out /var/task and /opt as Lambda extracts them: the layers in the function's
    order, a later layer's file replacing an earlier one's. Files are hard-linked, so a
    test may delete one here without touching the build."""
    staged = StagedFunction(function, root)
    if root.exists():
        shutil.rmtree(root)
    for path in (root, staged.task, staged.opt):
        path.mkdir(mode=0o755, parents=True)
        path.chmod(0o755)
    _link_tree(function.code_dir, staged.task)
    for layer in function.layer_dirs.values():
        _link_tree(layer, staged.opt)
    return staged


def _link_tree(source: Path, target: Path) -> None:
    if not source.is_dir():
        raise SandboxError(f"{source} does not exist: is the build complete?")
    for directory, subdirs, files in os.walk(source):
        here = target / Path(directory).relative_to(source)
        for name in subdirs:
            (here / name).mkdir(mode=0o755, exist_ok=True)
            (here / name).chmod(0o755)
        for name in files:
            src, dst = Path(directory) / name, here / name
            if dst.exists() or dst.is_symlink():
                dst.unlink()
            if src.is_symlink():
                dst.symlink_to(os.readlink(src))
                continue
            try:
                os.link(src, dst)
            except OSError:  # another file system
                shutil.copy2(src, dst)


def ensure_runtime_sdk(
    python: Path = DEFAULT_PYTHON, cache: Path = RUNTIME_SDK_CACHE, spec: str | None = None
) -> Path:
    """boto3 as the python3.12 runtime provides it, installed once for Python 3.12 under
    .cache/. By default ``$LAMBDA_SANDBOX_BOTO3`` (e.g. ``boto3==1.40.4``) or else the lowest
    version requirements.txt allows: the function must work with any runtime from there on."""
    spec = spec or os.environ.get("LAMBDA_SANDBOX_BOTO3") or _runtime_boto3_spec()
    target = cache / ("python3.12-" + "".join(c if c.isalnum() or c in ".-" else "-" for c in spec))
    if (target / "boto3" / "__init__.py").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sdk-", dir=cache))
    try:
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--only-binary=:all:", "--target", str(staging), spec],
            check=True,
            env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"},
        )  # fmt: skip
        staging.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "boto3" / "__init__.py").is_file():  # not a concurrent install
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _runtime_boto3_spec() -> str:
    for line in (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition(">=")
        if sep and name.strip().lower() == "boto3":
            # The newest patch release of the floor's minor version (~=1.34.0: 1.34.*).
            version = version.strip()
            return f"boto3~={version}.0" if version.count(".") == 1 else f"boto3~={version}"
    raise SandboxError("requirements.txt has no boto3>=X.Y line to pick the runtime's boto3")


# --- running it


@dataclass(frozen=True)
class Invocation:
    name: str
    event: dict[str, Any]
    timeout_s: float | None = None  # the context's deadline; default: the function's Timeout


@dataclass(frozen=True)
class SandboxRun:
    returncode: int
    report: dict[str, Any] | None  # the bootstrap's report; None if it never printed one
    stdout: str  # the function's logs (and EMF metrics), as CloudWatch would get them
    stderr: str
    spawn_to_bootstrap_s: float | None

    @property
    def init_error(self) -> dict[str, Any] | None:
        if self.report is None:
            return {"errorType": "Sandbox", "errorMessage": self.stderr[-2000:]}
        error = self.report.get("init_error")
        return error if isinstance(error, dict) else None

    def response(self, name: str) -> dict[str, Any]:
        """The handler's return value for invocation ``name``; AssertionError if it raised."""
        assert self.report is not None, self.stderr[-4000:]
        assert self.init_error is None, self.init_error
        for entry in self.report["invocations"]:
            if entry["name"] == name:
                assert "error" not in entry, entry["error"]
                response: dict[str, Any] = entry["response"]
                return response
        raise KeyError(name)


def lambda_environment(
    function: BuiltFunction, region: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The function's variables, then the reserved ones Lambda sets (they win), then
    ``extra`` (endpoints, credentials of a local fake)."""
    log_stream = time.strftime("%Y/%m/%d/[$LATEST]") + "sandbox"
    reserved = {
        "PATH": LAMBDA_PATH,
        "LD_LIBRARY_PATH": LAMBDA_LD_LIBRARY_PATH,
        "PYTHONPATH": LAMBDA_PYTHONPATH,
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": "/var/task",
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "_HANDLER": function.handler,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": function.name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": "sandbox",
        "AWS_SECRET_ACCESS_KEY": "sandbox",
        "AWS_SESSION_TOKEN": "sandbox",
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    }
    return {**function.environment, **reserved, **(extra or {})}


def run(
    staged: StagedFunction,
    invocations: Sequence[Invocation],
    *,
    extra_env: Mapping[str, str] | None = None,
    region: str = "us-east-1",
    probe_modules: Sequence[str] = (),
    preload: Sequence[str] = DEFAULT_PRELOAD,
    python: Path = DEFAULT_PYTHON,
    runtime_sdk: Path | None = None,
    tmp_mb: int | None = None,
    process_timeout_s: float = 600.0,
) -> SandboxRun:
    """Start a fresh sandboxed process, initialise the function, invoke it per event."""
    _check_host(python)
    function = staged.function
    boot = staged.root / "bootstrap"
    boot.mkdir(mode=0o755, exist_ok=True)
    boot.chmod(0o755)
    shutil.copyfile(BOOTSTRAP, boot / BOOTSTRAP.name)
    job = {
        "handler": function.handler,
        "preload": list(preload),
        "probe_modules": list(probe_modules),
        "origins": list(ORIGIN_MODULES),
        "write_probes": ["/var/task", "/opt", "/opt/python", "/var/runtime"],
        "timeout_s": function.timeout_s,
        "function": {
            "name": function.name,
            "arn": f"arn:aws:lambda:{region}:123456789012:function:{function.name}",
            "memory_mb": function.memory_mb,
            "log_group": f"/aws/lambda/{function.name}",
            "log_stream": "sandbox",
        },
        "invocations": [
            {"name": i.name, "event": i.event, "timeout_s": i.timeout_s or function.timeout_s}
            for i in invocations
        ],
    }
    (boot / "job.json").write_text(json.dumps(job), encoding="utf-8")
    for path in boot.iterdir():
        path.chmod(0o644)
    sdk = runtime_sdk or ensure_runtime_sdk(python)
    vcpus = max(1, min(6, function.memory_mb // MB_PER_VCPU, os.cpu_count() or 1))
    command = [
        "unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", MOUNT_SCRIPT,
        "sandbox", str(staged.task), str(staged.opt), str(python.parents[1]), str(sdk),
        str(boot), str(tmp_mb or function.ephemeral_mb), str(SANDBOX_UID), f"0-{vcpus - 1}",
    ]  # fmt: skip
    spawned = time.time()
    result = subprocess.run(
        command,
        env=lambda_environment(function, region, extra_env),
        capture_output=True,
        text=True,
        timeout=process_timeout_s,
        check=False,
    )
    report, logs = _split_report(result.stdout)
    started = report.get("started_wall") if report else None
    return SandboxRun(
        returncode=result.returncode,
        report=report,
        stdout=logs,
        stderr=result.stderr,
        spawn_to_bootstrap_s=(started - spawned) if isinstance(started, float) else None,
    )


def _split_report(stdout: str) -> tuple[dict[str, Any] | None, str]:
    report = None
    logs = []
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            report = json.loads(line[len(RESULT_PREFIX) :])
        else:
            logs.append(line)
    return report, "\n".join(logs)


def _check_host(python: Path) -> None:
    if os.geteuid() != 0:
        raise SandboxError("the sandbox mounts file systems (unshare -m): run it as root")
    for tool in ("unshare", "setpriv", "taskset", "mount"):
        if shutil.which(tool) is None:
            raise SandboxError(f"the sandbox needs {tool} (util-linux)")
    if not python.is_file() or python.name != "python3.12":
        raise SandboxError(f"{python} is not a python3.12 interpreter (the function's runtime)")


# --- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("events", nargs="+", type=Path, help="Lambda event JSON files")
    parser.add_argument("--build-dir", type=Path, default=REPO_ROOT / ".aws-sam" / "build")
    parser.add_argument("--function", default="AsrFunction")
    parser.add_argument("--python", type=Path, default=DEFAULT_PYTHON)
    parser.add_argument(
        "--endpoint-url", help="AWS endpoint for the function (e.g. a moto server); no default"
    )
    args = parser.parse_args(argv)
    try:
        function = load_built_function(args.build_dir.resolve(), args.function)
        invocations = [
            Invocation(path.name, json.loads(path.read_text(encoding="utf-8")))
            for path in args.events
        ]
        extra = {"AWS_ENDPOINT_URL": args.endpoint_url} if args.endpoint_url else {}
        with tempfile.TemporaryDirectory(prefix="lambda-sandbox-") as work:
            outcome = run(
                stage(function, Path(work)), invocations, extra_env=extra, python=args.python
            )
    except (SandboxError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(outcome.stdout, file=sys.stderr)
    print(json.dumps(outcome.report, ensure_ascii=False, indent=2))
    return 0 if outcome.report is not None and outcome.init_error is None else 1


if __name__ == "__main__":
    sys.exit(main())

"""The ONNX acoustic model behind onnxruntime: features in, per-frame log-probs out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .bundle import ModelBundle
from .errors import BundleError


def available_cpus() -> int:
    """CPUs this process may run on (Lambda: 1 vCPU per 1,769 MB of memory)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    configured = os.environ.get("ASR_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return available_cpus()


def session_options(threads: int) -> ort.SessionOptions:
    """``threads`` intra-op threads, one inter-op, sequential, every graph optimisation,
    no memory-reuse plan, errors only in the log."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # onnxruntime's reuse planner matches every freed buffer against each new one by
    # symbolic shape, which grows with the square of a chain's length: 1.3 of QuartzNet15x5
    # int8's 1.5 s session creation (3,900 nodes, measured). The CPU arena still recycles
    # freed blocks, so run time and peak RSS stay the same (bench/cold_start.py, memory.py).
    options.enable_mem_reuse = False
    return options


def onnx_session(path: Path, threads: int) -> ort.InferenceSession:
    """A CPU session with ``session_options(threads)``."""
    options = session_options(threads)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise BundleError(f"onnxruntime cannot load {path.name}: {exc}") from exc


def require_names(
    session: ort.InferenceSession, file: str, inputs: Sequence[str], outputs: Sequence[str]
) -> None:
    """A bundle's graph must have the inputs and outputs its config names."""
    have_inputs = {i.name for i in session.get_inputs()}
    have_outputs = {o.name for o in session.get_outputs()}
    for name in inputs:
        if name not in have_inputs:
            raise BundleError(f"{file} has no input {name!r} (has {sorted(have_inputs)})")
    for name in outputs:
        if name not in have_outputs:
            raise BundleError(f"{file} has no output {name!r} (has {sorted(have_outputs)})")


class OnnxAcousticModel:
    """The bundle's model.onnx: CTC log-probs, or a transducer's encoded frames."""

    def __init__(self, bundle: ModelBundle, threads: int | None = None) -> None:
        io = bundle.config.model
        self._session = onnx_session(bundle.model_path, threads or default_threads())
        require_names(
            self._session, io.file, (io.features_input, io.lengths_input), (io.log_probs_output,)
        )
        if io.output == "log_probs":
            classes = self._session.get_outputs()
            vocab_dim = next(o.shape[-1] for o in classes if o.name == io.log_probs_output)
            if isinstance(vocab_dim, int) and vocab_dim != len(bundle.vocabulary):
                raise BundleError(
                    f"{io.file} emits {vocab_dim} classes but tokens.txt has "
                    f"{len(bundle.vocabulary)}"
                )
        self._io = io
        outputs = {o.name for o in self._session.get_outputs()}
        self._has_lengths_output = io.lengths_output in outputs
        self.threads = self._session.get_session_options().intra_op_num_threads

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """features [n_mels, T] float32 → [T', V] log-probs (or [T', D] encoded frames)
        float32 for one utterance."""
        return self.batch([features])[0]

    def batch(self, features: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Several utterances' features [n_mels, T_i] in one run (zero-padded to the longest,
        with their lengths: the graphs mask the padding) → [T'_i, V] log-probs (or
        [T'_i, D] encoded frames) each."""
        if not features:
            return []
        longest = max(f.shape[1] for f in features)
        batch = np.zeros((len(features), features[0].shape[0], longest), dtype=np.float32)
        for row, item in zip(batch, features, strict=True):
            row[:, : item.shape[1]] = item
        lengths = np.array([f.shape[1] for f in features], dtype=np.int64)
        outputs = [self._io.log_probs_output]
        if self._has_lengths_output:
            outputs.append(self._io.lengths_output)
        log_probs, *rest = self._session.run(
            outputs, {self._io.features_input: batch, self._io.lengths_input: lengths}
        )
        if self._io.output == "encoded":  # [B, D, T'] → [B, T', D]
            log_probs = log_probs.transpose(0, 2, 1)
        if rest:
            valid = [int(n) for n in np.asarray(rest[0]).reshape(-1)]
        else:  # the frames each utterance fills, by the same subsampling ratio
            frames = log_probs.shape[1]
            valid = [min(frames, -(-int(n) * frames // longest)) for n in lengths]
        return [
            np.asarray(log_probs[i, : valid[i]], dtype=np.float32) for i in range(len(features))
        ]

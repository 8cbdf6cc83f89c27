"""The ONNX acoustic model behind onnxruntime: features in, per-frame log-probs out."""

from __future__ import annotations

import os
from collections.abc import Sequence

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


class OnnxAcousticModel:
    def __init__(self, bundle: ModelBundle, threads: int | None = None) -> None:
        io = bundle.config.model
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(bundle.model_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(f"onnxruntime cannot load {bundle.model_path.name}: {exc}") from exc
        inputs = {i.name for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        for name in (io.features_input, io.lengths_input):
            if name not in inputs:
                raise BundleError(f"{io.file} has no input {name!r} (has {sorted(inputs)})")
        if io.log_probs_output not in outputs:
            raise BundleError(f"{io.file} has no output {io.log_probs_output!r}")
        classes = self._session.get_outputs()
        vocab_dim = next(o.shape[-1] for o in classes if o.name == io.log_probs_output)
        if isinstance(vocab_dim, int) and vocab_dim != len(bundle.vocabulary):
            raise BundleError(
                f"{io.file} emits {vocab_dim} classes but tokens.txt has {len(bundle.vocabulary)}"
            )
        self._io = io
        self._has_lengths_output = io.lengths_output in outputs
        self.threads = options.intra_op_num_threads

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """features [n_mels, T] float32 → log_probs [T', V] float32 for one utterance."""
        return self.batch([features])[0]

    def batch(self, features: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Several utterances' features [n_mels, T_i] in one run (zero-padded to the longest,
        with their lengths: the graphs mask the padding) → log_probs [T'_i, V] each."""
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
        if rest:
            valid = [int(n) for n in np.asarray(rest[0]).reshape(-1)]
        else:  # the frames each utterance fills, by the same subsampling ratio
            frames = log_probs.shape[1]
            valid = [min(frames, -(-int(n) * frames // longest)) for n in lengths]
        return [
            np.asarray(log_probs[i, : valid[i]], dtype=np.float32) for i in range(len(features))
        ]

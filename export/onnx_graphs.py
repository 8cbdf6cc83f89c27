"""Already-exported upstream graphs: which input and output plays which role.

Names differ between exporters and releases, so they are read off the graphs by type and
rank, in order:

- CTC model / transducer encoder: a float [B, n_mels, T] and an integer [B] in; the first
  float rank-3 output (CTC log-probs [B, T', V], or encoded frames [B, D, T']) and, where
  there is one, an integer rank-1 output (the lengths). GigaAM: features, feature_lengths →
  log_probs, encoded_lengths; its RNNT encoder audio_signal, length → encoded, encoded_len.
  NeMo: audio_signal, length → logprobs.
- transducer decoder (one LSTM step): an integer label [B, 1] and two float states in;
  three float outputs (output, h, c). GigaAM's current ``to_onnx``: x, hi, ci → dec, ho,
  co; earlier releases: x, h.1, c.1 → dec, h, c.
- transducer joint: two float [B, D, 1] / [B, H, 1] in, one float rank-4 out.

GigaAM's ``to_onnx`` writes ``<model_name>_encoder.onnx``, ``_decoder.onnx`` and
``_joint.onnx`` side by side; the decoder and joint are found next to the encoder by those
names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import onnx
from asr.config import ModelConfig, TransducerConfig

from .quartznet import CheckpointError


@dataclass(frozen=True)
class Graph:
    path: Path
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class UpstreamGraphs:
    model: Graph  # (features, lengths) → (log-probs or encoded[, lengths])
    decoder: Graph | None = None
    joint: Graph | None = None

    def files(self) -> list[Path]:
        return [g.path for g in (self.model, self.decoder, self.joint) if g is not None]

    def model_config(self, config: ModelConfig) -> ModelConfig:
        """``config`` with the model graph's I/O names."""
        inputs, outputs = self.model.inputs, self.model.outputs
        config = replace(
            config, features_input=inputs[0], lengths_input=inputs[1], log_probs_output=outputs[0]
        )
        return replace(config, lengths_output=outputs[1]) if len(outputs) > 1 else config

    def transducer_config(self, config: TransducerConfig | None) -> TransducerConfig | None:
        """``config`` (sizes from the cfg) with the decoder's and joint's I/O names."""
        if config is None or self.decoder is None or self.joint is None:
            return config
        (label, h, c), (output, h_out, c_out) = self.decoder.inputs, self.decoder.outputs
        enc, dec = self.joint.inputs
        return replace(
            config,
            decoder_inputs=(label, h, c),
            decoder_outputs=(output, h_out, c_out),
            joint_inputs=(enc, dec),
            joint_output=self.joint.outputs[0],
        )


def upstream_graphs(model_path: Path, *, transducer: bool) -> UpstreamGraphs:
    model = _model_graph(model_path, transducer=transducer)
    if not transducer:
        return UpstreamGraphs(model)
    stem = model_path.name.removesuffix(".onnx").removesuffix("_encoder")
    found = {part: model_path.with_name(f"{stem}_{part}.onnx") for part in ("decoder", "joint")}
    for part, path in found.items():
        if not path.is_file():
            raise CheckpointError(
                f"a transducer needs its {part} graph beside the encoder: {path} does not exist "
                f"(GigaAM's to_onnx writes <model_name>_encoder/_decoder/_joint.onnx)"
            )
    return UpstreamGraphs(model, _decoder_graph(found["decoder"]), _joint_graph(found["joint"]))


def graph_io_names(onnx_path: Path) -> tuple[str, str, str]:
    """Features input, lengths input and log-probs output names of an upstream CTC graph."""
    graph = _model_graph(onnx_path, transducer=False)
    return graph.inputs[0], graph.inputs[1], graph.outputs[0]


def _model_graph(path: Path, *, transducer: bool) -> Graph:
    inputs, outputs = _io(path)
    floats = [i.name for i in inputs if _rank(i) == 3 and _is_float(i)]
    integers = [i.name for i in inputs if _rank(i) == 1 and not _is_float(i)]
    main = [o.name for o in outputs if _rank(o) == 3 and _is_float(o)]
    lengths = [o.name for o in outputs if _rank(o) == 1 and not _is_float(o)]
    if len(inputs) != 2 or len(floats) != 1 or len(integers) != 1 or not main:
        described = [(i.name, _rank(i)) for i in inputs]
        what = "an encoder" if transducer else "a CTC graph"
        produces = "encoded [B, D, T']" if transducer else "log-probs [B, T', V]"
        raise CheckpointError(
            f"{path.name} is not {what} of features [B, n_mels, T] + lengths [B] → "
            f"{produces} (inputs: {described})"
        )
    return Graph(path, (floats[0], integers[0]), (main[0], *lengths[:1]))


def _decoder_graph(path: Path) -> Graph:
    inputs, outputs = _io(path)
    labels = [i.name for i in inputs if not _is_float(i)]
    states = [i.name for i in inputs if _is_float(i) and _rank(i) == 3]
    produced = [o.name for o in outputs if _is_float(o) and _rank(o) == 3]
    if len(inputs) != 3 or len(labels) != 1 or len(states) != 2 or len(produced) != 3:
        raise CheckpointError(
            f"{path.name} is not a transducer decoder step (label [B, 1], h, c → output, h, c)"
        )
    return Graph(path, (labels[0], states[0], states[1]), tuple(produced))


def _joint_graph(path: Path) -> Graph:
    inputs, outputs = _io(path)
    floats = [i.name for i in inputs if _is_float(i) and _rank(i) == 3]
    produced = [o.name for o in outputs if _is_float(o) and _rank(o) == 4]
    if len(inputs) != 2 or len(floats) != 2 or len(produced) != 1:
        raise CheckpointError(
            f"{path.name} is not a transducer joint (enc [B, D, 1], dec [B, H, 1] → "
            "log-probs [B, 1, 1, V])"
        )
    return Graph(path, (floats[0], floats[1]), (produced[0],))


def _io(path: Path) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError and others on a damaged file
        raise CheckpointError(f"{path} is not a loadable ONNX model: {exc}") from exc
    initializers = {init.name for init in graph.initializer}
    return [i for i in graph.input if i.name not in initializers], list(graph.output)


def _rank(value: onnx.ValueInfoProto) -> int:
    return len(value.type.tensor_type.shape.dim)


def _is_float(value: onnx.ValueInfoProto) -> bool:
    return value.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)

"""fp32 ONNX → int8 ONNX, by one of several schemes (bench/conformer_int8.py compares them).

- dynamic: weights int8 offline, activations quantised per call from their observed range;
  no calibration. For QuartzNet (Conv-heavy) uint8 per-tensor weights run Conv as
  ConvInteger at RTF 0.022 vs 0.033 fp32 (1 thread), while per-channel int8 weights fall
  back to a slow path (0.11).
- static_qdq: QuantizeLinear/DequantizeLinear pairs with activation ranges calibrated on
  real speech features; onnxruntime fuses the pairs into int8 kernels.
- matmul_nbits: weight-only blockwise int8 (MatMulNBits, 8 bits); with accuracy_level 4
  the MatMul runs with int8 activations quantised on the fly. Closest to fp32, but slower
  than per-channel dynamic int8 here (onnxruntime 1.31, AVX-512 VNNI).
The verification gate decides whether the accuracy holds for a given checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.matmul_nbits_quantizer import (
    DefaultWeightOnlyQuantConfig,
    MatMulNBitsQuantizer,
)

QuantMethod = Literal["dynamic", "static_qdq", "matmul_nbits"]


@dataclass(frozen=True)
class QuantizationScheme:
    name: str = "dynamic-u8-per-tensor"
    method: QuantMethod = "dynamic"
    weight_type: str = "QUInt8"
    per_channel: bool = False
    op_types: tuple[str, ...] = ("Conv", "MatMul")
    block_size: int = 0  # matmul_nbits: weights per scale
    accuracy_level: int = 4  # matmul_nbits: 4 = int8 activations in the kernel

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SCHEMES: dict[str, QuantizationScheme] = {
    scheme.name: scheme
    for scheme in (
        QuantizationScheme(),
        QuantizationScheme("dynamic-u8-matmul", op_types=("MatMul",)),
        QuantizationScheme(
            "dynamic-s8-per-channel-matmul",
            weight_type="QInt8",
            per_channel=True,
            op_types=("MatMul",),
        ),
        QuantizationScheme(
            "static-qdq-s8-per-channel-matmul",
            method="static_qdq",
            weight_type="QInt8",
            per_channel=True,
            op_types=("MatMul",),
        ),
        QuantizationScheme(
            "static-qdq-s8-per-channel-conv-matmul",
            method="static_qdq",
            weight_type="QInt8",
            per_channel=True,
            op_types=("Conv", "MatMul"),
        ),
        *(
            QuantizationScheme(
                f"matmul-nbits8-b{block}",
                method="matmul_nbits",
                weight_type="QInt8",
                op_types=("MatMul",),
                block_size=block,
            )
            for block in (32, 128)
        ),
    )
}
DEFAULT_SCHEME = SCHEMES["dynamic-u8-per-tensor"]
# Conformers are MatMul-bound. int8 weights per output channel with uint8 activations run
# MatMulInteger on VNNI kernels: 2.6x fp32's speed on the GigaAM v3 shape at 1 thread, the
# fastest scheme measured (README "int8 for Conformers", bench/conformer_int8.py).
CONFORMER_SCHEME = SCHEMES["dynamic-s8-per-channel-matmul"]


def quantize(
    fp32_path: Path,
    int8_path: Path,
    scheme: QuantizationScheme = DEFAULT_SCHEME,
    *,
    calibration: Sequence[np.ndarray] = (),
    input_names: tuple[str, str] = ("features", "feature_lengths"),
) -> None:
    """Write the int8 graph. ``calibration``: feature matrices [n_mels, T] (static_qdq)."""
    # The quantiser logs a warning per graph it finds un-preprocessed; the gate is the check.
    logging.getLogger("root").setLevel(logging.ERROR)
    if scheme.method == "dynamic":
        quantize_dynamic(
            fp32_path,
            int8_path,
            weight_type=QuantType[scheme.weight_type],
            per_channel=scheme.per_channel,
            op_types_to_quantize=list(scheme.op_types),
        )
    elif scheme.method == "static_qdq":
        if not calibration:
            raise ValueError(f"{scheme.name} needs calibration features")
        quantize_static(
            fp32_path,
            int8_path,
            _FeatureReader(calibration, input_names),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(scheme.op_types),
            per_channel=scheme.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType[scheme.weight_type],
            calibrate_method=CalibrationMethod.MinMax,
        )
    else:
        _quantize_matmul_nbits(fp32_path, int8_path, scheme)


def _quantize_matmul_nbits(fp32_path: Path, int8_path: Path, scheme: QuantizationScheme) -> None:
    config = DefaultWeightOnlyQuantConfig(
        block_size=scheme.block_size,
        is_symmetric=True,
        accuracy_level=scheme.accuracy_level,
        bits=8,
    )
    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32_path)), algo_config=config)
    quantizer.process()
    quantizer.model.save_model_to_file(str(int8_path), use_external_data_format=False)


class _FeatureReader(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, features: Sequence[np.ndarray], names: tuple[str, str]) -> None:
        self._features = features
        self._names = names
        self._items: Iterator[dict[str, np.ndarray]] = iter(self._inputs())

    def _inputs(self) -> Iterator[dict[str, np.ndarray]]:
        for matrix in self._features:
            yield {
                self._names[0]: matrix[np.newaxis].astype(np.float32),
                self._names[1]: np.array([matrix.shape[1]], dtype=np.int64),
            }

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)

    def rewind(self) -> None:
        self._items = iter(self._inputs())

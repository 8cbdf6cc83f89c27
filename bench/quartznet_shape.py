"""QuartzNet15x5-shaped bundles with random weights, for the speed and memory benchmarks.

Speed and memory do not depend on the weights, and random weights cannot pass the export's
accuracy gate, so the gate is opened (``SPEED_ONLY``); everything else is the real export.
"""

from __future__ import annotations

from pathlib import Path

from export.checkpoint import load_checkpoint, load_quartznet
from export.clips import file_clips
from export.nemo_config import quartznet15x5_blocks
from export.pipeline import ExportOptions, export_bundle
from export.verify import Thresholds
from tests.conftest import write_random_quartznet

SPEED_ONLY = Thresholds(min_int8_token_agreement=0.0, max_int8_cer_vs_fp32=1.0)


def random_quartznet15x5(path: Path) -> Path:
    """A .nemo in NeMo's QuartzNet15x5 layout (18.9 M parameters), random weights."""
    return write_random_quartznet(path, quartznet15x5_blocks())


def export_quartznet15x5(nemo: Path, out: Path, precision: str, clip: Path) -> Path:
    """Export ``nemo`` to a bundle at ``out`` (``clip`` feeds the export's verification)."""
    export_bundle(
        load_quartznet(load_checkpoint(nemo)),
        out,
        file_clips([clip], 16000),
        ExportOptions(model_id=f"q15x5-{precision}", precision=precision, thresholds=SPEED_ONLY),
        step=lambda message: None,
    )
    return out

"""The models: configs, layers, attention, checkpoints, generation, fill-mask, the Hub and transformers interop."""

from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"  # the models shipped with this repository

"""A synthetic architecture whose 'measured' latency is a known function of its widths (no timing)."""

import numpy as np

from toolchain.latency.features import LayerSpec
from toolchain.latency.store import MeasurementRow

GROUPS = (("stem", 32, 1), ("block1", 64, 1), ("block2", 128, 1))  # (name, dense width, unit)
INPUT_SHAPE = (1, 3, 32, 32)


def synthetic_layers(widths: dict[str, int], hw: int = 32) -> list[LayerSpec]:
    stem, block1, block2 = widths["stem"], widths["block1"], widths["block2"]
    return [
        LayerSpec("conv", 3, stem, 3, 1, 1, hw, hw, hw, hw),
        LayerSpec("norm", stem, stem, 1, 1, 1, hw, hw, hw, hw),
        LayerSpec("conv", stem, block1, 3, 2, 1, hw, hw, hw // 2, hw // 2),
        LayerSpec("act", block1, block1, 1, 1, 1, hw // 2, hw // 2, hw // 2, hw // 2),
        LayerSpec("conv", block1, block2, 3, 2, 1, hw // 2, hw // 2, hw // 4, hw // 4),
        LayerSpec("pool", block2, block2, 1, 1, 1, hw // 4, hw // 4, 1, 1),
        LayerSpec("linear", block2, 10, 1, 1, 1, 1, 1, 1, 1),
    ]


def synthetic_latency_ms(layers: list[LayerSpec]) -> float:
    """A 'device': 0.05 ms per MMAC, slower when output channels are not a multiple of 8, plus overhead."""
    total = 0.05
    for layer in layers:
        penalty = 1.0 if layer.out_channels % 8 == 0 else 1.15
        total += 0.05 * layer.macs / 1e6 * penalty + 0.01 * layer.output_elements / 1e6
    return total


def synthetic_rows(n: int, seed: int = 0, model: str = "synthetic:net", fingerprint_id: str = "fp0"):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        widths = {name: int(rng.integers(max(1, dense // 10), dense + 1)) for name, dense, _ in GROUPS}
        if i == 0:
            widths = {name: dense for name, dense, _ in GROUPS}
        layers = synthetic_layers(widths)
        ms = synthetic_latency_ms(layers)
        rows.append(
            MeasurementRow(
                kind="model",
                model=model,
                widths=widths,
                layers=[layer.to_dict() for layer in layers],
                input_shape=INPUT_SHAPE,
                target="cpu",
                backend="onnxruntime",
                threads=1,
                replicate=0,
                sample_tag="random",
                macs=sum(layer.macs for layer in layers),
                fingerprint_id=fingerprint_id,
                fingerprint={"cpu_model": "synthetic"},
                median_ms=ms,
                iqr_ms=0.0,
                mad_ms=0.0,
                min_ms=ms,
                n_runs=5,
                attempts=1,
                stable=True,
            )
        )
    return rows


def write_synthetic_db(path, rows):
    """A measurement database at `path` holding `rows` and the synthetic architecture's groups."""
    from toolchain.latency.store import MeasurementStore

    with MeasurementStore(path) as store:
        store.save_groups("synthetic:net", INPUT_SHAPE, list(GROUPS))
        for row in rows:
            store.insert(row)
    return path

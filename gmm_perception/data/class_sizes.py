"""Real sizes of the object classes, for scenes and for training a classifier on metric clouds.

A robot's LiDAR or depth camera measures objects in metres, and size tells apart classes that
shape alone confuses at a glance (a 0.9 m chair, a 2 m bed, a 4.3 m car). The demo scenes size
their models with `class_scale`; `size_factor` spreads training sizes around the same values with
a spread (`size_spread`, log-normal), so that a classifier does not learn one exact size per class.
"""
from __future__ import annotations

import numpy as np

# Target size per class, in metres: ("height", h) scales the model to that height, ("length", l)
# its longest horizontal side to l. Scaling is uniform, so the model keeps its proportions;
# length is used where the footprint is the defining size (a 2 m sofa is ~0.8 m tall, an
# L-shaped corner sofa scaled by height would become a 2.5 m square).
CLASS_SIZES: dict[str, tuple[str, float]] = {
    "chair": ("height", 0.9),
    "armchair": ("height", 0.85),
    "stool": ("height", 0.45),
    "table": ("height", 0.75),
    "sofa": ("length", 2.0),
    "bed": ("length", 2.0),
    "cabinet": ("height", 1.2),
    "bookshelf": ("height", 1.8),
    "lamp": ("height", 1.5),
    "plant": ("height", 0.8),
    "person": ("height", 1.75),
    "tree": ("height", 3.0),
    "door": ("height", 2.0),
    "window": ("height", 1.2),
    "car": ("length", 4.3),
}
DEFAULT_SIZE: tuple[str, float] = ("height", 0.8)


def class_scale(class_name: str, normalised_vertices: np.ndarray) -> float:
    """Metres per normalised unit that give the model its class's size (`CLASS_SIZES`)."""
    mode, size = CLASS_SIZES.get(class_name, DEFAULT_SIZE)
    extent = np.ptp(np.asarray(normalised_vertices, dtype=np.float64), axis=0)
    reference = extent[2] if mode == "height" else extent[:2].max()
    if reference <= 0:
        raise ValueError(f"a {class_name} model is flat along the axis that sets its size")
    return float(size / reference)


def size_factor(rng: np.random.Generator, spread: float) -> float:
    """A training size's factor on its class's size: exp(N(0, spread)), at most 2 spreads off."""
    return float(np.exp(np.clip(spread * rng.standard_normal(), -2 * spread, 2 * spread)))


def trained_size_spread(data_config: dict) -> float | None:
    """The size spread a classifier was trained with at real sizes (its checkpoint's
    `config.data`: metric_sizes, size_spread), or None when it saw unit shapes: what the clouds
    it is scored or calibrated on must follow."""
    if not data_config.get("metric_sizes"):
        return None
    return float(data_config.get("size_spread", 0.2))

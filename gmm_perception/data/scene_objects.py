"""Object clouds the scene pipeline's segmentation made (evaluation/scene_objects.py harvests
them from simulated robot drives): the clouds flat with offsets, in the world frame in metres
(z up, the floor at z = 0), with per cloud its class, model id, scene, object name, frame,
sensor kind and range (sensor to the cloud's box centre)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class SceneObjects:
    points: np.ndarray  # (P, 3) float32, every cloud's points, world frame, metres
    offsets: np.ndarray  # (K + 1,) int64: cloud k is points[offsets[k]:offsets[k + 1]]
    class_name: np.ndarray  # (K,) str
    model_id: np.ndarray  # (K,) str
    scene: np.ndarray  # (K,) int32
    object_name: np.ndarray  # (K,) str, unique within its scene
    frame: np.ndarray  # (K,) int32
    sensor: np.ndarray  # (K,) str: "lidar" or "depth"
    range_m: np.ndarray  # (K,) float32, sensor to the cloud's box centre
    dropped: dict  # what was left out: {"impure": clusters, "small": clusters, "layouts": draws}

    def __len__(self) -> int:
        return len(self.class_name)

    def cloud(self, k: int) -> np.ndarray:
        return self.points[self.offsets[k]:self.offsets[k + 1]]

    def point_counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def tracks(self, indices: np.ndarray) -> dict[tuple[int, str], np.ndarray]:
        """The clouds `indices` grouped by object (scene, object name): per object the
        positions in `indices` of its clouds, in frame order."""
        grouped: dict[tuple[int, str], list[int]] = {}
        for position, k in enumerate(indices):
            grouped.setdefault((int(self.scene[k]), str(self.object_name[k])), []).append(position)
        return {key: np.array(sorted(rows, key=lambda r: self.frame[indices[r]]), dtype=np.int64)
                for key, rows in grouped.items()}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, points=self.points, offsets=self.offsets,
                            class_name=self.class_name, model_id=self.model_id,
                            scene=self.scene, object_name=self.object_name, frame=self.frame,
                            sensor=self.sensor, range_m=self.range_m,
                            dropped=np.array([f"{k}={v}" for k, v in self.dropped.items()]))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SceneObjects":
        with np.load(path) as data:
            fields = {name: data[name] for name in data.files if name != "dropped"}
            dropped = {k: int(v) for k, v in (item.split("=") for item in data["dropped"])}
        return cls(**fields, dropped=dropped)


def default_path(split: str, scenes: int, seed: int, data_dir: Path) -> Path:
    return data_dir / "scene_objects" / f"pool_{split}_{scenes}scenes_seed{seed}.npz"

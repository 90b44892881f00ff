"""Simulated range sensors: a pinhole depth camera and a spinning LiDAR, ray cast against meshes.

Every scan keeps its exact sensor pose, so registration and pose-estimation data built from scans
has exact ground truth. Each ray returns at most one point (the first surface it meets, so occlusion
is real), the beam pattern fixes the resolution, and noise moves a return along its own ray (range
noise), as a time-of-flight or stereo sensor errs, never isotropically.

Frames:
    * Depth camera: the optical frame (REP 103 ``*_optical_frame``): z forward, x right, y down.
      Pixel (u, v) = (column, row); integer coordinates are pixel centres (the OpenCV convention),
      so a centred principal point is ``((width - 1) / 2, (height - 1) / 2)``.
    * Spinning LiDAR: x forward, y left, z up. Azimuth 0 is +x, increasing towards +y; ring 0 is the
      lowest beam (the Velodyne/Ouster ROS drivers' ring order).
    * ``T_world_sensor`` maps sensor-frame points into the world (mesh) frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import open3d as o3d
import trimesh

from gmm_perception.geometry.transforms import invert_transform, make_transform

_UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class DepthCamera:
    """Pinhole depth camera; the defaults are a small ideal (noise-free) 160 x 120 camera.

    Depth z (along the optical axis) is what the sensor measures: ``min_range``/``max_range`` gate
    the measured z, and the noise is ``sigma_z = noise_sigma[0] + noise_sigma[1] * z**2``, the
    stereo/structured-light model (disparity error is constant in pixels, so depth error grows with
    z^2). A pixel keeps its ray, so depth noise is noise along the ray.
    """

    width: int = 160
    height: int = 120
    fx: float = 100.0
    fy: float = 100.0
    cx: float = 79.5
    cy: float = 59.5
    min_range: float = 0.1
    max_range: float = 10.0
    noise_sigma: tuple[float, float] = (0.0, 0.0)  # (a, b) of sigma_z = a + b z^2, metres
    dropout: float = 0.0  # probability that a valid return is lost at random
    max_incidence_deg: float = 90.0  # returns hitting the surface more obliquely are lost
    depth_step: float = 0.0  # depth quantisation step in metres; 0 keeps full precision

    def __post_init__(self):
        if self.width < 1 or self.height < 1 or self.fx <= 0 or self.fy <= 0:
            raise ValueError("width, height, fx and fy must be positive")
        _check_common(self.min_range, self.max_range, self.dropout)
        if len(self.noise_sigma) != 2 or min(self.noise_sigma) < 0:
            raise ValueError("noise_sigma must be two non-negative numbers (a, b)")
        if not 0.0 < self.max_incidence_deg <= 90.0:
            raise ValueError("max_incidence_deg must be in (0, 90]")
        if self.depth_step < 0:
            raise ValueError("depth_step must be non-negative")

    @classmethod
    def realsense_d435(cls) -> "DepthCamera":
        """Intel RealSense D435 depth stream in its native 848 x 480 mode.

        The datasheet gives an 87 x 58 degree depth field of view for 16:9 modes; square pixels
        with the 87 degree horizontal field give fx = fy = 446.8 and 56.5 degrees vertically. (A
        640 x 480 mode with the same 87 degrees would need non-square pixels, so the native mode is
        used.)
        Noise: Intel's depth-tuning white paper gives RMS error = z^2 * subpixel / (f * baseline);
        with subpixel 0.08, baseline 50 mm and f = 446.8 px that is 3.6 mm/m^2 * z^2, plus 1 mm.
        Depth comes in 1 mm units (z16); min-z about 0.2 m in this mode. The 1 % random dropout and
        the 80 degree grazing limit are assumptions standing in for stereo-matching holes.
        """
        f = float(424.0 / np.tan(np.radians(87.0 / 2)))
        return cls(width=848, height=480, fx=f, fy=f, cx=423.5, cy=239.5, min_range=0.2,
                   max_range=10.0, noise_sigma=(0.001, 0.08 / (f * 0.050)), dropout=0.01,
                   max_incidence_deg=80.0, depth_step=0.001)

    def downscaled(self, factor: int) -> "DepthCamera":
        """The same field of view at 1/factor resolution (a decimated stream); noise unchanged."""
        if factor < 1:
            raise ValueError("factor must be >= 1")
        return DepthCamera(
            width=self.width // factor, height=self.height // factor, fx=self.fx / factor,
            fy=self.fy / factor, cx=(self.cx + 0.5) / factor - 0.5,
            cy=(self.cy + 0.5) / factor - 0.5, min_range=self.min_range, max_range=self.max_range,
            noise_sigma=self.noise_sigma, dropout=self.dropout,
            max_incidence_deg=self.max_incidence_deg, depth_step=self.depth_step)

    @property
    def stochastic(self) -> bool:
        return self.dropout > 0 or max(self.noise_sigma) > 0

    def depth_sigma(self, z: np.ndarray | float) -> np.ndarray | float:
        return self.noise_sigma[0] + self.noise_sigma[1] * np.square(z)

    def pixels(self) -> np.ndarray:
        """(width * height, 2) int32 (u, v), row-major: ray i is pixel (i % width, i // width)."""
        v, u = np.divmod(np.arange(self.width * self.height, dtype=np.int32), self.width)
        return np.stack([u, v], axis=1)

    def ray_directions(self) -> np.ndarray:
        """Per-pixel directions with unit z, so the ray parameter of a hit is its depth."""
        uv = self.pixels().astype(np.float64)
        dirs = np.ones((len(uv), 3))
        dirs[:, 0] = (uv[:, 0] - self.cx) / self.fx
        dirs[:, 1] = (uv[:, 1] - self.cy) / self.fy
        return dirs.astype(np.float32)

    def look_at(self, eye: np.ndarray, target: np.ndarray) -> np.ndarray:
        """T_world_sensor with z towards `target`, x horizontal and y down (image upright)."""
        forward, right, up = _look_axes(eye, target)
        return make_transform(np.stack([right, -up, forward], axis=1), eye)

    def _measure(self, t: np.ndarray, cos_incidence: np.ndarray, rng: np.random.Generator | None
                 ) -> tuple[np.ndarray, np.ndarray]:
        z = t.astype(np.float64)
        keep = np.ones(len(z), dtype=bool)
        if self.max_incidence_deg < 90.0:
            keep &= cos_incidence >= np.cos(np.radians(self.max_incidence_deg))
        if self.dropout > 0:
            keep &= rng.random(len(z)) >= self.dropout
        if max(self.noise_sigma) > 0:
            z = z + rng.standard_normal(len(z)) * self.depth_sigma(z)
        if self.depth_step > 0:
            z = np.round(z / self.depth_step) * self.depth_step
        keep &= (z >= self.min_range) & (z <= self.max_range)
        return z, keep


@dataclass(frozen=True)
class SpinningLidar:
    """Multi-beam spinning LiDAR; the defaults are a small ideal 16-beam, 1 degree sensor.

    Beams are evenly spaced over ``vertical_fov`` (degrees, lowest first) and fire every
    ``horizontal_resolution`` degrees over a full turn. Ranges are radial: the gate applies to the
    measured range and the noise ``N(0, range_noise_sigma)`` moves a return along its beam.
    """

    channels: int = 16
    vertical_fov: tuple[float, float] = (-15.0, 15.0)
    horizontal_resolution: float = 1.0
    min_range: float = 0.3
    max_range: float = 100.0
    range_noise_sigma: float = 0.0
    dropout: float = 0.0

    def __post_init__(self):
        if self.channels < 1:
            raise ValueError("channels must be >= 1")
        low, high = self.vertical_fov
        if not -90.0 < low <= high < 90.0:
            raise ValueError("vertical_fov must be (min, max) degrees inside (-90, 90)")
        if not 0.0 < self.horizontal_resolution <= 360.0:
            raise ValueError("horizontal_resolution must be in (0, 360] degrees")
        _check_common(self.min_range, self.max_range, self.dropout)
        if self.range_noise_sigma < 0:
            raise ValueError("range_noise_sigma must be non-negative")

    @classmethod
    def velodyne_vlp16(cls) -> "SpinningLidar":
        """Velodyne VLP-16 at 10 Hz: 16 beams over +-15 degrees (2 degree spacing), 0.2 degrees
        azimuth, 100 m range; the datasheet's +-3 cm typical accuracy taken as 2 sigma."""
        return cls(channels=16, vertical_fov=(-15.0, 15.0), horizontal_resolution=0.2,
                   min_range=0.5, max_range=100.0, range_noise_sigma=0.015)

    @classmethod
    def ouster_os1_64(cls) -> "SpinningLidar":
        """Ouster OS1-64 (uniform beam spacing) in 1024 x 10 mode: 45 degree vertical field,
        360/1024 degrees azimuth, 120 m range, about 1 cm range precision."""
        return cls(channels=64, vertical_fov=(-22.5, 22.5), horizontal_resolution=360.0 / 1024,
                   min_range=0.5, max_range=120.0, range_noise_sigma=0.01)

    @property
    def stochastic(self) -> bool:
        return self.dropout > 0 or self.range_noise_sigma > 0

    @property
    def columns(self) -> int:
        return max(1, int(round(360.0 / self.horizontal_resolution)))

    @property
    def elevations_deg(self) -> np.ndarray:
        return np.linspace(*self.vertical_fov, self.channels)

    def rings(self) -> np.ndarray:
        """(channels * columns,) int16: ray i is ring i // columns, column i % columns."""
        return np.repeat(np.arange(self.channels, dtype=np.int16), self.columns)

    def ray_directions(self) -> np.ndarray:
        """Unit directions, so the ray parameter of a hit is its range."""
        elevation = np.radians(self.elevations_deg)[:, None]
        azimuth = np.radians(np.arange(self.columns) * (360.0 / self.columns))[None, :]
        dirs = np.stack(np.broadcast_arrays(np.cos(elevation) * np.cos(azimuth),
                                            np.cos(elevation) * np.sin(azimuth),
                                            np.sin(elevation)), axis=-1)
        return dirs.reshape(-1, 3).astype(np.float32)

    def look_at(self, eye: np.ndarray, target: np.ndarray) -> np.ndarray:
        """T_world_sensor with x towards `target`, y horizontal (left), z up-ish (tilted mount)."""
        forward, right, up = _look_axes(eye, target)
        return make_transform(np.stack([forward, -right, up], axis=1), eye)

    def _measure(self, t: np.ndarray, cos_incidence: np.ndarray, rng: np.random.Generator | None
                 ) -> tuple[np.ndarray, np.ndarray]:
        r = t.astype(np.float64)
        keep = np.ones(len(r), dtype=bool)
        if self.dropout > 0:
            keep &= rng.random(len(r)) >= self.dropout
        if self.range_noise_sigma > 0:
            r = r + rng.standard_normal(len(r)) * self.range_noise_sigma
        keep &= (r >= self.min_range) & (r <= self.max_range)
        return r, keep


Sensor = Union[DepthCamera, SpinningLidar]


@dataclass
class Scan:
    """One simulated frame. Row i of every per-point array belongs to the same return."""

    points_sensor: np.ndarray  # (N, 3) float32, sensor frame
    T_world_sensor: np.ndarray  # (4, 4) float64, the exact pose the scan was taken from
    hit_triangle: np.ndarray  # (N,) int64 face index within the hit geometry
    hit_geometry: np.ndarray  # (N,) int64 geometry id (the mesh's index in raycasting_scene)
    pixel: np.ndarray | None = None  # (N, 2) int32 (u, v); depth camera only
    ring: np.ndarray | None = None  # (N,) int16 beam index, 0 = lowest; LiDAR only

    def __len__(self) -> int:
        return len(self.points_sensor)

    def points_world(self) -> np.ndarray:
        T = self.T_world_sensor
        return (self.points_sensor @ T[:3, :3].T + T[:3, 3]).astype(np.float32)


def raycasting_scene(meshes: trimesh.Trimesh | Sequence[trimesh.Trimesh]
                     ) -> o3d.t.geometry.RaycastingScene:
    """An Open3D scene of one mesh or several; mesh k gets geometry id k. Build once, scan often."""
    scene = o3d.t.geometry.RaycastingScene()
    for mesh in [meshes] if isinstance(meshes, trimesh.Trimesh) else meshes:
        scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, dtype=np.float32)),
                            o3d.core.Tensor(np.asarray(mesh.faces, dtype=np.uint32)))
    return scene


def scan(target: trimesh.Trimesh | Sequence[trimesh.Trimesh] | o3d.t.geometry.RaycastingScene,
         sensor: Sensor, T_world_sensor: np.ndarray,
         rng: np.random.Generator | None = None) -> Scan:
    """Ray cast every beam of `sensor` from pose `T_world_sensor`; noise and dropout need `rng`."""
    if sensor.stochastic and rng is None:
        raise ValueError("this sensor adds noise or dropout: pass an rng for reproducible scans")
    T = np.asarray(T_world_sensor, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T_world_sensor must be 4x4, got {T.shape}")
    scene = (target if isinstance(target, o3d.t.geometry.RaycastingScene)
             else raycasting_scene(target))
    dirs_sensor = sensor.ray_directions()
    dirs_world = (dirs_sensor.astype(np.float64) @ T[:3, :3].T).astype(np.float32)
    rays = np.empty((len(dirs_world), 6), dtype=np.float32)
    rays[:, :3] = T[:3, 3]
    rays[:, 3:] = dirs_world
    result = scene.cast_rays(o3d.core.Tensor(rays))
    t_hit = result["t_hit"].numpy()
    hit = np.flatnonzero(np.isfinite(t_hit))
    d = dirs_world[hit]
    cos_incidence = (np.abs(np.sum(result["primitive_normals"].numpy()[hit] * d, axis=1))
                     / np.linalg.norm(d, axis=1))
    t_measured, keep = sensor._measure(t_hit[hit], cos_incidence, rng)
    rays_kept = hit[keep]
    points = (dirs_sensor[rays_kept] * t_measured[keep, None]).astype(np.float32)
    is_camera = isinstance(sensor, DepthCamera)
    return Scan(
        points_sensor=points, T_world_sensor=T,
        hit_triangle=result["primitive_ids"].numpy()[rays_kept].astype(np.int64),
        hit_geometry=result["geometry_ids"].numpy()[rays_kept].astype(np.int64),
        pixel=sensor.pixels()[rays_kept] if is_camera else None,
        ring=None if is_camera else sensor.rings()[rays_kept])


def scan_object(mesh: trimesh.Trimesh, sensor: Sensor, rng: np.random.Generator,
                distance_range: tuple[float, float] = (2.0, 3.0),
                elevation_range: tuple[float, float] = (-20.0, 60.0)) -> tuple[Scan, np.ndarray]:
    """Scan `mesh` from a random viewpoint aimed at its bounding-box centre.

    The viewpoint is uniform in azimuth, uniform over the sphere's area between the elevations
    (degrees, so no crowding towards the poles) and uniform in distance. The world frame is the
    mesh (object) frame, so ``scan.T_world_sensor`` is T_object_sensor. Returns the scan and
    T_sensor_object, the pose of the object in the sensor frame.
    """
    low, high = np.radians(elevation_range)
    if not -np.pi / 2 < low <= high < np.pi / 2:
        raise ValueError("elevation_range must lie strictly inside (-90, 90) degrees")
    if not 0 < distance_range[0] <= distance_range[1]:
        raise ValueError("distance_range must be (min, max) with 0 < min <= max")
    centre = np.asarray(mesh.bounds, dtype=np.float64).mean(axis=0)
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    elevation = np.arcsin(rng.uniform(np.sin(low), np.sin(high)))
    distance = rng.uniform(*distance_range)
    eye = centre + distance * np.array([np.cos(elevation) * np.cos(azimuth),
                                        np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    T_object_sensor = sensor.look_at(eye, centre)
    return scan(mesh, sensor, T_object_sensor, rng), invert_transform(T_object_sensor)


def _look_axes(eye: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World-frame (forward, right, up) of a viewer at `eye` facing `target` with world z up."""
    forward = np.asarray(target, dtype=np.float64) - np.asarray(eye, dtype=np.float64)
    norm = np.linalg.norm(forward)
    if norm == 0:
        raise ValueError("eye and target coincide")
    forward /= norm
    right = np.cross(forward, _UP)
    if np.linalg.norm(right) < 1e-6:
        raise ValueError("viewing direction is vertical: the image's up direction is undefined")
    right /= np.linalg.norm(right)
    return forward, right, np.cross(right, forward)


def _check_common(min_range: float, max_range: float, dropout: float) -> None:
    if not 0 <= min_range < max_range:
        raise ValueError("ranges must satisfy 0 <= min_range < max_range")
    if not 0 <= dropout < 1:
        raise ValueError("dropout must be in [0, 1)")

"""Upsampling stage: a sparse object cloud -> `output_points` points of its surface, with ShapeGF
(Cai et al., ECCV 2020; `models/shapegf.py`).

Two samplers of the same learned gradient field:
* prior: annealed Langevin dynamics from the uniform prior over every noise level (the paper's):
  the output is a fresh sample of the encoded shape, whatever the input's layout;
* denoise: the chains start from the input points (each point an equal share of them) and run
  only the levels sigma <= start_sigma (default 0.03: the last three of ten): about a third of
  the network evaluations, and it keeps the input's layout (a partial view stays partial rather
  than being completed).

The model normalises the input itself (models/shapegf.py: from the input cloud alone), so any
frame and metric scale works; the output is in the input's frame. Training used 256-1024 input
points: larger inputs are resampled down to `max_input_points`.

Gating: an object whose cloud is already at least `density_threshold` points per square metre of
its bounding surface (`geometry.points.surface_density`) is passed through untouched (its finite
points, `upsampled` False): the stage densifies sparse objects and never replaces a dense scan
with a model's guess of fewer points.

Both random streams (the resampling and the sampler's noise) are reseeded on every call: the
dense cloud is a function of the input cloud and the seed alone, not of the clouds before it, so
a replayed bag, or the same object seen twice, gives the same output.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from gmm_perception.geometry.points import MIN_OBJECT_POINTS, object_points, resample, \
    surface_density
from gmm_perception.pipeline.configs import UpsampleConfig

MIN_POINTS = MIN_OBJECT_POINTS  # re-exported: the least cloud the stage takes


@dataclass(frozen=True)
class UpsamplingResult:
    points: np.ndarray  # (output_points, 3) float32 in the input cloud's frame; the input's
    # finite points when passed through
    seconds: float
    upsampled: bool = True  # False: the input was dense enough and is passed through
    density: float = 0.0  # the input's points per square unit of its bounding surface


class Upsampler:
    """Callable stage over a ShapeGf model."""

    def __init__(self, config: UpsampleConfig, model: torch.nn.Module, device: torch.device):
        self.config = config
        self.model, self.device = model.eval(), torch.device(device)
        self.output_points, self.steps_per_level = config.output_points, config.steps_per_level
        self.mode = config.mode
        self.start_sigma = config.start_sigma or None  # None: the model's default
        self.max_input_points, self.seed = config.max_input_points, config.seed

    @torch.no_grad()
    def __call__(self, points: np.ndarray) -> UpsamplingResult:
        started = time.perf_counter()
        points = object_points(points, "upsample", MIN_POINTS, finite=True)
        density = surface_density(points)
        if 0 < self.config.density_threshold <= density:
            return UpsamplingResult(points, time.perf_counter() - started, False, density)
        if len(points) > self.max_input_points:
            points = resample(points, self.max_input_points, np.random.default_rng(self.seed))
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        dense = self.model.upsample(
            torch.from_numpy(points).to(self.device), self.output_points, self.steps_per_level,
            prior="uniform", generator=generator, denoise_from_input=self.mode == "denoise",
            start_sigma=self.start_sigma if self.mode == "denoise" else None)
        return UpsamplingResult(dense.float().cpu().numpy(), time.perf_counter() - started,
                                True, density)

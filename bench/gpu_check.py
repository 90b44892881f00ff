"""GPU check: every torch stage and one training step of every model, on the CPU and on CUDA.

    PYTHONPATH=. python3 bench/gpu_check.py [--quick] [--repeats N] [--threads N] [--tf32]
                                            [--json PATH]

One row per stage: the input size, the median milliseconds over `--repeats` timed calls after
warm-up on the CPU and on CUDA (torch.cuda.synchronize around each call), the speed-up, the
largest absolute difference between the CPU's and CUDA's outputs for the same inputs and the same
weights, that difference relative to the largest CPU output and the share of output values off
by more than the row's tolerance, each beside the CPU's own noise floor (`PERTURB`), and the peak
CUDA memory of the row (torch.cuda.max_memory_allocated, reset per row: weights, inputs,
activations, optimiser state). Without CUDA it says so in one line, runs the CPU column (noise
floor included) and exits 0; with CUDA it exits 1 when a row fails or does not match.

Weights: the shipped checkpoints (checkpoints/<model>/*_sh3d.pt, through
`models.checkpoint.load_checkpoint`: map_location cpu, weights_only) for DeepGMR, GMCN and PointGMM
when present, else seeded random weights at the sizes of config/train/<model>.yaml; `--quick`
uses tiny seeded random models and clouds (for the tests). Inputs are seeded ellipsoid surfaces,
built on the CPU and moved with `.to(device)`, so both columns see the same numbers.

Randomness inside a stage is drawn once on the CPU and moved to the device (the devices' random
generators differ): the ShapeGF sampling row times `ShapeGf.upsample` itself but compares the same
chain (`_langevin_replay`) with noise drawn on the CPU; the PointGMM training step takes its VAE
noise from a fixed tensor; the ShapeGF step draws its levels and noise on the CPU (as
`shapegf_loss` does with a generator); the PointNet classifier's dropout is off. A training row
compares the loss and every gradient of the first step from the same weights (Adam's first update
is lr x sign(gradient), which flips with the sign of a near-zero gradient). TF32 is off by default
so that CUDA computes in the same FP32 as the CPU; `--tf32` times with it on (tolerances x 10).

Imports only torch, numpy and scipy (no open3d, trimesh, rclpy, tqdm or yaml), so it runs from a
bare source tree on a GPU machine.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import math
import statistics
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

if __package__ in (None, ""):  # run as a file (python bench/<name>.py): import `bench` from here
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench._report import environment, print_table, write_json  # noqa: E402
from gmm_perception.geometry.rri import rri_features  # noqa: E402
from gmm_perception.gmm.registration import IsotropicGmm, align_mixtures, \
    fit_isotropic_gmm  # noqa: E402
from gmm_perception.models.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from gmm_perception.models.deepgmr import DeepGmr, DeepGmrConfig, deepgmr_loss  # noqa: E402
from gmm_perception.models.gmcn import Gmcn, GmcnConfig, fit_input  # noqa: E402
from gmm_perception.models.pointgmm import PointGmm, PointGmmConfig  # noqa: E402
from gmm_perception.models.pointgmm_loss import pointgmm_loss  # noqa: E402
from gmm_perception.models.registry import MODELS, model_from_payload  # noqa: E402
from gmm_perception.models.shapegf import ShapeGf, ShapeGfConfig  # noqa: E402
from gmm_perception.models.shapegf_loss import score_matching_loss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "bench" / "results" / "gpu_check.json"
SEED = 0
# The noise floor: the CPU's outputs for inputs times (1 + PERTURB N(0, 1)), a few float32
# roundings, against its outputs for the inputs. Neighbour sets, k-means assignments and GMCN's
# groupings are piecewise constant, and a long sampling chain amplifies, so a few values may jump
# whichever device rounds differently. CUDA matches when its relative difference is within the
# row's tolerance, or within FLOOR_FACTOR x the floor's with at most FLOOR_FACTOR x the floor's
# share of values off by more than the tolerance.
PERTURB = 1e-6
FLOOR_FACTOR = 10.0
SHIPPED = {name: f"checkpoints/{name}/{name}_sh3d.pt" for name in ("deepgmr", "gmcn", "pointgmm")}
NOT_IMPLEMENTED = "not implemented"

# Model sizes of config/train/<model>.yaml (copied: the GPU machine has no yaml).
TRAIN_CONFIGS: dict[str, dict[str, Any]] = {
    "deepgmr": dict(components=16, feature_dim=256, encoder_widths=(64, 128, 256),
                    head_widths=(256, 128, 64), use_rri=True, rri_neighbours=20),
    "gmcn": dict(input_components=64, channels=(8, 16, 32, 64), components=(32, 16, 8, 4)),
    "pointgmm": dict(latent=128, hidden=128, depth=3, roots=8, children=4, dropout=0.0,
                     encoder_widths=(64, 128, 256), encoder_fc=(256,), canonical_yaw=True),
    "shapegf": dict(latent=128, encoder_widths=(128, 128, 256, 512), encoder_fc=(256, 128),
                    blocks=4, width=128, norm="layer", steps_per_level=5, input_guide=True,
                    sigma_scaled_output=True, guide_normal=True),
    "pointnet_cls": dict(local_widths=(64, 64), global_widths=(64, 128, 1024),
                         head_widths=(512, 256), dropout=0.3),
}
QUICK_CONFIGS: dict[str, dict[str, Any]] = {
    "deepgmr": dict(components=4, feature_dim=32, encoder_widths=(16, 32), head_widths=(32, 16),
                    rri_neighbours=8),
    "gmcn": dict(num_classes=5, input_components=16, channels=(4,), components=(8,),
                 final_dense_components=8, fit_points=128, fit_kmeans_points=64),
    "pointgmm": dict(latent=16, hidden=16, depth=1, roots=4, children=2, dropout=0.0,
                     encoder_widths=(16, 32), encoder_fc=(16,)),
    "shapegf": dict(latent=8, encoder_widths=(16, 32), encoder_fc=(16,), blocks=2, width=32,
                    norm="layer", levels=2, steps_per_level=1, input_guide=True,
                    sigma_scaled_output=True),
    "pointnet_cls": dict(num_classes=5, local_widths=(16, 16), global_widths=(16, 32),
                         head_widths=(16,), dropout=0.3),
}
# The loss settings of config/train/*.yaml that change a step's work.
SHAPEGF_WEIGHT_POWER = 2.0
GRAD_CLIP = {"shapegf": 10.0}
LR = 1e-3


@dataclass(frozen=True)
class Sizes:
    points: int  # one cloud of a pair / one object (DeepGMR, RRI)
    object_points: int  # one object (GMCN, PointGMM, PointNet)
    batch: int  # training batch
    sparse: int  # ShapeGF input
    dense: int  # ShapeGF output (sampling)
    targets: int  # ShapeGF training targets


DEFAULT_SIZES = Sizes(points=1024, object_points=2048, batch=16, sparse=512, dense=2048,
                      targets=1024)
QUICK_SIZES = Sizes(points=128, object_points=128, batch=2, sparse=64, dense=128, targets=64)


Clouds = Callable[[int, int, int], torch.Tensor]  # (batch, count, seed) -> (batch, count, 3)


@dataclass
class Case:
    """A row: `make(device)` builds the stage's state (weights, inputs) on `device` and returns the
    timed call, whose first result is compared across devices unless `compare` gives the call
    whose result is (same signature as `make`)."""

    stage: str
    size: str
    weights: str
    make: Callable[[torch.device], Callable[[], Any]] | None
    tolerance: float = 1e-4  # on max |cpu - cuda| / max |cpu|
    compare: Callable[[torch.device], Callable[[], Any]] | None = None
    note: str = ""


@dataclass
class Row:
    stage: str
    size: str
    weights: str
    status: str = "ok"
    cpu_ms: float | None = None
    cuda_ms: float | None = None
    speedup: float | None = None
    max_abs_diff: float | None = None
    rel_diff: float | None = None
    rel_floor: float | None = None
    share_off: float | None = None  # of the output values: |cpu - cuda| > tolerance x max |cpu|
    floor_share_off: float | None = None
    tolerance: float | None = None
    match: bool | None = None
    peak_cuda_mib: float | None = None
    note: str = ""
    errors: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------- inputs
def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def surface_clouds(batch: int, count: int, seed: int, perturb: float = 0.0) -> torch.Tensor:
    """(batch, count, 3) float32: points on ellipsoids (axes 0.3-1), turned, shifted, noisy;
    with `perturb`, every coordinate times (1 + perturb N(0, 1)) (the noise-floor inputs)."""
    rng = np.random.default_rng(seed)
    clouds = []
    for _ in range(batch):
        directions = rng.normal(size=(count, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        points = directions * rng.uniform(0.3, 1.0, size=3)
        points = points @ _rotation(rng).T + rng.uniform(-0.2, 0.2, size=3)
        clouds.append(points + rng.normal(scale=0.005, size=points.shape))
    clouds = np.stack(clouds)
    if perturb:
        clouds *= 1 + perturb * np.random.default_rng(seed + 1000).normal(size=clouds.shape)
    return torch.from_numpy(clouds).float()


def _transforms(batch: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    out = np.tile(np.eye(4), (batch, 1, 1))
    for t in out:
        t[:3, :3] = _rotation(rng)
        t[:3, 3] = rng.uniform(-0.5, 0.5, size=3)
    return torch.from_numpy(out).float()


def _apply(transform: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return points @ transform[:, :3, :3].transpose(1, 2) + transform[:, None, :3, 3]


def _noisy(points: torch.Tensor, seed: int, sigma: float = 0.01) -> torch.Tensor:
    """Noise on a pair's source (the noisy setting): without it DeepGMR recovers an exact copy's
    pose whatever its weights, and the loss and its gradients are rounding noise."""
    return points + sigma * torch.randn(points.shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------- models
def _model(name: str, config_class, model_class, quick: bool) -> tuple[torch.nn.Module, str]:
    """(the model on the CPU, where its weights came from): always the same weights."""
    path = ROOT / SHIPPED[name] if name in SHIPPED else None
    if not quick and path is not None and path.is_file():
        try:
            payload = load_checkpoint(path, expected_model=name, map_location="cpu")
            return model_from_payload(payload, "cpu"), path.name
        except CheckpointError as exc:
            print(f"note: {exc}; {name} runs with random weights", file=sys.stderr)
    torch.manual_seed(SEED)
    config = (QUICK_CONFIGS if quick else TRAIN_CONFIGS)[name]
    return model_class(config_class(**config)), "random"


def _on(model: torch.nn.Module, device: torch.device, train: bool) -> torch.nn.Module:
    model = copy.deepcopy(model).to(device)
    return model.train() if train else model.eval()


def _eval_call(function: Callable[[], Any]) -> Callable[[], Any]:
    def call():
        with torch.no_grad():
            return function()
    return call


def _training_call(model: torch.nn.Module, loss: Callable[[], torch.Tensor],
                   clip: float = 0.0) -> Callable[[], Any]:
    """One step as `train.loop` takes it: zero_grad, loss, backward, (clip), Adam step. Returns
    the loss and the gradients of this step (fresh tensors every step: set_to_none)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=LR)

    def step():
        optimiser.zero_grad(set_to_none=True)
        value = loss()
        value.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        grads = [p.grad for p in params if p.grad is not None]
        optimiser.step()
        return [value.detach(), *grads]
    return step


# ------------------------------------------------------------------------------- cases
def deepgmr_cases(quick: bool, sizes: Sizes, clouds: Clouds) -> list[Case]:
    base, weights = _model("deepgmr", DeepGmrConfig, DeepGmr, quick)
    k = base.config.rri_neighbours
    n, j = sizes.points, base.config.components
    target = clouds(1, n, SEED + 1)
    transform = _transforms(1, SEED + 2)
    source = _noisy(_apply(torch.linalg.inv(transform), target), SEED + 2)
    pair = torch.cat([source, target])
    logits = torch.randn(2, n, j, generator=torch.Generator().manual_seed(SEED)) * 2.0
    gamma = torch.softmax(logits, dim=-1)
    src_gmm = fit_isotropic_gmm(pair[:1], gamma[:1])
    hypotheses = 16  # pairs aligned at once
    moved = _transforms(hypotheses, SEED + 3)
    tgt_gmm = IsotropicGmm(src_gmm.weights.expand(hypotheses, -1),
                           _apply(moved, src_gmm.means.expand(hypotheses, -1, -1)),
                           src_gmm.variances.expand(hypotheses, -1) * 1.1)
    src_gmm = IsotropicGmm(*(t.expand(hypotheses, *t.shape[1:]) for t in dataclasses.astuple(
        src_gmm)))

    def rri(device):
        x = pair.to(device)
        return _eval_call(lambda: rri_features(x, k))

    def fit(device):
        x, g = pair.to(device), gamma.to(device)
        return _eval_call(lambda: fit_isotropic_gmm(x, g))

    def align(device):
        s = IsotropicGmm(*(t.to(device) for t in dataclasses.astuple(src_gmm)))
        t = IsotropicGmm(*(t.to(device) for t in dataclasses.astuple(tgt_gmm)))
        return _eval_call(lambda: align_mixtures(s, t))

    def forward(device):
        model = _on(base, device, train=False)
        s, t = source.to(device), target.to(device)
        return _eval_call(lambda: model(s, t))

    train_target = clouds(sizes.batch, n, SEED + 4)
    train_transform = _transforms(sizes.batch, SEED + 5)
    train_source = _noisy(_apply(torch.linalg.inv(train_transform), train_target), SEED + 5)

    def train(device):
        model = _on(base, device, train=True)
        s, t, T = (x.to(device) for x in (train_source, train_target, train_transform))
        return _training_call(model, lambda: deepgmr_loss(model(s, t), T))

    return [
        Case("DeepGMR RRI features (geometry.rri)", f"2 clouds x {n} pts, k {k}", "-", rri, 1e-3,
             note="CPU: scipy KD-tree neighbours; CUDA: cdist top-k"),
        Case("DeepGMR M_Theta (fit_isotropic_gmm)", f"2 x {n} pts, J {j}", "-", fit),
        Case("DeepGMR M_T (align_mixtures)", f"{hypotheses} pairs, J {j}", "-", align),
        Case("DeepGMR forward (RRI+PointNet+M_Theta+M_T)", f"1 pair x {n} pts", weights, forward,
             1e-3),
        Case("train step: deepgmr", f"batch {sizes.batch} pairs x {n} pts", weights, train, 1e-2),
    ]


def gmcn_cases(quick: bool, sizes: Sizes, clouds: Clouds) -> list[Case]:
    base, weights = _model("gmcn", GmcnConfig, Gmcn, quick)
    n, k = sizes.object_points, base.config.input_components
    cloud = clouds(1, n, SEED + 6)
    mixture = fit_input(cloud, base.config)
    batch = clouds(sizes.batch, n, SEED + 7)
    batch_mixtures = fit_input(batch, base.config)
    labels = torch.arange(sizes.batch) % base.config.num_classes

    def fit(device):
        x = cloud.to(device)
        return _eval_call(lambda: fit_input(x, base.config))

    def forward(device):
        model = _on(base, device, train=False)
        x = mixture.to(device)
        return _eval_call(lambda: model(x))

    def train(device):
        model = _on(base, device, train=True)
        x, y = batch_mixtures.to(device), labels.to(device)
        return _training_call(model, lambda: torch.nn.functional.nll_loss(model(x), y)
                              + model.regularisation_loss())

    return [
        Case("GMCN input fit (fit_input, kmeans_em)", f"1 obj x {n} pts -> {k} Gaussians", "-",
             fit, 1e-3),
        Case("GMCN forward (fitted mixture -> log-probs)", f"1 obj, {k} Gaussians", weights,
             forward, 1e-3),
        Case("train step: gmcn", f"batch {sizes.batch}, {k} Gaussians (fit outside the step)",
             weights, train, 1e-2),
    ]


def pointgmm_cases(quick: bool, sizes: Sizes, clouds: Clouds) -> list[Case]:
    base, weights = _model("pointgmm", PointGmmConfig, PointGmm, quick)
    n = sizes.object_points
    finest = base.config.components[-1]
    cloud = clouds(1, n, SEED + 8)
    inputs = clouds(sizes.batch, n, SEED + 9)
    targets = clouds(sizes.batch, n, SEED + 9)  # the same shapes: full-cloud training
    noise = torch.randn(sizes.batch, base.config.latent,
                        generator=torch.Generator().manual_seed(SEED))

    def forward(device):
        model = _on(base, device, train=False)
        x = cloud.to(device)
        return _eval_call(lambda: model(x))

    def train(device):
        model = _on(base, device, train=True)
        x, y, eps = inputs.to(device), targets.to(device), noise.to(device)

        def encode(normalised):  # PointGmm.encode with the VAE noise fixed (see the docstring)
            mean, log_variance = model.encoder(normalised)
            z = mean if log_variance is None else mean + torch.exp(0.5 * log_variance) * eps
            return mean, log_variance, z
        model.encode = encode
        return _training_call(model, lambda: pointgmm_loss(model(x), y)[0])

    return [
        Case("PointGMM forward (cloud -> hGMM)", f"1 obj x {n} pts -> {finest} Gaussians",
             weights, forward, 1e-3),
        Case("PointGMM EM refinement", "-", "-", None,
             note="not implemented: models/pointgmm.py has no EM refinement"),
        Case("train step: pointgmm", f"batch {sizes.batch} x {n} pts, {n} targets", weights,
             train, 1e-2),
    ]


def _langevin_replay(model: ShapeGf, points: torch.Tensor, count: int, noise: torch.Tensor,
                     prior: torch.Tensor) -> torch.Tensor:
    """`ShapeGf.upsample` from the uniform prior (annealed Langevin, every level) with the prior
    and the step noise (levels x steps, B, count, 3) given instead of drawn on the device."""
    config = model.config
    code = model.encode(points)
    x, index = prior, 0
    for sigma in model.sigma_schedule().tolist():
        noise_sd = math.sqrt(2.0 * config.step_lr) * sigma
        for _ in range(config.steps_per_level):
            x = x + noise_sd * noise[index]
            index += 1
            x = (x + config.step_lr * model.score(x, code, sigma)).clamp(
                -config.prior_bound, config.prior_bound)
    return code.to_input_frame(x)


def shapegf_cases(quick: bool, sizes: Sizes, clouds: Clouds) -> list[Case]:
    base, weights = _model("shapegf", ShapeGfConfig, ShapeGf, quick)
    c = base.config
    sparse = clouds(1, sizes.sparse, SEED + 10)
    generator = torch.Generator().manual_seed(SEED)
    steps = c.levels * c.steps_per_level
    prior = (torch.rand(1, sizes.dense, 3, generator=generator) * 2 - 1) * c.prior_bound
    # Drawn one step at a time, in upsample's order: on the CPU the replay is upsample's chain.
    noise = torch.stack([torch.randn(1, sizes.dense, 3, generator=generator)
                         for _ in range(steps)])
    inputs = clouds(sizes.batch, sizes.sparse, SEED + 11)
    targets = clouds(sizes.batch, sizes.targets, SEED + 11)
    levels = torch.randint(c.levels, (sizes.batch,), generator=generator)
    step_noise = torch.randn(sizes.batch, sizes.targets, 3, generator=generator)

    def sample(device):
        model = _on(base, device, train=False)
        x = sparse.to(device)
        g = torch.Generator(device=device).manual_seed(SEED)
        return _eval_call(lambda: model.upsample(x, sizes.dense, generator=g))

    def replay(device):
        model = _on(base, device, train=False)
        x, p, eps = sparse.to(device), prior.to(device), noise.to(device)
        return _eval_call(lambda: _langevin_replay(model, x, sizes.dense, eps, p))

    def train(device):
        model = _on(base, device, train=True)
        x, y, eps = inputs.to(device), targets.to(device), step_noise.to(device)

        def loss():  # shapegf_loss with the level and noise draws made on the CPU
            code = model.encode(x)
            clean = code.to_model_frame(y)
            sigma = model.sigmas[levels.to(device)]
            return score_matching_loss(lambda p, s: model.score(p, code, s), clean, sigma,
                                       noise=eps, weight_power=SHAPEGF_WEIGHT_POWER)[0]
        return _training_call(model, loss, GRAD_CLIP["shapegf"])

    return [
        Case("ShapeGF sampling (upsample, annealed Langevin)",
             f"1 obj {sizes.sparse} -> {sizes.dense} pts, {c.levels} levels x "
             f"{c.steps_per_level} steps", weights, sample, 1e-2, compare=replay,
             note="diff: the same chain with noise drawn on the CPU"),
        Case("train step: shapegf", f"batch {sizes.batch}, {sizes.sparse} in, "
             f"{sizes.targets} targets", weights, train, 1e-2),
    ]


def pointnet_cases(quick: bool, sizes: Sizes, clouds: Clouds) -> list[Case]:
    if "pointnet_cls" not in MODELS:
        return []
    model_class, config_class = MODELS["pointnet_cls"]
    base, weights = _model("pointnet_cls", config_class, model_class, quick)
    n = sizes.object_points
    inputs = base.prepare(clouds(sizes.batch, n, SEED + 12))
    labels = torch.arange(sizes.batch) % base.config.num_classes

    def train(device):
        model = _on(base, device, train=True)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.eval()
        x, y = inputs.to(device), labels.to(device)
        return _training_call(model, lambda: torch.nn.functional.nll_loss(model(x), y)
                              + model.regularisation_loss())

    return [Case("train step: pointnet_cls", f"batch {sizes.batch} x {n} pts", weights, train,
                 1e-2, note="dropout off (its masks differ by device)")]


def cases(quick: bool, perturb: float = 0.0) -> list[Case]:
    """Every row; with `perturb`, the same rows on the noise floor's inputs."""
    sizes = QUICK_SIZES if quick else DEFAULT_SIZES

    def clouds(batch: int, count: int, seed: int) -> torch.Tensor:
        return surface_clouds(batch, count, seed, perturb)
    out: list[Case] = []
    for build in (deepgmr_cases, gmcn_cases, pointgmm_cases, shapegf_cases, pointnet_cases):
        out += build(quick, sizes, clouds)
    return out


# ------------------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(call: Callable[[], Any], device: torch.device, warmup: int, repeats: int
           ) -> tuple[Any, float]:
    """(the first call's result, median ms of `repeats` calls after `warmup` calls in all)."""
    _sync(device)
    first = call()
    for _ in range(max(warmup - 1, 0)):
        call()
    times = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        call()
        _sync(device)
        times.append((time.perf_counter() - started) * 1e3)
    return first, statistics.median(times)


def float_tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor inside `value` (tensors, dataclasses, sequences, dicts), as float CPU."""
    if isinstance(value, torch.Tensor):
        return [value.detach().to("cpu", torch.float64)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [t for f in dataclasses.fields(value) for t in float_tensors(getattr(value, f.name))]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in float_tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in float_tensors(item)]
    return []


def difference(reference: Any, other: Any, tolerance: float) -> tuple[float, float, float]:
    """Over all their tensors: max |reference - other|, that / max |reference|, and the share
    of values off by more than tolerance x max |reference|."""
    a, b = float_tensors(reference), float_tensors(other)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise ValueError("the devices returned differently shaped outputs")
    pairs = [(x, y) for x, y in zip(a, b) if x.numel()]
    if not pairs:
        return 0.0, 0.0, 0.0
    diff = max(float((x - y).abs().max()) for x, y in pairs)
    scale = max(float(x.abs().max()) for x, _ in pairs) or 1.0
    off = sum(int(((x - y).abs() > tolerance * scale).sum()) for x, y in pairs)
    return diff, diff / scale, off / sum(x.numel() for x, _ in pairs)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _error(device: torch.device, exc: BaseException) -> str:
    line = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return f"{device.type}: {line}"


def _result(case: Case, device: torch.device) -> Any:
    """The call whose result is compared, made once from fresh state."""
    return (case.compare or case.make)(device)()


def measure(case: Case, floor_case: Case | None, devices: list[torch.device], warmup: int,
            repeats: int, tolerance_factor: float = 1.0) -> Row:
    """One row: `case` timed on every device (the CPU first: its result is the reference), and
    `floor_case` (the same stage on perturbed inputs) once on the CPU for the noise floor."""
    row = Row(case.stage, case.size, case.weights, note=case.note)
    if case.make is None:
        row.status = NOT_IMPLEMENTED
        return row
    row.tolerance = case.tolerance * tolerance_factor
    outputs: dict[str, Any] = {}
    for device in devices:
        _free(device)
        try:
            reference = _result(case, device) if case.compare is not None else None
            _free(device)
            first, ms = _timed(case.make(device), device, warmup, repeats)
            outputs[device.type] = first if reference is None else reference
            if device.type == "cuda":
                row.cuda_ms = ms
                row.peak_cuda_mib = torch.cuda.max_memory_allocated(device) / 2**20
            else:
                row.cpu_ms = ms
        except Exception as exc:  # noqa: BLE001 - one failing stage must not hide the others
            row.errors.append(_error(device, exc))
            traceback.print_exc()
    if "cpu" in outputs and floor_case is not None:
        try:
            _, row.rel_floor, row.floor_share_off = difference(
                outputs["cpu"], _result(floor_case, torch.device("cpu")), row.tolerance)
        except Exception as exc:  # noqa: BLE001
            row.errors.append(f"noise floor: {exc}")
    if row.cpu_ms and row.cuda_ms:
        row.speedup = row.cpu_ms / row.cuda_ms
    if "cpu" in outputs and "cuda" in outputs:
        try:
            row.max_abs_diff, row.rel_diff, row.share_off = difference(
                outputs["cpu"], outputs["cuda"], row.tolerance)
            row.match = bool(row.rel_diff <= row.tolerance or (
                row.rel_floor is not None
                and row.rel_diff <= FLOOR_FACTOR * row.rel_floor
                and row.share_off <= FLOOR_FACTOR * row.floor_share_off))
        except Exception as exc:  # noqa: BLE001
            row.errors.append(f"compare: {exc}")
    if row.errors:
        row.status = "error: " + "; ".join(row.errors)
    elif row.match is False:
        row.status = "differs"
    return row


def run(quick: bool, repeats: int, devices: list[torch.device], tf32: bool = False,
        warmup: int | None = None) -> list[Row]:
    """Measure every case on `devices` (the CPU first: it is the reference)."""
    _set_tf32(tf32)
    warmup = warmup if warmup is not None else (1 if quick else 2)
    factor = 10.0 if tf32 else 1.0
    pairs = zip(cases(quick), cases(quick, PERTURB))
    return [measure(case, floor, devices, warmup, repeats, factor) for case, floor in pairs]


def _set_tf32(enabled: bool) -> None:
    with warnings.catch_warnings():  # newer torch prefers fp32_precision; both still work
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.3g}%"


def _pair(value: float | None, floor: float | None, spec: str) -> str:
    if spec == "%":
        return f"{_share(value)} / {_share(floor)}"
    return f"{_fmt(value, spec)} / {_fmt(floor, spec)}"


def table(rows: list[Row]) -> None:
    header = ["stage", "input", "weights", "CPU ms", "CUDA ms", "speed-up", "max |diff|",
              "rel diff / floor", "share off / floor", "tol", "match", "peak CUDA MiB"]
    body = []
    for r in rows:
        match = "-" if r.match is None else ("yes" if r.match else "NO")
        if r.status == NOT_IMPLEMENTED:
            match = NOT_IMPLEMENTED
        elif r.status.startswith("error"):
            match = "ERROR"
        implemented = r.status != NOT_IMPLEMENTED
        body.append([r.stage, r.size, r.weights, _fmt(r.cpu_ms, ".1f"), _fmt(r.cuda_ms, ".2f"),
                     _fmt(r.speedup, ".1f") + ("x" if r.speedup else ""),
                     _fmt(r.max_abs_diff, ".1e"),
                     _pair(r.rel_diff, r.rel_floor, ".1e") if implemented else "-",
                     _pair(r.share_off, r.floor_share_off, "%") if implemented else "-",
                     _fmt(r.tolerance, ".0e"), match, _fmt(r.peak_cuda_mib, ".1f")])
    print_table(header, body, "lllrrrrrrrlr")
    print(f"\nrel diff: max |CPU - CUDA| / max |CPU| over the row's outputs; share off: of the "
          f"values, those off by more than tol x max |CPU|; floor: the same for the CPU on its "
          f"inputs x (1 + {PERTURB:g} N(0, 1)). match: rel diff <= tol, or rel diff and share "
          f"off both <= {FLOOR_FACTOR:g} x the floor's")
    for r in rows:
        if r.note:
            print(f"  {r.stage}: {r.note}")
        for error in r.errors:
            print(f"  {r.stage}: ERROR {error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per device and row")
    parser.add_argument("--quick", action="store_true", help="tiny models and clouds (tests)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default)")
    parser.add_argument("--tf32", action="store_true",
                        help="allow TF32 on CUDA (matmul and cuDNN); default: strict FP32")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")]
    cuda = torch.cuda.is_available()
    if cuda:
        devices.append(torch.device("cuda", torch.cuda.current_device()))
        print(f"CUDA: {torch.cuda.get_device_name(devices[1])} (torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}); TF32 {'on' if args.tf32 else 'off'}")
    else:
        print(f"CUDA not available (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda}): CPU column only")
    print(f"CPU: {torch.get_num_threads()} torch threads; {'quick' if args.quick else 'default'}"
          f" sizes; median of {args.repeats} calls after warm-up\n")

    rows = run(args.quick, args.repeats, devices, args.tf32)
    table(rows)
    failed = [r.stage for r in rows if r.status not in ("ok", NOT_IMPLEMENTED)]
    env = {**environment(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "cuda_available": cuda, "cuda_version": torch.version.cuda,
           "cuda_device": torch.cuda.get_device_name(devices[1]) if cuda else None}
    write_json(args.json, {
        "environment": env,
        "settings": {"quick": args.quick, "repeats": args.repeats, "tf32": args.tf32,
                     "sizes": dataclasses.asdict(QUICK_SIZES if args.quick else DEFAULT_SIZES)},
        "rows": [dataclasses.asdict(r) for r in rows],
        "failed": failed,
    })
    if failed:
        print(f"\nfailed or differing rows: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

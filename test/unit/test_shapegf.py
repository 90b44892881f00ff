"""ShapeGF (Cai et al., ECCV 2020): the fitted score against the closed form of a Gaussian-smoothed
point set (eq. 2-3), the annealed Langevin sampler (eq. 9-10) against the exact statistics of a
Gaussian field, the input-frame mapping, the denoising score-matching loss, a training smoke test
through the upsampling task, and the registry round trip."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gmm_perception.data.procedural import procedural_shapes
from gmm_perception.models.registry import build_model
from gmm_perception.models.shapegf import ShapeGf, ShapeGfConfig, annealed_langevin, \
    geometric_sigmas, guide_only, smoothed_set_score, spread_starts
from gmm_perception.geometry.normalise import normalise_clouds
from gmm_perception.models.shapegf_loss import draw_sigmas, score_matching_loss
from gmm_perception.train.run import TASKS, load_config
from gmm_perception.train.upsampling import UpsamplingData, UpsamplingTask
from procedural_files import procedural_dataset
from round_trip import checkpoint_round_trip

TINY = dict(latent=8, encoder_widths=(16, 32), encoder_fc=(16,), blocks=2, width=32)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def smoothed_point_set_score(x: torch.Tensor, points: torch.Tensor, sigma: float) -> torch.Tensor:
    """Closed form, eq. 2-3: sigma^2 grad log (1/m) sum_i N(x; x_i, sigma^2 I)
    = -x + sum_i w_i(x) x_i, w = softmax_i(-|x - x_i|^2 / (2 sigma^2)). x (Q, 3), points (m, 3)."""
    logits = -torch.cdist(x, points).pow(2) / (2 * sigma ** 2)
    return torch.softmax(logits, dim=1) @ points - x


# ----------------------------------------------------------------------------- schedule
def test_sigmas_are_the_geometric_schedule():
    model = ShapeGf(ShapeGfConfig(**TINY))
    sigmas = model.sigmas
    assert len(sigmas) == 10 and float(sigmas[0]) == pytest.approx(1.0)
    assert float(sigmas[-1]) == pytest.approx(0.01)
    ratios = sigmas[1:] / sigmas[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 0.01 ** (1 / 9)))
    assert "sigmas" in model.state_dict()
    assert len(geometric_sigmas(0.5, 0.5, 1)) == 1
    kept = model.sigma_schedule(0.1)
    assert float(kept.max()) <= 0.1 and len(kept) == 5
    with pytest.raises(ValueError):
        ShapeGfConfig(norm="group")


# ----------------------------------------------------------------------------- (a) closed form
def test_decoder_fitted_to_a_tiny_shape_matches_the_closed_form_score():
    """Denoising score matching on 8 points: its minimiser is the score of the smoothed point set,
    so a small decoder fitted for 300 steps must reproduce eq. 2-3 where it was trained."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(8, 3, generator=generator) * 1.2 - 0.6  # one tiny shape
    sigmas = torch.tensor([0.4, 0.2])
    model = ShapeGf(ShapeGfConfig(**{**TINY, "blocks": 3, "width": 64}))
    z = torch.zeros(2, model.config.latent)  # one shape, its latent held fixed
    decoder = model.decoder
    optimiser = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    clean = points.repeat(128, 1).expand(2, -1, -1)  # (2 levels, 1024, 3)
    model.train()
    for _ in range(300):
        loss, _ = score_matching_loss(lambda x, s: decoder(x, z, s), clean, sigmas,
                                      generator=generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        for level, sigma in enumerate(sigmas.tolist()):
            # query points where the field was trained: samples of Q_sigma
            query = points[torch.randint(8, (2000,), generator=generator)] \
                + sigma * torch.randn(2000, 3, generator=generator)
            truth = smoothed_point_set_score(query, points, sigma)
            fitted = decoder(query.unsqueeze(0), z[:1], torch.tensor([sigma]))[0]
            cosine = torch.nn.functional.cosine_similarity(fitted, truth, dim=1)
            relative = (fitted - truth).norm() / truth.norm()
            # Tolerances: mean cosine >= 0.95 and relative L2 error <= 0.25 over the queries.
            assert float(cosine.mean()) >= 0.95, (sigma, float(cosine.mean()))
            assert float(relative) <= 0.25, (sigma, float(relative))


def test_input_guide_is_the_closed_form_score_of_the_input_plus_a_learned_correction():
    """With input_guide, the decoder's output is added to the smoothed input set's score at
    tau = max(sigma, guide_scale * spacing): a decoder whose output layer is zero returns
    exactly the closed form of eq. 2-3 with the input points as the shape (uncapped here; the
    cap is the next test's)."""
    generator = torch.Generator().manual_seed(3)
    model = ShapeGf(ShapeGfConfig(**{**TINY, "input_guide": True, "guide_scale": 0.5,
                                     "guide_clip": 1e6})).eval()
    torch.nn.init.zeros_(model.decoder.out.weight)
    torch.nn.init.zeros_(model.decoder.out.bias)
    points = torch.rand(2, 40, 3, generator=generator) * 4 - 2  # metres, any frame
    code = model.encode(points)
    inputs = code.to_model_frame(points)
    spacing = torch.stack([torch.cdist(p, p).fill_diagonal_(float("inf")).min(1).values.mean()
                           for p in inputs])
    torch.testing.assert_close(code.spacing, spacing)
    query = torch.randn(2, 50, 3, generator=generator)
    for sigma in (1.0, 0.01):  # above and below the spacing floor
        with torch.no_grad():
            s = model.score(query, code, sigma)
        for b in range(2):
            tau = max(sigma, 0.5 * float(spacing[b]))
            torch.testing.assert_close(s[b], smoothed_point_set_score(query[b], inputs[b], tau),
                                       atol=1e-5, rtol=1e-4)


def test_guide_only_copy_scores_the_capped_guide_and_leaves_the_model_untouched():
    """guide_only zeroes a copy's correction: its score is the model's minus the decoder's term
    (sigma * decoder output with sigma_scaled_output), the model itself keeps its weights."""
    generator = torch.Generator().manual_seed(4)
    model = ShapeGf(ShapeGfConfig(**{**TINY, "input_guide": True,
                                     "sigma_scaled_output": True})).eval()
    torch.nn.init.normal_(model.decoder.out.weight, std=0.5, generator=generator)
    assert guide_only(ShapeGf(ShapeGfConfig(**TINY))) is None
    guide = guide_only(model)
    points = torch.rand(1, 40, 3, generator=generator)
    code = model.encode(points)
    query = torch.randn(1, 30, 3, generator=generator)
    with torch.no_grad():
        for sigma in (0.3, 0.01):
            full, alone = model.score(query, code, sigma), guide.score(query, code, sigma)
            # the guide alone is capped at guide_clip * sigma
            assert float(alone.norm(dim=-1).max()) <= model.config.guide_clip * sigma * 1.0001
            tau = torch.maximum(torch.tensor(sigma), model.config.guide_scale * code.spacing)
            features = torch.cat([query, alone / tau.reshape(-1, 1, 1)], dim=-1)
            correction = sigma * model.decoder(features, code.z, torch.tensor([sigma]))
            assert float(correction.abs().max()) > 1e-3
            torch.testing.assert_close(full - alone, correction, atol=1e-6, rtol=1e-5)
    assert float(model.decoder.out.weight.detach().abs().max()) > 0


def test_the_guide_is_capped_at_guide_clip_sigma_far_from_the_input():
    model = ShapeGf(ShapeGfConfig(**{**TINY, "input_guide": True, "guide_clip": 3.0})).eval()
    torch.nn.init.zeros_(model.decoder.out.weight)
    torch.nn.init.zeros_(model.decoder.out.bias)
    points = torch.zeros(1, 20, 3)
    points[0, :, 0] = torch.linspace(0, 1, 20)  # a rod along x
    code = model.encode(points)
    far = torch.tensor([[[0.0, 1.5, 0.0], [0.0, 0.0, 0.001]]])  # far off; on the rod
    with torch.no_grad():
        s = model.score(far, code, 0.01)[0]
    assert float(s[0].norm()) == pytest.approx(0.03, rel=1e-4)  # capped at 3 sigma
    assert float(s[0, 1]) < 0  # still towards the rod
    assert float(s[1].norm()) < 0.03  # near the input: the closed form itself


def test_normal_projected_guide_moves_points_straight_onto_a_plane():
    """Scattered input points on the plane z = 0.2: the MLS guide's step is exactly
    (0, 0, 0.2 - z) (the plain guide also slides the query towards the nearest points)."""
    grid = torch.rand(150, 2, generator=torch.Generator().manual_seed(5)) * 2 - 1
    plane = torch.cat([grid, torch.full((len(grid), 1), 0.2)], -1).unsqueeze(0).double()
    query = torch.tensor([[[0.33, -0.27, 0.25], [0.05, 0.41, 0.17]]], dtype=torch.float64)
    tau = torch.tensor([0.1], dtype=torch.float64)
    step = smoothed_set_score(query, plane, tau, normal_projection=True)[0]
    expected = torch.zeros_like(step)
    expected[:, 2] = 0.2 - query[0, :, 2]
    torch.testing.assert_close(step, expected, atol=1e-7, rtol=0)
    assert float(smoothed_set_score(query, plane, tau)[0, :, :2].abs().max()) > 1e-3


def test_sigma_scaled_output_multiplies_the_decoder_by_sigma():
    """sigma_scaled_output: the decoder predicts s / sigma (eps-prediction); score = sigma * it."""
    generator = torch.Generator().manual_seed(4)
    model = ShapeGf(ShapeGfConfig(**{**TINY, "sigma_scaled_output": True})).eval()
    points = torch.rand(2, 30, 3, generator=generator)
    query = torch.randn(2, 20, 3, generator=generator)
    with torch.no_grad():
        code = model.encode(points)
        for sigma in (0.5, 0.02):
            torch.testing.assert_close(model.score(query, code, sigma),
                                       sigma * model.decoder(query, code.z,
                                                             torch.full((2,), sigma)))


# ----------------------------------------------------------------------------- (b) sampler
def _gaussian_chain_moments(prior_mean, prior_var, mu, v, sigmas, steps, step_lr):
    """Exact mean and variance per axis of the sampler on the field of N(mu, v I) smoothed by
    sigma (Q_sigma = N(mu, (v + sigma^2) I)): noise then gradient step is linear, so
    y' = y + sqrt(alpha) eps, y'' = (1 - a) y' with a = step_lr sigma^2 / (v + sigma^2)."""
    m, var = prior_mean - mu, prior_var
    for sigma in sigmas:
        alpha = 2 * step_lr * sigma ** 2
        a = step_lr * sigma ** 2 / (v + sigma ** 2)
        for _ in range(steps):
            m, var = (1 - a) * m, (1 - a) ** 2 * (var + alpha)
    return m + mu, var


@pytest.mark.parametrize("step_lr, steps", [(1.0, 10), (0.5, 5)])
def test_langevin_reproduces_the_statistics_of_an_analytic_gaussian_field(step_lr, steps):
    """The exact score of N(mu, v I) in place of the network: the chain's samples must have the
    mean and variance that eq. 9-10 (noise step first, alpha = 2 step_lr sigma^2) predict in
    closed form, and, at the end of the schedule, close to the target's own."""
    mu = torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64)
    v = 0.09
    sigmas = geometric_sigmas(1.0, 0.01, 10).double().tolist()

    def exact_score(x, sigma):  # s = sigma^2 grad log N(x; mu, (v + sigma^2) I)
        return -sigma ** 2 * (x - mu) / (v + sigma ** 2)

    generator = torch.Generator().manual_seed(0)
    bound = 1.5
    x0 = (torch.rand(20000, 3, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    samples = annealed_langevin(exact_score, x0, sigmas, steps, step_lr, generator)
    mean_expected, var_expected = _gaussian_chain_moments(0.0, bound ** 2 / 3, mu.numpy(), v,
                                                          sigmas, steps, step_lr)
    mean, var = samples.mean(0).numpy(), samples.var(0).numpy()
    standard_error = math.sqrt(var_expected / len(samples))
    np.testing.assert_allclose(mean, mean_expected, atol=5 * standard_error)
    np.testing.assert_allclose(var, var_expected, rtol=0.05)  # ~1 % sampling error
    np.testing.assert_allclose(mean, mu.numpy(), atol=0.01)
    np.testing.assert_allclose(var, v, rtol=0.15)


def test_langevin_on_a_point_mass_collapses_onto_it_with_the_reference_step():
    """step_lr 1 on a single point: every step ends with the exact Tweedie denoising x + s."""
    target = torch.tensor([0.3, 0.1, -0.2])
    x0 = torch.rand(500, 3) * 3 - 1.5
    out = annealed_langevin(lambda x, s: target - x, x0, [1.0, 0.1], 2, 1.0)
    torch.testing.assert_close(out, target.expand_as(out), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- (c) frames
@pytest.mark.parametrize("mode", ["unit_sphere", "bbox"])
def test_upsampled_points_follow_the_input_frame(mode):
    torch.manual_seed(0)
    model = ShapeGf(ShapeGfConfig(**TINY, input_normalisation=mode)).eval()
    cloud = torch.tensor(procedural_shapes(1, num_points=256, seed=0).points[:2])
    offset, scale = torch.tensor([3.0, -2.0, 0.5]), 2.5
    for denoise in (False, True):
        kwargs = dict(steps_per_level=2, denoise_from_input=denoise)
        a = model.upsample(cloud, 300, generator=torch.Generator().manual_seed(1), **kwargs)
        b = model.upsample(cloud * scale + offset, 300,
                           generator=torch.Generator().manual_seed(1), **kwargs)
        assert a.shape == (2, 300, 3)
        torch.testing.assert_close(b, a * scale + offset, atol=2e-4 * scale, rtol=1e-4)
    single = model.upsample(cloud[0], 100, steps_per_level=1, prior="gaussian")
    assert single.shape == (100, 3)
    normalised, centre, s = normalise_clouds(cloud * scale + offset, mode)
    torch.testing.assert_close(normalised * s[:, None, None] + centre[:, None],
                               cloud * scale + offset)
    if mode == "bbox":
        assert torch.allclose(normalised.abs().amax(dim=(1, 2)), torch.ones(2))


# ----------------------------------------------------------------------------- (d) loss
def test_loss_is_zero_for_the_exact_score_of_a_single_point_and_positive_otherwise():
    generator = torch.Generator().manual_seed(0)
    point = torch.tensor([0.2, -0.4, 0.1])
    clean = point.expand(3, 50, 3)
    sigma = torch.tensor([1.0, 0.1, 0.01])

    def exact(noisy, s):  # sigma^2 grad log N(x~; x, sigma^2 I) = x - x~
        return point - noisy

    loss, per_shape = score_matching_loss(exact, clean, sigma, generator=generator)
    assert float(loss) == pytest.approx(0.0, abs=1e-10)
    wrong, per_wrong = score_matching_loss(lambda noisy, s: 0.9 * (point - noisy), clean, sigma,
                                           generator=generator)
    assert float(wrong) > 0 and bool((per_wrong > 0).all())
    # the reference's weight: 1/2 sigma^-1 |0.1 (x~ - x)|^2 = 1/2 sigma^-1 0.01 sigma^2 |eps|^2
    noise = torch.randn(3, 50, 3, generator=generator)
    _, per = score_matching_loss(lambda noisy, s: 0.9 * (point - noisy), clean, sigma, noise)
    expected = 0.5 * 0.01 * sigma * noise.pow(2).sum(-1).mean(-1)
    torch.testing.assert_close(per, expected)
    _, per2 = score_matching_loss(lambda noisy, s: 0.9 * (point - noisy), clean, sigma, noise,
                                  weight_power=2.0)
    torch.testing.assert_close(per2, expected / sigma)


@pytest.mark.parametrize("sigma_max,expected", [(0.0, range(10)), (0.03, (7, 8, 9)),
                                                (1e-4, (9,)), (5.0, range(10))])
def test_levels_drawn_for_the_loss_are_those_at_or_below_sigma_max(sigma_max, expected):
    sigmas = geometric_sigmas(1.0, 0.01, 10)
    index, drawn = draw_sigmas(sigmas, 4000, torch.Generator().manual_seed(0), sigma_max)
    assert set(index.tolist()) == set(expected)
    torch.testing.assert_close(drawn, sigmas[index])
    counts = np.bincount(index.numpy(), minlength=10)[list(expected)]
    assert counts.min() > 0.8 * 4000 / len(expected)  # uniform over the kept levels


# ----------------------------------------------------------------------------- (e) training
@pytest.fixture(scope="module")
def procedural_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("procedural_shapes")
    shapes, meshes = procedural_dataset(folder)
    return UpsamplingData(shapes, meshes, input_min=32, input_max=64,
                          target_points=256, partial_fraction=0.5, partial_views_per_mesh=2,
                          pool_points=128, partial_cache=str(folder / "pool.npz"),
                          val_max_shapes=3, val_input_points=64, val_output_points=128,
                          val_steps_per_level=1)


def test_training_lowers_the_loss_on_a_fixed_batch_and_validation_reports(procedural_data):
    task = UpsamplingTask(dict(TINY), procedural_data, batch_size=6, progress=False)
    assert task.pool is not None and task.pool.shape[:2] == (len(task.train_shapes), 2)
    torch.manual_seed(0)
    model = task.build()
    batch = task.train_batch(np.random.default_rng(0), torch.device("cpu"))
    assert 32 <= batch[0].shape[1] <= 64 and batch[1].shape == (6, 256, 3)

    def fixed_loss():
        return float(task.loss(model, batch, torch.Generator().manual_seed(5))[0].detach())

    model.train()
    before = fixed_loss()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss, terms = task.loss(model, batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = fixed_loss()
    assert np.isfinite(before) and after < 0.7 * before, (before, after)
    assert set(terms) == {"dsm", "dsm_coarse", "dsm_fine"}
    model.eval()
    with torch.no_grad():
        metrics = task.validate(model, torch.device("cpu"))
    assert set(metrics) == {"val_loss", "val_chamfer", "val_chamfer_input", "val_chamfer_denoise",
                            "val_dsm"}
    assert all(np.isfinite(v) for v in metrics.values())
    assert metrics["val_loss"] == metrics["val_chamfer"]
    assert 0 < metrics["val_chamfer_input"] < 1.0
    assert task.data_description()["val_models"] == 3


def test_denoise_validation_reports_the_guide_alone_and_selects_by_its_metric(procedural_data):
    """With a guided model, validation runs the denoise chain and the guide-alone chain with the
    same noise: zeroing the correction makes them identical; val_loss is val_loss_metric's."""
    from dataclasses import replace
    data = replace(procedural_data, val_prior=False, val_emd=True, val_start_sigma=0.03,
                   val_loss_metric="emd_denoise", train_sigma_max=0.03)
    task = UpsamplingTask({**TINY, "input_guide": True}, data, batch_size=6, progress=False)
    model = task.build().eval()
    torch.nn.init.normal_(model.decoder.out.weight, std=0.3,  # built zeroed: give it a correction
                          generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        metrics = task.validate(model, torch.device("cpu"))
        assert set(metrics) == {"val_loss", "val_chamfer_input", "val_chamfer_denoise",
                                "val_chamfer_guide", "val_emd_denoise", "val_emd_guide",
                                "val_dsm"}
        assert metrics["val_loss"] == metrics["val_emd_denoise"]
        assert metrics["val_emd_denoise"] != pytest.approx(metrics["val_emd_guide"])
        zeroed = guide_only(model)
        task._guide_sums.clear()  # the zeroed copy's guide chains run afresh
        same = task.validate(zeroed, torch.device("cpu"))
    assert same["val_emd_denoise"] == pytest.approx(same["val_emd_guide"])
    assert same["val_chamfer_denoise"] == pytest.approx(same["val_chamfer_guide"])
    assert same["val_emd_guide"] == pytest.approx(metrics["val_emd_guide"])
    for unselectable in ({"val_emd": False}, {"val_loss_metric": "emd_guide"},
                         {"val_loss_metric": "chamfer_input"}):
        with pytest.raises(ValueError, match="val_loss_metric"):
            replace(data, **unselectable)


# ----------------------------------------------------------------------------- (f) checkpoint
def test_checkpoint_round_trip_through_the_registry(tmp_path):
    model, loaded = checkpoint_round_trip("shapegf", TINY, tmp_path)
    assert loaded.config == model.config
    cloud = torch.randn(2, 64, 3)
    a = model.upsample(cloud, 80, 2, generator=torch.Generator().manual_seed(3))
    b = loaded.upsample(cloud, 80, 2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_training_config_builds_the_model_and_registers_the_task():
    assert "upsampling" in TASKS
    config = load_config("config/train/shapegf.yaml")
    model = build_model("shapegf", config["model"])
    assert model.config.blocks == 4 and model.config.width == 128
    assert 3e5 < sum(p.numel() for p in model.parameters()) < 6e5
    data = UpsamplingData(**config["data"])
    assert data.pool_points == 2048 and data.partial_views_per_mesh == 8 and data.pool_seed == 0


@pytest.mark.parametrize("name", ["shapegf_pool", "shapegf_denoise"])
def test_every_shapegf_config_builds_its_model_and_data_settings(name):
    config = load_config(f"config/train/{name}.yaml")
    model = build_model("shapegf", config["model"])
    assert model.config.input_guide
    data = UpsamplingData(**config["data"])
    assert data.input_max + data.target_points <= 2048


@pytest.mark.parametrize("points,count", [(512, 2048), (500, 2048), (700, 512), (3, 3)])
def test_denoise_chains_start_from_every_input_point_alike(points, count):
    """Each input point starts count // points chains, and count % points distinct others one
    more: no point is left out or repeated beyond its share (drawn with replacement, some of
    512 points started none)."""
    generator = torch.Generator().manual_seed(3)
    index = spread_starts(points, 2, count, generator, torch.device("cpu"))
    assert index.shape == (2, count)
    for row in index:
        uses = torch.bincount(row, minlength=points)
        assert int(uses.min()) >= count // points and int(uses.max()) <= count // points + 1
        assert int((uses == count // points + 1).sum()) == count % points
    assert count % points == 0 or not torch.equal(index[0], index[1])  # each cloud its own


def test_disjoint_training_pairs_share_no_input_point_with_their_targets():
    """Drawn independently, about input_points / stored of a target are input points (what
    teaches the fine levels to snap onto the input); with `disjoint` none are, and every point
    still comes from the shape's stored cloud."""
    from gmm_perception.data.partial_scans import sample_input_target_pairs

    rng = np.random.default_rng(0)
    points = rng.normal(size=(3, 200, 3)).astype(np.float32)
    stored = {tuple(p) for p in points.reshape(-1, 3).tolist()}

    def shared(disjoint: bool) -> float:
        inputs, targets = sample_input_target_pairs(np.random.default_rng(1), points, None,
                                                    np.arange(3), 40, 80, 100, 0.0, False,
                                                    disjoint)
        drawn = np.concatenate([inputs.reshape(-1, 3), targets.reshape(-1, 3)])
        assert {tuple(p) for p in drawn.tolist()} <= stored
        return np.mean([len({tuple(p) for p in i.tolist()} & {tuple(p) for p in t.tolist()}) / 100
                        for i, t in zip(inputs, targets)])

    assert shared(False) == pytest.approx(80 / 200, abs=0.05)
    assert shared(True) == 0.0
    with pytest.raises(ValueError, match="disjoint"):
        sample_input_target_pairs(rng, points, None, np.arange(3), 2, 150, 100, 0.0, False, True)


def test_surface_targets_are_fresh_samples_of_the_mesh_surface_each_draw():
    """With `surface`, targets are new uniform samples of each shape's own mesh every call (a
    unit cube: every target point on its faces, none equal to a stored point, two draws
    differ), the inputs still of the stored cloud."""
    import trimesh

    from gmm_perception.data.mesh_ops import SurfaceSampler
    from gmm_perception.data.partial_scans import sample_input_target_pairs

    cubes = [trimesh.creation.box(extents=(e, e, e)) for e in (1.0, 2.0)]
    sampler = SurfaceSampler([c.vertices for c in cubes], [c.faces for c in cubes])
    rng = np.random.default_rng(0)
    points = np.stack([sampler(k, 300, rng) for k in range(2)])
    draws = [sample_input_target_pairs(rng, points, None, np.arange(2), 8, 50, 400, 0.0, False,
                                       surface=sampler) for _ in range(2)]
    for inputs, targets in draws:
        for cloud_in, cloud_out in zip(inputs, targets):
            half = np.abs(cloud_out).max()  # which cube: 0.5 or 1.0
            k = int(half > 0.75)
            assert np.allclose(np.abs(cloud_out).max(axis=1), 0.5 * (k + 1), atol=1e-5)
            stored = {tuple(p) for p in points[k].tolist()}
            assert {tuple(p) for p in cloud_in.tolist()} <= stored
            assert not {tuple(p) for p in cloud_out.tolist()} & stored
    assert not np.allclose(draws[0][1], draws[1][1])


def test_normal_targets_leave_out_the_tangential_noise_of_a_flat_surface():
    """On the plane z = 0 the exact projection s(x~) = -z~ e_z is the best score; with the
    points' normals its loss is zero, without them the tangential noise remains: about
    1/2 sigma^-p 2 sigma^2 (two tangential components of eps)."""
    generator = torch.Generator().manual_seed(1)
    clean = torch.rand(2, 4000, 3, generator=generator)
    clean[..., 2] = 0.0
    sigma = torch.tensor([0.1, 0.01])
    normals = torch.zeros_like(clean)
    normals[..., 2] = 1.0

    def project(noisy, s):
        out = torch.zeros_like(noisy)
        out[..., 2] = -noisy[..., 2]
        return out

    noise = torch.randn(clean.shape, generator=generator)
    _, with_normals = score_matching_loss(project, clean, sigma, noise, 2.0, normals=normals)
    _, without = score_matching_loss(project, clean, sigma, noise, 2.0)
    torch.testing.assert_close(with_normals, torch.zeros(2), atol=1e-9, rtol=0)
    torch.testing.assert_close(without, torch.ones(2), atol=0.05, rtol=0)


def test_surface_sampler_normals_are_the_faces_unit_normals_and_turn_with_the_points():
    import trimesh

    from gmm_perception.data.mesh_ops import SurfaceSampler
    from gmm_perception.data.partial_scans import rotate_about_z

    cube = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    sampled = SurfaceSampler([cube.vertices], [cube.faces], normals=True)(0, 500,
                                                                          np.random.default_rng(0))
    points, normals = sampled[:, :3], sampled[:, 3:]
    assert sampled.shape == (500, 6)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    face = np.argmax(np.abs(points), axis=1)  # the axis whose face the point is on
    np.testing.assert_allclose(np.abs(normals[np.arange(500), face]), 1.0, atol=1e-6)
    (turned,) = rotate_about_z([sampled[None]], np.array([np.pi / 2]))
    np.testing.assert_allclose(turned[0, :, :3], points @ np.array([[0, 1, 0], [-1, 0, 0],
                                                                     [0, 0, 1]]), atol=1e-6)
    np.testing.assert_allclose(turned[0, :, 3:], normals @ np.array([[0, 1, 0], [-1, 0, 0],
                                                                      [0, 0, 1]]), atol=1e-6)

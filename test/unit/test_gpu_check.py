"""bench/gpu_check.py: runs on a CPU-only machine (CPU column, exit 0), imports nothing that the
GPU machine lacks (open3d, trimesh, rclpy, tqdm, yaml), and on CUDA matches the CPU."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.py"
STAGES = [
    "DeepGMR RRI features (geometry.rri)",
    "DeepGMR M_Theta (fit_isotropic_gmm)",
    "DeepGMR M_T (align_mixtures)",
    "DeepGMR forward (RRI+PointNet+M_Theta+M_T)",
    "train step: deepgmr",
    "GMCN input fit (fit_input, kmeans_em)",
    "GMCN forward (fitted mixture -> log-probs)",
    "train step: gmcn",
    "PointGMM forward (cloud -> hGMM)",
    "PointGMM EM refinement",
    "train step: pointgmm",
    "ShapeGF sampling (upsample, annealed Langevin)",
    "train step: shapegf",
    "train step: pointnet_cls",
]
BLOCKED = ("open3d", "trimesh", "rclpy", "tqdm", "yaml")
# The blocked packages made absent as on the GPU machine, then the script as `python bench/...`.
# Every meta-path finder is wrapped so that it finds nothing for them: `import` raises
# ModuleNotFoundError and importlib.util.find_spec returns None (torch probes optional packages
# such as tqdm that way; a finder that raised ImportError would break that probe, which a
# machine without the package does not).
BLOCKING_RUNNER = """
import runpy, sys
BLOCKED = set(sys.argv[1].split(","))
class Hide:
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)
sys.meta_path[:] = [Hide(finder) for finder in sys.meta_path]
for name in [m for m in sys.modules if m.partition(".")[0] in BLOCKED]:
    del sys.modules[name]
for name in BLOCKED:
    try:
        __import__(name)
    except ModuleNotFoundError:
        continue
    raise SystemExit(f"{name} is not blocked")
script = sys.argv[2]
sys.argv = [script, *sys.argv[3:]]
runpy.run_path(script, run_name="__main__")
"""


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    # As on the device (PYTHONPATH=. from the root), with CUDA hidden: the CPU-only path.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_quick_run_without_cuda_prints_the_cpu_column(tmp_path):
    report = tmp_path / "gpu_check.json"
    done = _run([sys.executable, str(SCRIPT), "--quick", "--repeats", "1", "--threads", "1",
                 "--json", str(report)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CUDA not available" in done.stdout and "CPU column only" in done.stdout
    rows = json.loads(report.read_text())["rows"]
    assert [row["stage"] for row in rows] == STAGES
    for row in rows:
        if row["stage"] == "PointGMM EM refinement":
            assert row["status"] == "not implemented" and row["cpu_ms"] is None
            continue
        assert row["status"] == "ok", row
        assert math.isfinite(row["cpu_ms"]) and row["cpu_ms"] > 0, row
        assert row["cuda_ms"] is None and row["match"] is None
        assert math.isfinite(row["rel_floor"]), row
        assert f"| {row['stage']} |" in done.stdout


def test_runs_without_open3d_trimesh_rclpy_tqdm_yaml(tmp_path):
    report = tmp_path / "gpu_check.json"
    done = _run([sys.executable, "-c", BLOCKING_RUNNER, ",".join(BLOCKED), str(SCRIPT),
                 "--quick", "--repeats", "1", "--threads", "1", "--json", str(report)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert report.is_file()


@pytest.mark.usefixtures("one_torch_thread")
def test_the_sampling_rows_replay_is_upsamples_chain():
    """The ShapeGF row compares `_langevin_replay` across devices and times `upsample`: with the
    CPU's own draws the two are one chain."""
    from bench import gpu_check

    case = next(c for c in gpu_check.cases(quick=True) if c.stage.startswith("ShapeGF sampling"))
    cpu = torch.device("cpu")
    assert torch.equal(case.make(cpu)(), case.compare(cpu)())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_the_cpu():
    from bench import gpu_check

    rows = gpu_check.run(quick=True, repeats=1,
                         devices=[torch.device("cpu"), torch.device("cuda")])
    implemented = [row for row in rows if row.status != gpu_check.NOT_IMPLEMENTED]
    assert implemented
    for row in implemented:
        assert row.status == "ok" and row.match, row
        assert row.cuda_ms > 0 and row.peak_cuda_mib > 0, row

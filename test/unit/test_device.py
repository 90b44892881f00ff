"""resolve_device: cpu/auto/cuda requests with and without CUDA (CUDA faked by monkeypatching
torch.cuda), fallback reasons, GPU index checks and rejection of malformed device names."""

import pytest
import torch

from gmm_perception.device import describe_device, resolve_device


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


# ----------------------------------------------------------------------------- without CUDA
@pytest.mark.parametrize("name", ["cpu", "CPU", "  cpu  "])
def test_cpu_is_cpu_without_reason(no_cuda, name):
    choice = resolve_device(name)
    assert choice.device == torch.device("cpu")
    assert choice.fallback_reason == ""


def test_auto_without_cuda_is_cpu_and_not_a_fallback(no_cuda):
    choice = resolve_device("auto")
    assert choice.device == torch.device("cpu")
    assert choice.fallback_reason == ""


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_cuda_falls_back_to_cpu_with_reason(no_cuda, name):
    choice = resolve_device(name)
    assert choice.device == torch.device("cpu")
    assert "CUDA" in choice.fallback_reason
    assert name.lower() in choice.fallback_reason


def test_real_machine_without_gpu_resolves_auto_to_cpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    choice = resolve_device("auto")
    assert choice.device.type == "cpu" and choice.fallback_reason == ""


# ----------------------------------------------------------------------------- with (fake) CUDA
def test_auto_with_cuda_picks_cuda(one_gpu):
    choice = resolve_device("auto")
    assert choice.device == torch.device("cuda")
    assert choice.fallback_reason == ""


def test_cpu_stays_cpu_when_cuda_exists(one_gpu):
    assert resolve_device("cpu").device == torch.device("cpu")


@pytest.mark.parametrize("name, expected", [("cuda", "cuda"), ("cuda:0", "cuda:0")])
def test_existing_gpu_is_used_without_reason(one_gpu, name, expected):
    choice = resolve_device(name)
    assert choice.device == torch.device(expected)
    assert choice.fallback_reason == ""


def test_gpu_index_beyond_the_count_falls_back_to_default_gpu_with_reason(one_gpu):
    choice = resolve_device("cuda:3")
    assert choice.device == torch.device("cuda")
    assert "cuda:3" in choice.fallback_reason
    assert "1 GPU" in choice.fallback_reason


def test_gpu_index_within_the_count_is_kept(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    choice = resolve_device("cuda:3")
    assert choice.device == torch.device("cuda:3")
    assert choice.fallback_reason == ""


# ----------------------------------------------------------------------------- invalid names
INVALID = ["gpu", "", "tpu:0", "mps", "cuda:abc", "cuda:-1", "cuda:0:1", "auto:1", "cpu:x"]


@pytest.mark.parametrize("name", INVALID)
def test_invalid_name_raises_value_error_without_cuda(no_cuda, name):
    with pytest.raises(ValueError):
        resolve_device(name)


@pytest.mark.parametrize("name", INVALID)
def test_invalid_name_raises_value_error_with_cuda(one_gpu, name):
    with pytest.raises(ValueError):
        resolve_device(name)


def test_describe_cpu_names_the_thread_count():
    assert describe_device(torch.device("cpu")) == f"cpu ({torch.get_num_threads()} threads)"

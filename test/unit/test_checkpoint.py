"""Checkpoints: save/load round trip with metadata, atomic write, every failure a CheckpointError
naming the file, weights-only loading (pickled code is refused and never runs), map_location."""

import datetime as dt
from pathlib import Path

import pytest
import torch

from gmm_perception.models.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)

MODEL = "pointnet_gmm"
CONFIG = {"num_components": 8, "hidden": [64, 128], "name": "small", "dropout": 0.1}


def make_state_dict() -> dict:
    generator = torch.Generator().manual_seed(0)
    return {"encoder.weight": torch.randn(4, 3, generator=generator),
            "encoder.bias": torch.randn(4, generator=generator),
            "steps": torch.tensor(17, dtype=torch.int64)}


@pytest.fixture
def saved(tmp_path) -> Path:
    return save_checkpoint(tmp_path / "model.pt", model=MODEL, state_dict=make_state_dict(),
                           config=CONFIG, metadata={"epochs": 3})


def valid_payload(**overrides) -> dict:
    payload = {"format": CHECKPOINT_FORMAT, "model": MODEL, "config": dict(CONFIG),
               "state_dict": make_state_dict(), "metadata": {}}
    payload.update(overrides)
    return payload


def assert_names_file(info, path: Path) -> None:
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- round trip
def test_round_trip_preserves_tensors_config_and_model(saved):
    payload = load_checkpoint(saved, expected_model=MODEL)
    expected = make_state_dict()
    assert payload["format"] == CHECKPOINT_FORMAT
    assert payload["model"] == MODEL
    assert payload["config"] == CONFIG
    assert set(payload["state_dict"]) == set(expected)
    for key, tensor in expected.items():
        assert payload["state_dict"][key].dtype == tensor.dtype
        assert torch.equal(payload["state_dict"][key], tensor)


def test_metadata_has_creation_time_code_version_and_caller_fields(saved):
    metadata = load_checkpoint(saved)["metadata"]
    created = dt.datetime.fromisoformat(metadata["created"])
    assert created.tzinfo is not None
    assert abs(dt.datetime.now(dt.timezone.utc) - created) < dt.timedelta(minutes=5)
    assert isinstance(metadata["code_version"], str) and metadata["code_version"]
    assert metadata["epochs"] == 3


def test_save_returns_the_path_and_creates_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "m.pt"
    assert save_checkpoint(target, model=MODEL, state_dict={}, config={}) == target
    assert target.is_file()


def test_save_detaches_tensors_that_require_grad(tmp_path):
    weight = torch.ones(3, requires_grad=True)
    path = save_checkpoint(tmp_path / "m.pt", model=MODEL, state_dict={"w": weight * 2}, config={})
    loaded = load_checkpoint(path)["state_dict"]["w"]
    assert not loaded.requires_grad
    assert torch.equal(loaded, torch.full((3,), 2.0))


def test_atomic_write_leaves_no_temporary_file(tmp_path, saved):
    save_checkpoint(saved, model=MODEL, state_dict={"x": torch.zeros(1)}, config={})  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert set(load_checkpoint(saved)["state_dict"]) == {"x"}


def test_loaded_tensors_are_on_cpu_by_default(saved):
    for tensor in load_checkpoint(saved)["state_dict"].values():
        assert tensor.device == torch.device("cpu")


def test_map_location_is_honoured(saved):
    # the meta device needs no hardware, yet differs from where the tensors were saved
    for tensor in load_checkpoint(saved, map_location="meta")["state_dict"].values():
        assert tensor.device.type == "meta"


def test_user_path_is_expanded(saved, monkeypatch):
    monkeypatch.setenv("HOME", str(saved.parent))
    assert load_checkpoint("~/model.pt")["model"] == MODEL


# ----------------------------------------------------------------------------- failures
def test_missing_file(tmp_path):
    missing = tmp_path / "absent.pt"
    with pytest.raises(CheckpointError, match="does not exist") as info:
        load_checkpoint(missing)
    assert_names_file(info, missing)


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    assert_names_file(info, tmp_path)


def test_corrupt_bytes(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"this is not a torch checkpoint\x00\x01\x02")
    with pytest.raises(CheckpointError, match="corrupt") as info:
        load_checkpoint(path)
    assert_names_file(info, path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_names_file(info, path)


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_truncated_real_checkpoint(saved, fraction):
    data = saved.read_bytes()
    saved.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(saved)
    assert_names_file(info, saved)


def test_wrong_model_name(saved):
    with pytest.raises(CheckpointError, match="other_model") as info:
        load_checkpoint(saved, expected_model="other_model")
    assert MODEL in str(info.value)
    assert_names_file(info, saved)


def test_wrong_format_version(tmp_path):
    path = tmp_path / "future.pt"
    torch.save(valid_payload(format=CHECKPOINT_FORMAT + 1), path)
    with pytest.raises(CheckpointError, match="format") as info:
        load_checkpoint(path)
    assert_names_file(info, path)


@pytest.mark.parametrize("missing_key", ["format", "model", "config", "state_dict", "metadata"])
def test_dict_lacking_a_key(tmp_path, missing_key):
    path = tmp_path / "partial.pt"
    payload = valid_payload()
    del payload[missing_key]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="lacks the keys") as info:
        load_checkpoint(path)
    assert_names_file(info, path)


def test_payload_that_is_not_a_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_names_file(info, path)


# ----------------------------------------------------------------------------- weights only
def _touch(path: str) -> str:
    """Side effect run by unpickling a SideEffect: proves whether the file's code executed."""
    Path(path).write_text("ran")
    return "ran"


class SideEffect:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return _touch, (str(self.marker),)


class PlainObject:
    def __init__(self):
        self.value = 1


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save(valid_payload(config={"hook": SideEffect(marker)}), path)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_names_file(info, path)
    assert not marker.exists(), "loading executed code from the checkpoint"
    torch.load(path, weights_only=False)  # sanity: an unrestricted load does run it
    assert marker.read_text() == "ran"


def test_pickled_custom_class_instance_is_refused(tmp_path):
    path = tmp_path / "object.pt"
    torch.save(valid_payload(metadata={"obj": PlainObject()}), path)
    # sanity: an unrestricted load would accept this file
    assert isinstance(torch.load(path, weights_only=False)["metadata"]["obj"], PlainObject)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_names_file(info, path)

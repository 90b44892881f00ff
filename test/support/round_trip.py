"""Save a fresh registry model as a checkpoint and load it back through models/registry."""
import torch

from gmm_perception.models.checkpoint import save_checkpoint
from gmm_perception.models.registry import MODELS, build_model, load_model


def checkpoint_round_trip(name: str, config: dict, directory):
    """(model, loaded): a seeded fresh `name` model and its reload, both in eval mode."""
    torch.manual_seed(0)
    model = build_model(name, dict(config)).eval()
    path = save_checkpoint(directory / f"{name}.pt", model=name, state_dict=model.state_dict(),
                           config={"model": model.config_dict(), "train": {}, "data": {}})
    loaded, payload = load_model(path, name)
    assert payload["model"] == name and not loaded.training
    assert isinstance(loaded, MODELS[name][0])
    return model, loaded

"""Fixtures shared by the unit tests."""
import pytest
import torch

from gmm_perception.models.gmcn import Gmcn, GmcnConfig


@pytest.fixture(scope="module")
def gmcn():
    """An untrained three-class GMCN small enough for fast stage tests."""
    torch.manual_seed(0)
    config = GmcnConfig(num_classes=3, input_components=16, channels=(4,), components=(8,),
                        fit_points=512, final_dense_components=4)
    return Gmcn(config).eval()

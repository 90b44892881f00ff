"""Procedural shapes and meshes saved as the dataset files the training tasks read."""
from gmm_perception.data.procedural import procedural_meshes, procedural_shapes


def procedural_dataset(folder, per_class: int = 3, num_points: int = 256) -> tuple[str, str]:
    """(shapes .npz, meshes .npz) paths of `per_class` procedural objects per class."""
    shapes = procedural_shapes(per_class, num_points=num_points, seed=0).save(folder / "shapes.npz")
    meshes = procedural_meshes(per_class, seed=0).save(folder / "meshes.npz")
    return str(shapes), str(meshes)

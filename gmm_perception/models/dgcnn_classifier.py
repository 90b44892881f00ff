"""DGCNN classifier (Wang et al., "Dynamic Graph CNN for Learning on Point Clouds", ACM TOG 2019),
the strongest simple peer of GMCN in issue 17's table.

EdgeConv layers on a k-nearest-neighbour graph recomputed in each layer's feature space: an edge
(i, j) gets h([x_i, x_j - x_i]) and a point the max over its k edges. The paper's classification
network: EdgeConv 64-64-128-256 (one linear layer + batch norm + LeakyReLU 0.2 each), the four
outputs concatenated, a per-point linear layer to the embedding, max and mean pooling
concatenated, fully connected 512-256 with batch norm, LeakyReLU and dropout 0.5, the classes.

Departures, for 2 CPU cores: k 16 (paper 20), embedding 512 (paper 1024), and the model keeps
the first `input_points` (512) of the cloud it is given (paper 1024). The classification stage gives it
`geometry.points.resample` draws, which are random, so the first points are a random subset.
The edge layer is computed as W1 x_j + (W2 - W1) x_i, which equals W [x_i, x_j - x_i] exactly
and costs one linear map per point instead of one per edge; the max over the edges comes
before batch norm and activation (EdgeConv's docstring says why).

Clouds are centred and scaled into the unit sphere first (`prepare`), as for PointNet. Beyond the
paper, `size_features` gives the head the cloud's size in metres as well (a robot measures it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from gmm_perception.geometry.normalise import normalise_clouds

MODEL_NAME = "dgcnn_cls"
SIZE_WIDTH = 32  # channels the size features are lifted to before joining the pooled shape


@dataclass(frozen=True)
class DgcnnClassifierConfig:
    num_classes: int = 13
    """Output classes."""
    neighbours: int = 16
    """k of the k-nearest-neighbour graph of every EdgeConv layer (the point itself included)."""
    edge_widths: tuple[int, ...] = (64, 64, 128, 256)
    """Output channels of the EdgeConv layers."""
    embedding: int = 512
    """Per-point channels before max and mean pooling."""
    head_widths: tuple[int, ...] = (512, 256)
    """Fully connected layers between the pooled features and the classes."""
    dropout: float = 0.5
    """Dropout after each hidden fully connected layer."""
    input_points: int = 512
    """The model keeps the first this many points of each cloud (a random subset for clouds from
    `geometry.points.resample`); 0 keeps all."""
    size_features: bool = False
    """Also give the model the cloud's size in metres (`size_features`: log of its radius, height
    and horizontal radius), which the unit-sphere normalisation otherwise removes. Only for
    clouds in metres in a z-up frame, as the classification stage gives them; trained on clouds
    at their classes' real sizes (data.metric_sizes)."""

    def __post_init__(self):
        for name in ("edge_widths", "head_widths"):
            object.__setattr__(self, name, tuple(int(w) for w in getattr(self, name)))
        if self.neighbours < 1 or not self.edge_widths or self.embedding < 1:
            raise ValueError("neighbours, edge_widths and embedding must be positive")


def knn(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, N, k) of each point's k nearest points (itself included) in feature space
    (B, N, C), by squared Euclidean distance."""
    squared = features.pow(2).sum(dim=-1)
    distances = squared.unsqueeze(2) - 2 * features @ features.transpose(1, 2) \
        + squared.unsqueeze(1)
    return distances.topk(min(k, features.shape[1]), dim=-1, largest=False).indices


class EdgeConv(nn.Module):
    """LeakyReLU(BN(max_j W [x_i, x_j - x_i])) over the k nearest neighbours j of i.

    The max is taken before batch norm and activation (the paper: after). Both are monotone
    per channel (for a positive batch-norm scale), so the layer differs only in normalising the
    pooled features instead of the edges; it runs 3-4x faster on a CPU, where the element-wise
    work on N x k edges dominated a training step."""

    def __init__(self, c_in: int, c_out: int, k: int):
        super().__init__()
        self.k = k
        self.neighbour = nn.Linear(c_in, c_out, bias=False)  # W1, applied to x_j - x_i
        self.centre = nn.Linear(c_in, c_out, bias=False)  # W2, applied to x_i
        self.norm = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C_in) -> (B, N, C_out)."""
        b, n, _ = x.shape
        index = knn(x, self.k)  # (B, N, k)
        projected = self.neighbour(x)  # W1 x
        flat = (index + n * torch.arange(b, device=x.device).view(b, 1, 1)).reshape(-1)
        pooled = projected.reshape(b * n, -1)[flat].view(b, n, index.shape[2], -1).max(dim=2).values
        edges = pooled + self.centre(x) - projected  # max_j W1 x_j + (W2 - W1) x_i
        c = edges.shape[-1]
        return nn.functional.leaky_relu(self.norm(edges.reshape(b * n, c)), 0.2).view(b, n, c)


def size_features(points: torch.Tensor) -> torch.Tensor:
    """(B, 3) log radius, log height and log horizontal radius (metres, floored at 1 cm) of raw
    z-up clouds (B, N, 3): what a robot knows of an object's size from one view. Quantiles, not
    extremes (radii: the 95th percentile of the distances from the median point; height: the
    2nd to 98th percentile of z), as a depth camera's flying pixels and a LiDAR's stray returns
    reach far beyond the object."""
    centre = points.median(dim=1, keepdim=True).values
    offsets = points - centre
    radius = offsets.norm(dim=-1).quantile(0.95, dim=1)
    z = points[..., 2].quantile(torch.tensor([0.02, 0.98], dtype=points.dtype,
                                             device=points.device), dim=1)
    horizontal = offsets[..., :2].norm(dim=-1).quantile(0.95, dim=1)
    return torch.stack([radius, z[1] - z[0], horizontal], dim=-1).clamp_min(0.01).log()


def _dense(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out), nn.LeakyReLU(0.2)]


class DgcnnClassifier(nn.Module):
    def __init__(self, config: DgcnnClassifierConfig = DgcnnClassifierConfig()):
        super().__init__()
        self.config = config
        c = config
        widths = (3, *c.edge_widths)
        self.edges = nn.ModuleList(EdgeConv(a, b, c.neighbours)
                                   for a, b in zip(widths[:-1], widths[1:]))
        self.embed = nn.Linear(sum(c.edge_widths), c.embedding, bias=False)
        self.embed_norm = nn.BatchNorm1d(c.embedding)
        head: list[nn.Module] = []
        pooled = 2 * c.embedding + (SIZE_WIDTH if c.size_features else 0)
        for a, b in zip((pooled, *c.head_widths[:-1]), c.head_widths):
            head += [*_dense(a, b), nn.Dropout(c.dropout)]
        self.head = nn.Sequential(*head)
        self.out = nn.Linear(c.head_widths[-1] if c.head_widths else pooled,
                             c.num_classes)
        self.size_net = nn.Sequential(nn.Linear(3, SIZE_WIDTH), nn.LeakyReLU(0.2)) \
            if c.size_features else None

    @staticmethod
    def prepare_points(points: torch.Tensor, with_size: bool = False) -> torch.Tensor:
        """Raw clouds (B, N, 3) -> centred clouds in the unit sphere (B, N, 3); `with_size`:
        (B, N, 6) with the cloud's `size_features` repeated in the last three channels."""
        points = points.to(torch.float32)
        unit = normalise_clouds(points)[0]
        if not with_size:
            return unit
        size = size_features(points).unsqueeze(1).expand(-1, points.shape[1], -1)
        return torch.cat([unit, size], dim=-1)

    def prepare(self, points: torch.Tensor) -> torch.Tensor:
        return self.prepare_points(points, self.config.size_features)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """Prepared clouds (B, N, 3 or 6, `prepare`) -> log-probabilities (B, num_classes)."""
        size = points[:, 0, 3:6] if self.size_net is not None else None
        points = points[..., :3]
        if self.config.input_points:
            points = points[:, :self.config.input_points]
        x, features = points, []
        for layer in self.edges:
            x = layer(x)
            features.append(x)
        b, n, _ = x.shape
        x = self.embed(torch.cat(features, dim=-1))
        x = nn.functional.leaky_relu(self.embed_norm(x.reshape(b * n, -1)), 0.2).view(b, n, -1)
        pooled = [x.amax(dim=1), x.mean(dim=1)]
        if size is not None:
            pooled.append(self.size_net(size))
        return torch.log_softmax(self.out(self.head(torch.cat(pooled, dim=-1))), dim=-1)

    def classify_points(self, points: torch.Tensor) -> torch.Tensor:
        """Raw clouds (B, N, 3), any frame and scale -> log-probabilities (B, num_classes)."""
        return self(self.prepare(points))

    def regularisation_loss(self) -> torch.Tensor:
        return torch.zeros((), device=self.out.weight.device)

    def config_dict(self) -> dict:
        return asdict(self.config)

"""Pipeline YAML: which nodes to start, with which parameter files, names and remappings.

The same file drives the in-process runner (one process, one executor) and
launch/pipeline.launch.py (one process per node on a real ROS install):

    nodes:
      - executable: preprocess_node     # a key of gmm_perception.node_registry.NODES
        name: preprocess                # optional, the registry's default name otherwise
        namespace: ""                   # optional
        parameters: [preprocess.yaml, {voxel_size: 0.05}]   # files relative to this YAML
        remappings: {points: /points}   # optional
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gmm_perception.node_registry import NODES


class PipelineConfigError(ValueError):
    """The pipeline YAML names something that does not exist or is malformed."""


@dataclass(frozen=True)
class NodeEntry:
    executable: str
    name: str
    namespace: str = ""
    parameter_files: tuple[Path, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: dict[str, str] = field(default_factory=dict)
    # Scheduling priority of the node's process (0-19, as `nice`) when each node runs in its own
    # process: the surface stages yield the cores to segmentation and registration.
    nice: int = 0

    def ros_arguments(self) -> list[str]:
        """Node-specific command-line arguments, as `ros2 run` and launch_ros would pass them."""
        args = ["--ros-args"]
        for path in self.parameter_files:
            args += ["--params-file", str(path)]
        for source, target in self.remappings.items():
            args += ["-r", f"{source}:={target}"]
        return args


def _entry(raw: dict, base_dir: Path, index: int) -> NodeEntry:
    if not isinstance(raw, dict) or "executable" not in raw:
        raise PipelineConfigError(f"node #{index} needs an 'executable' key, got {raw!r}")
    executable = raw["executable"]
    if executable not in NODES:
        raise PipelineConfigError(f"node #{index}: unknown executable '{executable}' "
                                  f"(known: {sorted(NODES)})")
    parameters = raw.get("parameters") or []
    remappings = raw.get("remappings") or {}
    nice = raw.get("nice", 0)
    if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
        raise PipelineConfigError(f"node '{executable}': 'nice' must be an integer 0-19 (a "
                                  f"lower scheduling priority), got {nice!r}")
    if not isinstance(parameters, list):
        raise PipelineConfigError(f"node '{executable}': 'parameters' must be a list of files "
                                  f"and mappings, got {parameters!r}")
    if not isinstance(remappings, dict):
        raise PipelineConfigError(f"node '{executable}': 'remappings' must be a mapping "
                                  f"from -> to, got {remappings!r}")
    files, inline = [], {}
    for item in parameters:
        if isinstance(item, dict):
            inline.update(item)
            continue
        path = Path(item)
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise PipelineConfigError(f"node '{executable}': parameter file '{path}' does not exist")
        files.append(path)
    unknown = set(raw) - {"executable", "name", "namespace", "parameters", "remappings", "nice"}
    if unknown:
        raise PipelineConfigError(f"node '{executable}': unknown keys {sorted(unknown)}")
    return NodeEntry(executable=executable, name=raw.get("name") or NODES[executable][2],
                     namespace=(raw.get("namespace") or "").strip("/"),
                     parameter_files=tuple(files), parameters=inline, remappings=dict(remappings),
                     nice=nice)


def load_pipeline(path: str | Path) -> list[NodeEntry]:
    """Parse and check a pipeline YAML; parameter file paths come back absolute."""
    path = Path(path).resolve()
    if not path.is_file():
        raise PipelineConfigError(f"pipeline file '{path}' does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    raw_nodes = data.get("nodes") if isinstance(data, dict) else None
    if not raw_nodes:
        raise PipelineConfigError(f"pipeline file '{path}' lists no nodes under 'nodes:'")
    entries = [_entry(raw, path.parent, i) for i, raw in enumerate(raw_nodes)]
    names = [f"{e.namespace}/{e.name}" for e in entries]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise PipelineConfigError(f"pipeline file '{path}' starts {sorted(duplicates)} twice")
    return entries


def _matches(key: str, entry: NodeEntry) -> bool:
    """Whether a parameter file's top-level key addresses this node (ROS 2's rules, minus
    partial wildcards): /**, the node name, or its fully qualified name."""
    qualified = f"/{entry.namespace}/{entry.name}" if entry.namespace else f"/{entry.name}"
    return key.strip() in ("/**", "**", entry.name, qualified, qualified.lstrip("/"))


def node_parameters(entry: NodeEntry, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The values a node of this entry would run with: `defaults` (the node's declared
    defaults), then each parameter file in order, then the inline parameters. The offline
    evaluator builds its stages from this, so it runs what the live nodes run."""
    values = dict(defaults or {})
    for path in entry.parameter_files:
        data = yaml.safe_load(path.read_text()) or {}
        for key, section in data.items():
            if _matches(str(key), entry) and isinstance(section, dict):
                values.update(section.get("ros__parameters") or {})
    values.update(entry.parameters)
    return values

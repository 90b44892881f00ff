"""Pipeline YAML loading: paths resolved against the YAML's folder, inline parameters,
remappings, default names from the node registry, each malformed input raising
PipelineConfigError that names the problem, and NodeEntry.ros_arguments()."""

import textwrap
from pathlib import Path

import pytest

from gmm_perception.node_registry import NODES
from gmm_perception.pipeline_config import NodeEntry, PipelineConfigError, load_pipeline

EXECUTABLE = "preprocess_node"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def pipeline_dir(tmp_path) -> Path:
    """A folder with parameter files next to (and below) where the pipeline YAML goes."""
    write(tmp_path / "cfg" / "a.yaml", "preprocess:\n  ros__parameters: {voxel_size: 0.1}\n")
    write(tmp_path / "cfg" / "sub" / "b.yaml", "preprocess:\n  ros__parameters: {}\n")
    return tmp_path / "cfg"


# ----------------------------------------------------------------------------- good files
def test_good_file_resolves_relative_parameter_files_and_keeps_inline_params(pipeline_dir,
                                                                            monkeypatch, tmp_path):
    path = write(pipeline_dir / "pipe.yaml", f"""
        nodes:
          - executable: {EXECUTABLE}
            name: front
            namespace: robot1
            parameters: [a.yaml, {{voxel_size: 0.05}}, sub/b.yaml, {{num_points: 1024}}]
            remappings: {{points: /lidar/points, cloud_out: /front/cloud}}
        """)
    monkeypatch.chdir(tmp_path)  # relative to the YAML's folder, not the working directory
    (entry,) = load_pipeline(path)
    assert entry.executable == EXECUTABLE
    assert entry.name == "front"
    assert entry.namespace == "robot1"
    assert entry.parameter_files == (pipeline_dir / "a.yaml", pipeline_dir / "sub" / "b.yaml")
    assert all(p.is_absolute() for p in entry.parameter_files)
    assert entry.parameters == {"voxel_size": 0.05, "num_points": 1024}
    assert entry.remappings == {"points": "/lidar/points", "cloud_out": "/front/cloud"}


def test_absolute_parameter_file_is_kept(pipeline_dir, tmp_path):
    absolute = write(tmp_path / "elsewhere" / "c.yaml", "{}\n")
    path = write(pipeline_dir / "pipe.yaml", f"""
        nodes:
          - executable: {EXECUTABLE}
            parameters: ["{absolute}"]
        """)
    assert load_pipeline(path)[0].parameter_files == (absolute,)


def test_minimal_entry_gets_registry_default_name_and_empty_fields(pipeline_dir):
    path = write(pipeline_dir / "pipe.yaml", f"nodes:\n  - executable: {EXECUTABLE}\n")
    (entry,) = load_pipeline(str(path))
    assert entry.name == NODES[EXECUTABLE][2]
    assert entry.namespace == ""
    assert entry.parameter_files == ()
    assert entry.parameters == {}
    assert entry.remappings == {}


def test_same_name_in_different_namespaces_is_allowed(pipeline_dir):
    path = write(pipeline_dir / "pipe.yaml", f"""
        nodes:
          - {{executable: {EXECUTABLE}, namespace: left}}
          - {{executable: {EXECUTABLE}, namespace: right}}
          - {{executable: {EXECUTABLE}, name: other}}
        """)
    entries = load_pipeline(path)
    assert [(e.namespace, e.name) for e in entries] == [
        ("left", NODES[EXECUTABLE][2]), ("right", NODES[EXECUTABLE][2]), ("", "other")]


# ----------------------------------------------------------------------------- errors
def test_missing_pipeline_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PipelineConfigError, match="does not exist") as info:
        load_pipeline(missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("text", ["", "nodes: []\n", "nodes:\n", "other: 1\n", "- just a list\n"])
def test_file_without_nodes(tmp_path, text):
    path = write(tmp_path / "pipe.yaml", text)
    with pytest.raises(PipelineConfigError, match="lists no nodes") as info:
        load_pipeline(path)
    assert str(path) in str(info.value)


def test_unknown_executable(tmp_path):
    path = write(tmp_path / "pipe.yaml", "nodes:\n  - executable: warp_drive\n")
    with pytest.raises(PipelineConfigError, match="unknown executable 'warp_drive'"):
        load_pipeline(path)


@pytest.mark.parametrize("node", ["{name: x}", "just_a_string"])
def test_entry_without_executable(tmp_path, node):
    path = write(tmp_path / "pipe.yaml", f"nodes:\n  - {node}\n")
    with pytest.raises(PipelineConfigError, match="'executable'"):
        load_pipeline(path)


def test_missing_parameter_file_is_named_with_its_resolved_path(tmp_path):
    path = write(tmp_path / "pipe.yaml", f"""
        nodes:
          - executable: {EXECUTABLE}
            parameters: [missing.yaml]
        """)
    with pytest.raises(PipelineConfigError, match="does not exist") as info:
        load_pipeline(path)
    assert str(tmp_path / "missing.yaml") in str(info.value)


def test_unknown_keys_are_listed(tmp_path):
    path = write(tmp_path / "pipe.yaml", f"""
        nodes:
          - executable: {EXECUTABLE}
            params: [a.yaml]
            remaps: {{}}
        """)
    with pytest.raises(PipelineConfigError, match="unknown keys") as info:
        load_pipeline(path)
    assert "params" in str(info.value) and "remaps" in str(info.value)


def test_duplicate_node_names(tmp_path):
    path = write(tmp_path / "pipe.yaml", f"""
        nodes:
          - {{executable: {EXECUTABLE}, name: twin}}
          - {{executable: {EXECUTABLE}, name: twin}}
        """)
    with pytest.raises(PipelineConfigError, match="twin"):
        load_pipeline(path)


def test_duplicate_default_names(tmp_path):
    path = write(tmp_path / "pipe.yaml", f"nodes:\n  - executable: {EXECUTABLE}\n"
                                         f"  - executable: {EXECUTABLE}\n")
    with pytest.raises(PipelineConfigError, match=NODES[EXECUTABLE][2]):
        load_pipeline(path)


def test_pipeline_config_error_is_a_value_error():
    assert issubclass(PipelineConfigError, ValueError)


# ----------------------------------------------------------------------------- ros_arguments
def test_ros_arguments_lists_parameter_files_then_remappings_in_order():
    entry = NodeEntry(executable=EXECUTABLE, name="n",
                      parameter_files=(Path("/cfg/a.yaml"), Path("/cfg/b.yaml")),
                      parameters={"voxel_size": 0.1},
                      remappings={"points": "/points", "cloud_out": "/out"})
    assert entry.ros_arguments() == [
        "--ros-args",
        "--params-file", "/cfg/a.yaml",
        "--params-file", "/cfg/b.yaml",
        "-r", "points:=/points",
        "-r", "cloud_out:=/out",
    ]


def test_ros_arguments_of_a_bare_entry():
    assert NodeEntry(executable=EXECUTABLE, name="n").ros_arguments() == ["--ros-args"]


def test_ros_arguments_of_a_loaded_entry(pipeline_dir):
    path = write(pipeline_dir / "pipe.yaml", f"""
        nodes:
          - executable: {EXECUTABLE}
            parameters: [a.yaml]
            remappings: {{points: /points}}
        """)
    assert load_pipeline(path)[0].ros_arguments() == [
        "--ros-args", "--params-file", str(pipeline_dir / "a.yaml"), "-r", "points:=/points"]


def test_node_parameters_layer_defaults_files_and_inline_values(tmp_path):
    from gmm_perception.pipeline_config import node_parameters

    (tmp_path / "wild.yaml").write_text(
        "/**:\n  ros__parameters:\n    a: 1\n    b: 2\n"
        "other:\n  ros__parameters:\n    a: 100\n")
    (tmp_path / "named.yaml").write_text("/ns/seg:\n  ros__parameters:\n    b: 3\n    c: 4\n")
    (tmp_path / "p.yaml").write_text(
        "nodes:\n  - executable: preprocess_node\n    name: seg\n    namespace: ns\n"
        "    parameters: [wild.yaml, named.yaml, {c: 5}]\n")
    entry = load_pipeline(tmp_path / "p.yaml")[0]
    assert node_parameters(entry, {"a": 0, "d": 9}) == {"a": 1, "b": 3, "c": 5, "d": 9}

"""Our locally generated tf2_msgs/TFMessage must be wire-identical to upstream kilted.

DDS matches endpoints on the RIHS01 type hash, so a mismatch would silently cut us off
from every /tf publisher built against the real tf2_msgs (rviz, robot_state_publisher).
"""

import copy
import hashlib
import json
from pathlib import Path

import pytest
import rclpy
import tf2_msgs
from rclpy.context import Context
from rosbags.typesys import Stores, get_typestore
from tf2_msgs.msg import TFMessage

UPSTREAM_KILTED_HASH = "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"
TYPE_NAME = "tf2_msgs/msg/TFMessage"


def load_type_description_file() -> dict:
    """The share/tf2_msgs/msg/TFMessage.json installed beside the imported tf2_msgs.

    rosidl writes the type description and its hashes there. Walking up from the module
    (rather than asking the ament index) needs no sourced AMENT_PREFIX_PATH and cannot
    pick up a different tf2_msgs install than the one imported.
    """
    module_dir = Path(tf2_msgs.__file__).parent
    for prefix in module_dir.parents:
        path = prefix / "share" / "tf2_msgs" / "msg" / "TFMessage.json"
        if path.is_file():
            return json.loads(path.read_text())
    pytest.fail(f"no share/tf2_msgs/msg/TFMessage.json in any parent of {module_dir}")


def rihs01(type_description_msg: dict) -> str:
    """RIHS01 as rosidl_generator_type_description defines it: sha256 over compact JSON
    of the description (main and referenced types) with default values removed."""
    hashable = copy.deepcopy(type_description_msg)
    for description in [hashable["type_description"], *hashable["referenced_type_descriptions"]]:
        for field in description["fields"]:
            del field["default_value"]
    text = json.dumps(hashable, separators=(", ", ": "), ensure_ascii=True, allow_nan=False)
    return "RIHS01_" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_installed_type_description_hash_matches_upstream():
    hashes = {
        entry["type_name"]: entry["hash_string"]
        for entry in load_type_description_file()["type_hashes"]
    }
    assert hashes[TYPE_NAME] == UPSTREAM_KILTED_HASH


def test_hash_recomputed_from_installed_type_description():
    description = load_type_description_file()["type_description_msg"]
    assert description["type_description"]["type_name"] == TYPE_NAME
    assert rihs01(description) == UPSTREAM_KILTED_HASH


def test_compiled_type_support_announces_upstream_hash():
    # The hash DDS actually advertises comes from the compiled type support, not the JSON.
    context = Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("tf2_msgs_hash_check", context=context)
        topic = "/gmm_perception_test/tf2_msgs_hash_check"
        node.create_publisher(TFMessage, topic, 1)
        ours = [
            info
            for info in node.get_publishers_info_by_topic(topic)
            if info.node_name == node.get_name()
        ]
        assert len(ours) == 1
        assert str(ours[0].topic_type_hash) == UPSTREAM_KILTED_HASH
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_rosbags_computes_upstream_hash():
    typestore = get_typestore(Stores.ROS2_KILTED)
    assert typestore.hash_rihs01(TYPE_NAME) == UPSTREAM_KILTED_HASH

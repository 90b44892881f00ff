"""ament_python package gmm_perception (the interfaces live in gmm_perception_msgs/, built by rosidl)."""
from glob import glob

from setuptools import find_packages, setup

from gmm_perception.node_registry import console_scripts

PACKAGE = "gmm_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/config/train", glob("config/train/*.yaml")),
        (f"share/{PACKAGE}/msg", glob("msg/*.msg")),
        # Checkpoints with their cards and calibration files (a stage reads its JSON beside them).
        *((f"share/{PACKAGE}/{folder}", glob(f"{folder}/*.pt") + glob(f"{folder}/*.md")
           + glob(f"{folder}/*.json"))
          for folder in sorted(glob("checkpoints/*"))),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="gmm_perception developers",
    maintainer_email="gmm-perception@example.org",
    description="Point-cloud perception with learned Gaussian-mixture and point-set models.",
    license="Apache-2.0",
    entry_points={
        # One console script per node (ros2 run gmm_perception <name>), the runner and the CLI.
        "console_scripts": console_scripts() + [
            "gmm_perception_runner = gmm_perception.ros.runner:main",
            "gmm-perception = gmm_perception.cli:main",
        ],
    },
)

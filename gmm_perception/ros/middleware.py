"""Middleware settings our processes share."""
from __future__ import annotations

import os

from gmm_perception.paths import config_path

DDS_PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"


def use_default_dds_profile() -> str:
    """Use our shared-memory Fast DDS profile unless the user chose a profile; returns the path.

    Must run before rclpy.init: the profile is read when the DDS participant is created.
    Large best-effort clouds are lost over UDP without it (see config/fastdds_shm.xml).
    """
    profile = config_path("fastdds_shm.xml")
    if profile.is_file():
        os.environ.setdefault(DDS_PROFILE_VARIABLE, str(profile))
    return os.environ.get(DDS_PROFILE_VARIABLE, "")

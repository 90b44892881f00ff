"""Building ``sensor_msgs/PointCloud2`` messages from numpy arrays (needs rclpy's message classes).

Decoding is ROS-free and lives in :mod:`gmm_perception.data.pointcloud2` (the same decoder reads
rosbags' messages).

Performance notes (measured, see ``bench/cloud_io.py``): the generated ``data`` setter stores an
``array.array('B')`` as-is (``ROS_PYTHON_CHECK_FIELDS=1``) or copies it (the default); it
copies ``bytes`` too (so ``arr.tobytes()`` costs two copies) and converts a numpy array or
``memoryview`` element by element (~1 s per 16 MB). Passing ``data=`` to the constructor copies
twice. We sidestep the setter: the message's own (empty) ``array.array`` is grown in place,
either with ``frombytes`` of the float32 points (one memcpy) or sized with an in-place repeat and
filled through a numpy view.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from gmm_perception.data.pointcloud2 import NUMPY_TO_POINTFIELD, OBJECT_ID_FIELD, all_finite, \
    cloud_dtype

__all__ = ["object_cloud", "xyz_to_cloud"]

_XYZ = ("x", "y", "z")


def _pointfield_array(name: str, values: np.ndarray, point_count: int) -> np.ndarray:
    """``values`` as an ``(N,)`` or ``(N, count)`` array whose dtype is a PointField datatype."""
    values = np.asarray(values)
    if values.ndim not in (1, 2) or len(values) != point_count:
        raise ValueError(
            f"field {name!r} must have shape (N,) or (N, count) with N={point_count}, "
            f"got {values.shape}")
    kind, size = values.dtype.kind, values.dtype.itemsize
    if kind == "b":
        return values.astype(np.uint8)
    if kind == "f" and size == 2:
        return values.astype(np.float32)
    if kind in "iu" and size == 8:
        narrow = np.dtype(f"{kind}4")
        if values.size and (values.min() < np.iinfo(narrow).min
                            or values.max() > np.iinfo(narrow).max):
            raise ValueError(f"field {name!r} has 64-bit values that do not fit {narrow}")
        return values.astype(narrow)
    if f"{kind}{size}" not in NUMPY_TO_POINTFIELD:
        raise TypeError(f"field {name!r} has dtype {values.dtype}, not a PointField datatype")
    return values


def xyz_to_cloud(
    points: np.ndarray,
    frame_id: str = "",
    stamp: Time | None = None,
    fields: Mapping[str, np.ndarray] | None = None,
) -> PointCloud2:
    """Pack ``(N, 3)`` points (and optional per-point fields) into an unorganised PointCloud2.

    x, y, z are float32 at offsets 0, 4, 8, followed by ``fields`` in order,
    packed without padding, little-endian. ``fields`` values are ``(N,)`` or
    ``(N, count)`` and keep their dtype (bool -> uint8, float16 -> float32,
    64-bit integers narrowed to 32 bits when lossless). ``is_dense`` is True iff
    every coordinate is finite.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {points.shape}")
    # Convert up front so is_dense reflects the float32 values actually sent.
    xyz = np.ascontiguousarray(points, dtype=np.float32)
    point_count = len(xyz)

    extras = {name: _pointfield_array(name, values, point_count)
              for name, values in (fields or {}).items()}
    clashing = sorted(set(extras) & set(_XYZ))
    if clashing:
        raise ValueError(f"fields must not redefine {', '.join(clashing)}")

    point_fields = [PointField(name=axis, offset=4 * index, datatype=PointField.FLOAT32, count=1)
                    for index, axis in enumerate(_XYZ)]
    offset = 12
    for name, values in extras.items():
        count = 1 if values.ndim == 1 else values.shape[1]
        datatype = NUMPY_TO_POINTFIELD[f"{values.dtype.kind}{values.dtype.itemsize}"]
        point_fields.append(PointField(name=name, offset=offset, datatype=datatype, count=count))
        offset += values.dtype.itemsize * count
    point_step = offset

    msg = PointCloud2(
        header=Header(frame_id=frame_id, stamp=stamp if stamp is not None else Time()),
        height=1,
        width=point_count,
        fields=point_fields,
        is_bigendian=False,
        point_step=point_step,
        row_step=point_step * point_count,
        is_dense=all_finite(xyz),
    )
    # Write straight into the message's own (empty) array.array: any assignment
    # to msg.data would copy it again (see the module docstring).
    data = msg.data
    if not extras:
        # x, y, z only: the payload is exactly the float32 array's bytes.
        data.frombytes(xyz.astype("<f4", copy=False).view(np.uint8).reshape(-1))
    elif point_count:
        data.append(0)
        data *= point_step * point_count  # in-place repeat: sized and zeroed at memset speed
        packed = np.ndarray((point_count,), dtype=cloud_dtype(msg), buffer=data)
        for column, axis in enumerate(_XYZ):
            packed[axis] = xyz[:, column]
        for name, values in extras.items():
            packed[name] = values
    return msg


def object_cloud(points: np.ndarray, object_id: int | None, frame_id: str, stamp,
                 fields: Mapping[str, np.ndarray] | None = None) -> PointCloud2:
    """One object's points with a UINT32 ``object_id`` field (the same value on every point),
    then ``fields`` as in ``xyz_to_cloud``; without an id (None), x, y, z and ``fields`` only.

    The message side of the object-id convention; ``data.pointcloud2.object_id_of`` reads it.
    """
    if object_id is None:
        return xyz_to_cloud(points, frame_id, stamp, fields=fields)
    ids = np.full(len(points), object_id, dtype=np.uint32)
    return xyz_to_cloud(points, frame_id, stamp, fields={OBJECT_ID_FIELD: ids, **(fields or {})})

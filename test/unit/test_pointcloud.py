"""Tests for the PointCloud2 decoder (gmm_perception.data.pointcloud2) and the message
builder (gmm_perception.ros.pointcloud).

Expected values are produced independently of the modules under test: clouds
are packed point by point with ``struct`` and decoded the same way.
"""

from __future__ import annotations

import math
import random
import struct
from types import SimpleNamespace

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import PointCloud2, PointField

from gmm_perception.data import pointcloud2
from gmm_perception.data.pointcloud2 import (
    OBJECT_ID_FIELD,
    MalformedCloudError,
    cloud_dtype,
    object_id_of,
    read_fields,
    read_points,
    read_xyz,
    unpack_rgb,
    validate_cloud,
)
from gmm_perception.ros.pointcloud import object_cloud, xyz_to_cloud

STRUCT_CODES = {
    PointField.INT8: "b", PointField.UINT8: "B", PointField.INT16: "h", PointField.UINT16: "H",
    PointField.INT32: "i", PointField.UINT32: "I", PointField.FLOAT32: "f", PointField.FLOAT64: "d",
}
NUMPY_TYPES = {
    PointField.INT8: np.int8, PointField.UINT8: np.uint8, PointField.INT16: np.int16,
    PointField.UINT16: np.uint16, PointField.INT32: np.int32, PointField.UINT32: np.uint32,
    PointField.FLOAT32: np.float32, PointField.FLOAT64: np.float64,
}
# Extremes and sign changes per datatype; floats are exactly representable.
SAMPLE_VALUES = {
    PointField.INT8: [-128, -1, 0, 127],
    PointField.UINT8: [0, 1, 200, 255],
    PointField.INT16: [-32768, -2, 300, 32767],
    PointField.UINT16: [0, 65535, 1234, 7],
    PointField.INT32: [-2**31, -5, 70000, 2**31 - 1],
    PointField.UINT32: [0, 2**32 - 1, 123456789, 1],
    PointField.FLOAT32: [-1.5, 0.0, 3.25, 2.0**100],
    PointField.FLOAT64: [-1e300, 0.1, 2.5, 1e-300],
}
XYZ_FLOAT32 = [("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1),
               ("z", 8, PointField.FLOAT32, 1)]
GARBAGE = 0x41  # padding bytes; 0x41414141 decodes as a finite float, so leaks are visible


def pack_cloud(field_specs, points, *, point_step, height=1, row_step=None,
               big_endian=False) -> PointCloud2:
    """Build a PointCloud2 with struct, one field of one point at a time.

    field_specs: (name, offset, datatype, count); points: row-major list of
    dicts mapping field name to a value (count 1) or a list of values.
    """
    width = len(points) // height
    row_step = width * point_step if row_step is None else row_step
    endian = ">" if big_endian else "<"
    data = bytearray([GARBAGE]) * (row_step * height)
    for index, point in enumerate(points):
        row, column = divmod(index, width)
        base = row * row_step + column * point_step
        for name, offset, datatype, count in field_specs:
            values = point[name] if count > 1 else [point[name]]
            item_format = f"{endian}{count}{STRUCT_CODES[datatype]}"
            struct.pack_into(item_format, data, base + offset, *values)
    msg = PointCloud2(height=height, width=width, is_bigendian=big_endian,
                      point_step=point_step, row_step=row_step, is_dense=False)
    msg.fields = [PointField(name=name, offset=offset, datatype=datatype, count=count)
                  for name, offset, datatype, count in field_specs]
    msg.data = bytes(data)
    return msg


def xyz_points(count: int, **extra_fields) -> list[dict]:
    return [{"x": 1.0 + i, "y": -2.0 * i, "z": 0.5 * i,
             **{name: values[i] for name, values in extra_fields.items()}}
            for i in range(count)]


def xyz_intensity_cloud(points: list[dict], **kwargs) -> PointCloud2:
    specs = XYZ_FLOAT32 + [("intensity", 12, PointField.FLOAT32, 1)]
    return pack_cloud(specs, points, point_step=16, **kwargs)


def expected_xyz(points: list[dict]) -> np.ndarray:
    return np.array([[p["x"], p["y"], p["z"]] for p in points], dtype=np.float32)


# --- reading ---------------------------------------------------------------

@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("datatype", sorted(STRUCT_CODES))
def test_every_datatype_reads_back_struct_packed_values(datatype, count, big_endian):
    samples = SAMPLE_VALUES[datatype]
    values = [samples[i] if count == 1 else [samples[(i + j) % 4] for j in range(count)]
              for i in range(4)]
    item_size = struct.calcsize(STRUCT_CODES[datatype])
    # The field sits at offset 13 (unaligned) and the point has 3 bytes of tail padding.
    specs = XYZ_FLOAT32 + [("value", 13, datatype, count)]
    msg = pack_cloud(specs, xyz_points(4, value=values), point_step=16 + item_size * count,
                     big_endian=big_endian)

    fields = read_fields(msg, ["value"])

    assert fields["value"].dtype == np.dtype(NUMPY_TYPES[datatype])
    assert fields["value"].shape == ((4,) if count == 1 else (4, count))
    np.testing.assert_array_equal(fields["value"], np.array(values, dtype=NUMPY_TYPES[datatype]))
    np.testing.assert_array_equal(fields["xyz"], expected_xyz(xyz_points(4)))


def test_cloud_dtype_honours_offsets_padding_counts_and_byte_order():
    specs = XYZ_FLOAT32 + [("normal", 16, PointField.FLOAT64, 3)]
    msg = pack_cloud(specs, [], point_step=48, big_endian=True)

    dtype = cloud_dtype(msg)

    assert dtype.itemsize == 48
    assert dtype.fields["normal"][1] == 16
    assert dtype["normal"].shape == (3,)
    assert dtype["normal"].base == np.dtype(">f8")
    assert dtype["x"] == np.dtype(">f4")


def test_big_endian_cloud_reads_xyz_and_fields():
    points = xyz_points(6, intensity=[0.25 * i for i in range(6)])
    msg = xyz_intensity_cloud(points, big_endian=True)

    fields = read_fields(msg)

    np.testing.assert_array_equal(fields["xyz"], expected_xyz(points))
    np.testing.assert_array_equal(fields["intensity"], [0.25 * i for i in range(6)])
    assert fields["intensity"].dtype == np.float32  # native byte order, usable downstream


def test_padded_point_layout_is_honoured():
    # The common PCL layout: x, y, z, 4 bytes padding, intensity at 16, point_step 32.
    specs = XYZ_FLOAT32 + [("intensity", 16, PointField.FLOAT32, 1)]
    points = xyz_points(5, intensity=[10.0, 20.0, 30.0, 40.0, 50.0])
    msg = pack_cloud(specs, points, point_step=32)

    fields = read_fields(msg, ["intensity"])

    np.testing.assert_array_equal(fields["xyz"], expected_xyz(points))
    np.testing.assert_array_equal(fields["intensity"], [10.0, 20.0, 30.0, 40.0, 50.0])


def test_organised_cloud_with_row_padding_reads_points_in_row_major_order():
    height, width = 4, 5
    points = [{"x": float(row), "y": float(column), "z": float(10 * row + column),
               "intensity": float(100 + 10 * row + column)}
              for row in range(height) for column in range(width)]
    msg = xyz_intensity_cloud(points, height=height, row_step=width * 16 + 12)

    xyz = read_xyz(msg)
    structured = read_points(msg)

    assert xyz.shape == (20, 3)
    np.testing.assert_array_equal(xyz, expected_xyz(points))
    assert structured.shape == (20,)
    np.testing.assert_array_equal(structured["intensity"], [p["intensity"] for p in points])


def test_read_points_is_a_read_only_view_without_row_padding():
    msg = xyz_intensity_cloud(xyz_points(6, intensity=[1.0] * 6), height=2)

    structured = read_points(msg)

    assert np.shares_memory(structured, np.frombuffer(msg.data, dtype=np.uint8))
    assert not structured.flags.writeable
    np.testing.assert_array_equal(structured["z"], [0.5 * i for i in range(6)])


def test_fields_listed_out_of_offset_order_are_read_by_offset():
    specs = [("intensity", 12, PointField.FLOAT32, 1), ("z", 8, PointField.FLOAT32, 1),
             ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1)]
    points = xyz_points(3, intensity=[7.0, 8.0, 9.0])

    fields = read_fields(pack_cloud(specs, points, point_step=16))

    np.testing.assert_array_equal(fields["xyz"], expected_xyz(points))
    np.testing.assert_array_equal(fields["intensity"], [7.0, 8.0, 9.0])


@pytest.mark.parametrize("block_points", [1, 3, 7, 64])
def test_blocked_xyz_copy_is_seamless_across_block_boundaries(monkeypatch, block_points):
    # Shrink the copy block so that small clouds span many blocks and row boundaries.
    monkeypatch.setattr(pointcloud2, "_BLOCK_POINTS", block_points)
    height, width = 4, 5
    points = xyz_points(height * width, intensity=[float(i) for i in range(height * width)])
    points[17]["z"] = math.nan  # only in a late block, after finite ones
    for row_step in (width * 16, width * 16 + 4):
        msg = xyz_intensity_cloud(points, height=height, row_step=row_step)

        fields = read_fields(msg)

        kept = [p for i, p in enumerate(points) if i != 17]
        np.testing.assert_array_equal(fields["xyz"], expected_xyz(kept))
        np.testing.assert_array_equal(fields["intensity"], [p["intensity"] for p in kept])
        np.testing.assert_array_equal(read_xyz(msg, drop_invalid=False), expected_xyz(points))


def test_non_finite_rows_are_dropped_consistently_and_kept_on_request():
    points = xyz_points(6, intensity=[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    points[1]["x"] = math.nan
    points[3]["y"] = math.inf
    points[4]["z"] = -math.inf
    msg = xyz_intensity_cloud(points)

    kept = read_fields(msg)
    everything = read_fields(msg, drop_invalid=False)

    np.testing.assert_array_equal(kept["xyz"], expected_xyz([points[0], points[2], points[5]]))
    np.testing.assert_array_equal(kept["intensity"], [0.0, 2.0, 5.0])
    np.testing.assert_array_equal(read_xyz(msg), kept["xyz"])
    np.testing.assert_array_equal(everything["xyz"], expected_xyz(points))  # NaN == NaN here
    np.testing.assert_array_equal(everything["intensity"], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    assert read_xyz(msg, drop_invalid=False).shape == (6, 3)


def test_float64_xyz_is_converted_to_float32():
    specs = [("x", 0, PointField.FLOAT64, 1), ("y", 8, PointField.FLOAT64, 1),
             ("z", 16, PointField.FLOAT64, 1)]
    points = [{"x": 0.1 * i, "y": 1e10 + i, "z": -1 / 3} for i in range(5)]
    msg = pack_cloud(specs, points, point_step=24)

    xyz = read_xyz(msg)

    assert xyz.dtype == np.float32 and xyz.flags.c_contiguous
    np.testing.assert_array_equal(xyz, expected_xyz(points))


@pytest.mark.parametrize("height, width", [(1, 0), (0, 0), (3, 0)])
def test_empty_cloud_reads_as_zero_points(height, width):
    msg = xyz_intensity_cloud([], height=max(height, 1))
    msg.height, msg.width = height, width

    fields = read_fields(msg)

    assert read_xyz(msg).shape == (0, 3)
    assert read_xyz(msg).dtype == np.float32
    assert fields["xyz"].shape == (0, 3) and fields["intensity"].shape == (0,)
    assert read_points(msg).shape == (0,)


def test_overlapping_fields_are_allowed():
    packed = [0x00FF8001, 0x00000000, 0x00102030]
    msg = pack_cloud(XYZ_FLOAT32 + [("rgb", 12, PointField.UINT32, 1)],
                     xyz_points(3, rgb=packed), point_step=16)
    # A second view of the same four bytes, as drivers publishing both rgb and rgba do.
    msg.fields = msg.fields + [PointField(name="rgba", offset=12, datatype=PointField.FLOAT32,
                                          count=1)]

    fields = read_fields(msg)

    np.testing.assert_array_equal(fields["rgb"], packed)
    np.testing.assert_array_equal(fields["rgba"].view(np.uint32), packed)


def test_missing_requested_field_raises_key_error_naming_it():
    msg = xyz_intensity_cloud(xyz_points(2, intensity=[1.0, 2.0]))

    with pytest.raises(KeyError, match="ring"):
        read_fields(msg, ["intensity", "ring"])


def test_unpack_rgb_from_uint32_and_float32_bit_patterns():
    colours = [(255, 128, 1), (0, 0, 0), (16, 32, 48), (1, 255, 254)]
    packed = [(r << 16) | (g << 8) | b for r, g, b in colours]
    as_float = [struct.unpack("<f", struct.pack("<I", value))[0] for value in packed]

    from_uint = unpack_rgb(np.array(packed, dtype=np.uint32))
    from_float = unpack_rgb(np.array(as_float, dtype=np.float32))

    assert from_uint.dtype == np.uint8 and from_uint.shape == (4, 3)
    np.testing.assert_array_equal(from_uint, colours)
    np.testing.assert_array_equal(from_float, colours)


# --- malformed messages -----------------------------------------------------

def base_cloud() -> PointCloud2:
    return xyz_intensity_cloud(xyz_points(4, intensity=[1.0] * 4), height=2)


def set_field(msg, index, **changes):
    old = msg.fields[index]
    attributes = {"name": old.name, "offset": old.offset, "datatype": old.datatype,
                  "count": old.count, **changes}
    msg.fields = msg.fields[:index] + [PointField(**attributes)] + msg.fields[index + 1:]


def truncate_data(msg):
    msg.data = msg.data[:-1]


def extend_data(msg):
    msg.data = bytes(msg.data) + bytes(1)


def shrink_point_step(msg):
    # Consistent sizes, so only the field extent (16) exceeds point_step (14).
    msg.point_step, msg.row_step = 14, 28
    msg.data = bytes(56)


def drop_z(msg):
    msg.fields = [field for field in msg.fields if field.name != "z"]


def shrink_row_step(msg):
    msg.row_step = msg.width * msg.point_step - 1
    msg.data = bytes(msg.row_step * msg.height)


def duplicate_intensity(msg):
    msg.fields = msg.fields + [PointField(name="intensity", offset=0,
                                          datatype=PointField.UINT8, count=1)]


MALFORMATIONS = {
    "truncated data": (truncate_data, "length"),
    "oversized data": (extend_data, "length"),
    "point_step below field extent": (shrink_point_step, "point_step"),
    "missing z": (drop_z, "missing"),
    "integer x": (lambda msg: set_field(msg, 0, datatype=PointField.INT32), "float"),
    "row_step below width*point_step": (shrink_row_step, "row_step"),
    "datatype 0": (lambda msg: set_field(msg, 3, datatype=0), "datatype"),
    "datatype 9": (lambda msg: set_field(msg, 3, datatype=9), "datatype"),
    "count 0": (lambda msg: set_field(msg, 3, count=0), "count"),
    "xyz count 2": (lambda msg: set_field(msg, 2, count=2, offset=8), "count"),
    "duplicate name": (duplicate_intensity, "duplicate"),
}


@pytest.mark.parametrize("reader", [validate_cloud, read_xyz, read_points, read_fields])
@pytest.mark.parametrize("malformation", sorted(MALFORMATIONS))
def test_malformed_cloud_raises_error_naming_the_defect(malformation, reader):
    mutate, defect_word = MALFORMATIONS[malformation]
    msg = base_cloud()
    validate_cloud(msg)  # the base is well formed, so only the mutation can fail it
    mutate(msg)

    with pytest.raises(MalformedCloudError, match=defect_word):
        reader(msg)


def test_cloud_dtype_rejects_unknown_datatype():
    msg = base_cloud()
    set_field(msg, 3, datatype=42)

    with pytest.raises(MalformedCloudError, match="datatype"):
        cloud_dtype(msg)


def test_malformed_error_is_a_value_error():
    assert issubclass(MalformedCloudError, ValueError)


def test_random_header_and_buffer_corruption_never_reads_out_of_bounds():
    rng = random.Random(1234)
    for _ in range(300):
        msg = xyz_intensity_cloud(xyz_points(12, intensity=[float(i) for i in range(12)]),
                                  height=3)
        choice = rng.randrange(5)
        if choice == 0:
            msg.data = msg.data[:rng.randrange(len(msg.data))]
        elif choice == 1:
            msg.width = rng.choice([5, 100, 2**31, 2**32 - 1])
        elif choice == 2:
            msg.height = rng.choice([4, 1000, 2**32 - 1])
        elif choice == 3:
            msg.row_step = rng.choice([0, 63, 65, 2**32 - 1])
        else:
            set_field(msg, rng.randrange(4), offset=rng.choice([13, 200, 2**32 - 4]))
        try:
            xyz = read_xyz(msg, drop_invalid=False)
        except MalformedCloudError:
            continue
        # Anything accepted must be consistent with the header and inside the buffer.
        assert xyz.shape == (msg.height * msg.width, 3)
        assert msg.height * msg.row_step == len(msg.data)


# --- any PointCloud2-shaped object: rosbags' messages, plain namespaces ------

ROSBAGS_TYPES = get_typestore(Stores.ROS2_KILTED)
ROSBAGS_CLOUD = "sensor_msgs/msg/PointCloud2"


def as_rosbags(msg: PointCloud2):
    """The same message as rosbags decodes it from a bag (its data a uint8 numpy array)."""
    return ROSBAGS_TYPES.deserialize_cdr(serialize_message(msg), ROSBAGS_CLOUD)


def organised_big_endian_cloud() -> PointCloud2:
    height, width = 3, 4
    points = [{"x": float(r) + 0.5, "y": float(c) * -1.25, "z": math.nan if r == c else 2.0 * r,
               "intensity": float(10 * r + c)} for r in range(height) for c in range(width)]
    return xyz_intensity_cloud(points, height=height, row_step=width * 16 + 8, big_endian=True)


@pytest.mark.parametrize("build", ["xyz_to_cloud with fields", "organised big-endian padded"])
def test_rosbags_and_rclpy_messages_of_one_cloud_decode_to_identical_arrays(build):
    if build == "xyz_to_cloud with fields":
        rng = np.random.default_rng(5)
        points = rng.normal(size=(257, 3)).astype(np.float32)
        points[::50, 1] = np.nan
        rclpy_msg = xyz_to_cloud(points, "lidar", Time(sec=4), fields={
            "intensity": rng.random(257).astype(np.float32),
            "ring": rng.integers(0, 128, 257).astype(np.uint16),
            "normal": rng.normal(size=(257, 3)).astype(np.float64)})
    else:
        rclpy_msg = organised_big_endian_cloud()
    rosbags_msg = as_rosbags(rclpy_msg)
    assert isinstance(rosbags_msg.data, np.ndarray)  # really the other message type

    for drop_invalid in (True, False):
        ours, theirs = (read_fields(m, drop_invalid=drop_invalid) for m in (rclpy_msg, rosbags_msg))
        assert ours.keys() == theirs.keys()
        for name in ours:
            assert ours[name].dtype == theirs[name].dtype
            np.testing.assert_array_equal(ours[name], theirs[name])
        np.testing.assert_array_equal(read_xyz(rclpy_msg, drop_invalid),
                                      read_xyz(rosbags_msg, drop_invalid))
    ours, theirs = read_points(rclpy_msg), read_points(rosbags_msg)
    assert ours.dtype == theirs.dtype and ours.tobytes() == theirs.tobytes()  # NaN != NaN


@pytest.mark.parametrize("container", ["bytes", "bytearray", "array", "numpy", "list"])
def test_data_may_be_any_byte_container(container):
    import array

    msg = organised_big_endian_cloud()
    raw = bytes(msg.data)
    data = {"bytes": raw, "bytearray": bytearray(raw), "array": array.array("B", raw),
            "numpy": np.frombuffer(raw, dtype=np.uint8), "list": list(raw)}[container]
    plain = SimpleNamespace(fields=msg.fields, height=msg.height, width=msg.width,
                            point_step=msg.point_step, row_step=msg.row_step,
                            is_bigendian=msg.is_bigendian, data=data)

    np.testing.assert_array_equal(read_xyz(plain, drop_invalid=False),
                                  read_xyz(msg, drop_invalid=False))


@pytest.mark.parametrize("defect, word", [
    ({"data": np.zeros(12, dtype=np.float32)}, "bytes"),  # 48 bytes, but not a byte sequence
    ({"data": [0, 1, 256]}, "byte"),
    ({"width": -1}, "negative"),
    ({"row_step": -16}, "negative"),
])
def test_plain_objects_with_impossible_values_are_malformed(defect, word):
    msg = xyz_intensity_cloud(xyz_points(3, intensity=[1.0] * 3))
    plain = SimpleNamespace(fields=msg.fields, height=1, width=3, point_step=16, row_step=48,
                            is_bigendian=False, data=bytes(msg.data))
    for name, value in defect.items():
        setattr(plain, name, value)

    with pytest.raises(MalformedCloudError, match=word):
        read_xyz(plain)


def test_negative_field_offset_is_malformed():
    fields = [SimpleNamespace(name=n, offset=o, datatype=d, count=c) for n, o, d, c in
              XYZ_FLOAT32[:2] + [("z", -4, PointField.FLOAT32, 1)]]
    plain = SimpleNamespace(fields=fields, height=1, width=1, point_step=12, row_step=12,
                            is_bigendian=False, data=bytes(12))

    with pytest.raises(MalformedCloudError, match="offset"):
        validate_cloud(plain)


def test_object_id_of_reads_rclpy_and_rosbags_clouds_alike():
    points = np.random.default_rng(6).normal(size=(40, 3)).astype(np.float32)
    msg = object_cloud(points, 7, "map", Time(sec=3))

    assert object_id_of(msg) == 7 and object_id_of(as_rosbags(msg)) == 7
    assert [f.name for f in msg.fields][-1] == OBJECT_ID_FIELD
    assert object_id_of(xyz_to_cloud(points)) is None  # not an object cloud
    assert object_id_of(object_cloud(points[:0], 7, "map", Time())) is None
    mixed = xyz_to_cloud(points, fields={OBJECT_ID_FIELD: np.arange(40, dtype=np.uint32)})
    with pytest.raises(MalformedCloudError, match="mixes"):
        object_id_of(mixed)
    with pytest.raises(MalformedCloudError, match="mixes"):
        object_id_of(as_rosbags(mixed))
    two_ids = xyz_to_cloud(points, fields={OBJECT_ID_FIELD: np.zeros((40, 2), np.uint32)})
    with pytest.raises(MalformedCloudError, match="count"):
        object_id_of(two_ids)


def test_the_decoder_imports_without_ros_or_rosbags():
    import subprocess
    import sys

    code = ("import sys\n"
            "for name in ('rclpy', 'rosbags', 'sensor_msgs', 'builtin_interfaces'):\n"
            "    sys.modules[name] = None  # importing any of them now fails\n"
            "import gmm_perception.data.pointcloud2\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- writing ----------------------------------------------------------------

def test_xyz_round_trip_and_message_metadata():
    points = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    stamp = Time(sec=12, nanosec=345)

    msg = xyz_to_cloud(points, frame_id="lidar", stamp=stamp)

    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 100, 12, 1200)
    assert msg.is_dense and not msg.is_bigendian
    assert msg.header.frame_id == "lidar" and msg.header.stamp == stamp
    np.testing.assert_array_equal(read_xyz(msg), points)


@pytest.mark.parametrize("layout", ["float64", "big-endian column-major", "strided"])
def test_xyz_to_cloud_accepts_any_float_layout(layout):
    reference = np.random.default_rng(2).normal(size=(20, 3)).astype(np.float32)
    points = {"float64": reference.astype(np.float64),
              "big-endian column-major": np.asfortranarray(reference.astype(">f4")),
              "strided": np.repeat(reference, 2, axis=0)[::2]}[layout]

    np.testing.assert_array_equal(read_xyz(xyz_to_cloud(points)), reference)


def test_huge_but_finite_coordinates_count_as_finite():
    points = np.array([[3e38, -3e38, 1e20], [1.0, 2.0, 3.0]], dtype=np.float32)

    msg = xyz_to_cloud(points)

    assert msg.is_dense
    np.testing.assert_array_equal(read_xyz(msg), points)


def test_xyz_to_cloud_writes_the_wire_format_struct_expects():
    points = np.array([[1.0, 2.0, 3.0], [-4.5, 0.25, 1e6]], dtype=np.float64)
    fields = {
        "intensity": np.array([0.5, 7.0], dtype=np.float32),
        "ring": np.array([3, 65535], dtype=np.uint16),
        "rgb": np.array([0x00FF0000, 0x000000FF], dtype=np.uint32),
        "normal": np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=np.float32),
    }

    msg = xyz_to_cloud(points, fields=fields)

    layout = [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]
    assert layout == XYZ_FLOAT32 + [("intensity", 12, PointField.FLOAT32, 1),
                                    ("ring", 16, PointField.UINT16, 1),
                                    ("rgb", 18, PointField.UINT32, 1),
                                    ("normal", 22, PointField.FLOAT32, 3)]
    assert msg.point_step == 34 and msg.row_step == 68 and len(msg.data) == 68
    data = bytes(msg.data)
    for index in range(2):
        decoded = struct.unpack_from("<3f f H I 3f", data, index * 34)
        assert decoded[:3] == tuple(points[index])
        assert decoded[3:6] == (fields["intensity"][index], fields["ring"][index],
                                fields["rgb"][index])
        assert decoded[6:] == tuple(fields["normal"][index])


def test_fields_round_trip_preserving_dtypes():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(50, 3)).astype(np.float32)
    fields = {
        "intensity": rng.random(50).astype(np.float32),
        "ring": rng.integers(0, 128, 50).astype(np.uint16),
        "rgb": rng.integers(0, 2**24, 50).astype(np.uint32),
        "t": rng.random(50),  # float64
    }

    back = read_fields(xyz_to_cloud(points, fields=fields))

    np.testing.assert_array_equal(back["xyz"], points)
    for name, values in fields.items():
        assert back[name].dtype == values.dtype
        np.testing.assert_array_equal(back[name], values)


@pytest.mark.parametrize("fields", [None, {"ring": np.arange(30, dtype=np.uint16)}])
def test_written_cloud_survives_ros_serialisation(fields):
    # xyz_to_cloud fills msg.data in place; the serialiser must see those bytes.
    points = np.random.default_rng(3).normal(size=(30, 3)).astype(np.float32)

    received = deserialize_message(serialize_message(xyz_to_cloud(points, fields=fields)),
                                   PointCloud2)

    np.testing.assert_array_equal(read_xyz(received), points)
    if fields:
        np.testing.assert_array_equal(read_fields(received)["ring"], np.arange(30))


def test_xyz_to_cloud_marks_non_finite_clouds_not_dense():
    points = np.array([[0.0, 0.0, 0.0], [np.nan, 1.0, 1.0], [1.0, 2.0, 3.0]])

    msg = xyz_to_cloud(points)

    assert not msg.is_dense
    np.testing.assert_array_equal(read_xyz(msg), [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])


def test_xyz_to_cloud_of_no_points_is_readable():
    msg = xyz_to_cloud(np.empty((0, 3)), fields={"intensity": np.empty(0, np.float32)})

    assert msg.width == 0 and msg.is_dense and len(msg.data) == 0
    assert read_xyz(msg).shape == (0, 3)


def test_xyz_to_cloud_narrows_64_bit_integers_and_bools():
    msg = xyz_to_cloud(np.zeros((2, 3)), fields={"ring": np.array([0, 40]),
                                                  "valid": np.array([True, False])})

    datatypes = {field.name: field.datatype for field in msg.fields}
    back = read_fields(msg)

    assert datatypes["ring"] == PointField.INT32 and datatypes["valid"] == PointField.UINT8
    np.testing.assert_array_equal(back["ring"], [0, 40])
    np.testing.assert_array_equal(back["valid"], [1, 0])


@pytest.mark.parametrize("points, fields, error", [
    (np.zeros((4, 2)), None, ValueError),
    (np.zeros(3), None, ValueError),
    (np.zeros((4, 3)), {"intensity": np.zeros(5)}, ValueError),
    (np.zeros((4, 3)), {"x": np.zeros(4)}, ValueError),
    (np.zeros((4, 3)), {"ring": np.array([0, 1, 2, 2**40])}, ValueError),
    (np.zeros((4, 3)), {"phase": np.zeros(4, dtype=np.complex64)}, TypeError),
])
def test_xyz_to_cloud_rejects_invalid_input(points, fields, error):
    with pytest.raises(error):
        xyz_to_cloud(points, fields=fields)

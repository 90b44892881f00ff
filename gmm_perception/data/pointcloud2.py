"""The one ``sensor_msgs/PointCloud2`` decoder: numpy only, no rclpy, no rosbags.

It reads any object with PointCloud2's attributes: ``fields`` (each with ``name``, ``offset``,
``datatype``, ``count``), ``height``, ``width``, ``point_step``, ``row_step``,
``is_bigendian`` and ``data`` as ``bytes``, ``bytearray``, ``array.array('B')`` (rclpy's
messages) or a ``uint8`` numpy array (rosbags' messages). The live nodes (through
``gmm_perception.ros``) and the bag reader (``gmm_perception.evaluation.bag``) both decode with
it, so a cloud is accepted or refused, with the same :class:`MalformedCloudError`, whichever way
it arrives. Building messages needs the message classes and lives in ``ros/pointcloud.py``.

Every message is validated before any numpy view touches its buffer, so a malformed or
truncated message raises :class:`MalformedCloudError` naming the defect instead of reading out
of bounds.

Performance notes (measured, see ``bench/cloud_io.py``):

* ``np.frombuffer(msg.data)`` is zero-copy for ``bytes``, ``array.array`` and numpy data.
* x, y and z are copied with one strided pass per column, which is ~3x faster than numpy's copy
  of an ``(N, 3)`` view whose rows are ``point_step`` apart, over cache-sized blocks.

The object-id convention of segmented clouds lives here too: a segmentation publishes one cloud
per object, with the object's id in every point's :data:`OBJECT_ID_FIELD`;
:func:`object_id_of` reads it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

__all__ = [
    "FLOAT32",
    "FLOAT64",
    "INT16",
    "INT32",
    "INT8",
    "MalformedCloudError",
    "NUMPY_TO_POINTFIELD",
    "OBJECT_ID_FIELD",
    "POINTFIELD_TO_NUMPY",
    "UINT16",
    "UINT32",
    "UINT8",
    "all_finite",
    "cloud_dtype",
    "object_id_of",
    "read_fields",
    "read_points",
    "read_xyz",
    "unpack_rgb",
    "validate_cloud",
]

# sensor_msgs/msg/PointField datatype constants.
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)

# PointField datatype code -> numpy type string without byte-order prefix.
POINTFIELD_TO_NUMPY: dict[int, str] = {
    INT8: "i1", UINT8: "u1", INT16: "i2", UINT16: "u2",
    INT32: "i4", UINT32: "u4", FLOAT32: "f4", FLOAT64: "f8",
}
NUMPY_TO_POINTFIELD: dict[str, int] = {
    type_str: code for code, type_str in POINTFIELD_TO_NUMPY.items()
}
_ITEM_SIZES = {code: np.dtype(type_str).itemsize for code, type_str in POINTFIELD_TO_NUMPY.items()}
_FLOAT_DATATYPES = (FLOAT32, FLOAT64)
_XYZ = ("x", "y", "z")
_HEADER_SIZES = ("height", "width", "point_step", "row_step")
# Points per block when copying x, y, z: 1 MB of 16-byte points stays in L2.
_BLOCK_POINTS = 1 << 16

OBJECT_ID_FIELD = "object_id"
"""Per-point field of a segmented object's cloud: the object's id, the same on every point."""


class PointFieldLike(Protocol):
    name: str
    offset: int
    datatype: int
    count: int


class PointCloud2Like(Protocol):
    """What the decoder reads: rclpy's and rosbags' PointCloud2 both qualify."""

    fields: Sequence[PointFieldLike]
    height: int
    width: int
    point_step: int
    row_step: int
    is_bigendian: bool
    data: Any  # bytes, bytearray, array.array('B') or a uint8 numpy array


class MalformedCloudError(ValueError):
    """A PointCloud2 whose header, fields and data are inconsistent."""


def _data_bytes(msg: PointCloud2Like) -> np.ndarray:
    """``msg.data`` as a 1-D uint8 array, without copying what is already a byte buffer."""
    data = msg.data
    if isinstance(data, np.ndarray):
        if data.dtype.itemsize != 1 or data.dtype.kind not in "uib":
            raise MalformedCloudError(f"data must be bytes, got a {data.dtype} array")
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        buffer = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):  # a sequence of ints (e.g. a list), not a buffer
        try:
            return np.array(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise MalformedCloudError(f"data is not a byte sequence ({exc})") from None
    if getattr(data, "itemsize", 1) != 1:  # e.g. array.array('f'): not a byte sequence
        raise MalformedCloudError(f"data must be bytes, got items of {data.itemsize} bytes")
    return buffer


def _validate_layout(msg: PointCloud2Like) -> None:
    """Check what building the structured dtype needs: known fields that fit in a point."""
    seen: set[str] = set()
    extent, widest = 0, ""
    for field in msg.fields:
        if field.datatype not in POINTFIELD_TO_NUMPY:
            raise MalformedCloudError(
                f"field {field.name!r} has unknown datatype {field.datatype}")
        if field.count < 1:
            raise MalformedCloudError(
                f"field {field.name!r} has count {field.count}; count must be >= 1")
        if field.offset < 0:
            raise MalformedCloudError(f"field {field.name!r} has negative offset {field.offset}")
        if field.name in seen:
            raise MalformedCloudError(f"duplicate field name {field.name!r}")
        seen.add(field.name)
        end = field.offset + _ITEM_SIZES[field.datatype] * field.count
        if end > extent:
            extent, widest = end, field.name
    if msg.point_step < extent:
        raise MalformedCloudError(
            f"point_step {msg.point_step} is smaller than the field extent of {extent} bytes "
            f"(field {widest!r} ends there)")


def _validate(msg: PointCloud2Like) -> np.ndarray:
    """Raise :class:`MalformedCloudError` naming the first defect; return the data's bytes."""
    for name in _HEADER_SIZES:
        if getattr(msg, name) < 0:
            raise MalformedCloudError(f"{name} is negative ({getattr(msg, name)})")
    _validate_layout(msg)
    fields_by_name = {field.name: field for field in msg.fields}
    missing = [axis for axis in _XYZ if axis not in fields_by_name]
    if missing:
        raise MalformedCloudError(
            f"missing required field(s) {', '.join(missing)} "
            f"(fields: {', '.join(fields_by_name) or 'none'})")
    for axis in _XYZ:
        field = fields_by_name[axis]
        if field.datatype not in _FLOAT_DATATYPES:
            raise MalformedCloudError(
                f"field {axis!r} must be float (FLOAT32 or FLOAT64), got datatype {field.datatype}")
        if field.count != 1:
            raise MalformedCloudError(f"field {axis!r} must have count 1, got {field.count}")
    if msg.width * msg.point_step > msg.row_step:
        raise MalformedCloudError(
            f"row_step {msg.row_step} is smaller than width*point_step = "
            f"{msg.width * msg.point_step}")
    data = _data_bytes(msg)
    expected = msg.row_step * msg.height
    if len(data) != expected:
        raise MalformedCloudError(
            f"data length {len(data)} != row_step*height = {expected} "
            "(truncated or oversized buffer)")
    return data


def validate_cloud(msg: PointCloud2Like) -> None:
    """Raise :class:`MalformedCloudError` naming the first defect of ``msg``.

    The rules: header sizes and field offsets not negative; every field of a known datatype,
    count >= 1, a unique name and inside ``point_step``; x, y and z present, FLOAT32 or FLOAT64,
    count 1, at any offset; ``row_step >= width * point_step``; ``data`` a byte sequence of
    exactly ``height * row_step`` bytes.
    """
    _validate(msg)


def cloud_dtype(msg: PointCloud2Like) -> np.dtype:
    """Structured dtype of one point: explicit offsets, ``itemsize=point_step``.

    Fields with ``count > 1`` become sub-array fields; byte order follows
    ``msg.is_bigendian``. Only the field layout is validated here.
    """
    _validate_layout(msg)
    byte_order = ">" if msg.is_bigendian else "<"
    formats = []
    for field in msg.fields:
        scalar = np.dtype(byte_order + POINTFIELD_TO_NUMPY[field.datatype])
        formats.append(scalar if field.count == 1 else np.dtype((scalar, (field.count,))))
    return np.dtype({
        "names": [field.name for field in msg.fields],
        "formats": formats,
        "offsets": [field.offset for field in msg.fields],
        "itemsize": msg.point_step,
    })


def _point_grid(msg: PointCloud2Like) -> np.ndarray:
    """Validated, zero-copy, read-only ``(height, width)`` structured view of ``msg.data``."""
    data = _validate(msg)
    dtype = cloud_dtype(msg)
    height, width = int(msg.height), int(msg.width)
    if height * width == 0:
        return np.empty((height, width), dtype)
    # Strides come from the validated header, so the view ends exactly at
    # height*row_step == len(data); numpy re-checks the bound as well.
    grid = np.ndarray(
        shape=(height, width),
        dtype=dtype,
        buffer=data,
        strides=(int(msg.row_step), int(msg.point_step)),
    )
    grid.flags.writeable = False  # never let callers scribble over the message
    return grid


def read_points(msg: PointCloud2Like) -> np.ndarray:
    """All points as a structured array of shape ``(height*width,)`` in row-major order.

    Without row padding (``row_step == width*point_step``) this is a read-only
    view sharing memory with ``msg.data``; otherwise the points (not the
    padding) are copied.
    """
    return _point_grid(msg).reshape(-1)


def _xyz_float32(grid: np.ndarray) -> tuple[np.ndarray, bool]:
    """Contiguous float32 ``(N, 3)`` copy of x, y, z and whether all of it is finite.

    Type and byte order are converted on the fly. The copy runs one strided
    pass per column (numpy's copy of an ``(N, 3)`` view whose rows are
    ``point_step`` apart is ~3x slower) over cache-sized blocks, so that the
    source is fetched from memory once and the finiteness check reads the
    block while it is still cached.
    """
    height, width = grid.shape
    xyz = np.empty((height * width, 3), dtype=np.float32)
    # Treat unpadded clouds as one long row so that blocks are not cut at rows.
    if height > 1 and grid.strides[0] == width * grid.itemsize:
        grid = grid.reshape(1, -1)
    rows, columns = grid.shape
    xyz_grid = xyz.reshape(rows, columns, 3)
    sources = [grid[axis] for axis in _XYZ]
    # Blocks are whole rows or a single row, so every xyz block is contiguous.
    rows_per_block = max(1, _BLOCK_POINTS // max(columns, 1))
    columns_per_block = max(1, min(columns, _BLOCK_POINTS))
    finite = True
    for row in range(0, rows, rows_per_block):
        row_slice = slice(row, row + rows_per_block)
        for column in range(0, columns, columns_per_block):
            column_slice = slice(column, column + columns_per_block)
            block = xyz_grid[row_slice, column_slice]
            for axis_index, source in enumerate(sources):
                block[..., axis_index] = source[row_slice, column_slice]
            finite = finite and all_finite(block)
    return xyz, finite


def all_finite(values: np.ndarray) -> bool:
    """True iff every value of the C-contiguous float array is finite (True when empty)."""
    flat = values.reshape(-1)
    # Screen with the sum of squares: one BLAS pass, NaN or inf if any value is.
    # It also overflows for |value| > ~1e19, so a negative is confirmed with
    # min/max, which propagate NaN and expose +-inf.
    with np.errstate(over="ignore"):
        if np.isfinite(np.dot(flat, flat)):
            return True
    return bool(np.isfinite(flat.min()) and np.isfinite(flat.max()))


def _finite_rows(xyz: np.ndarray) -> np.ndarray:
    """Mask of the rows whose x, y and z are all finite."""
    # Per column: the (N, 3) isfinite plus strided ANDs is slower.
    keep = np.isfinite(xyz[:, 0])
    keep &= np.isfinite(xyz[:, 1])
    keep &= np.isfinite(xyz[:, 2])
    return keep


def _select_rows(rows: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``rows[keep]`` for a C-contiguous array of shape ``(N, ...)``.

    Multi-column rows are indexed as opaque void records: numpy's boolean
    indexing of an ``(N, 3)`` array is ~15x slower than that of ``(N,)`` records.
    """
    if rows.ndim == 1:
        return rows[keep]
    row_shape = rows.shape[1:]
    row_bytes = rows.itemsize * int(np.prod(row_shape))
    records = rows.reshape(len(rows), -1).view(np.dtype((np.void, row_bytes))).reshape(-1)
    return records[keep].view(rows.dtype).reshape((-1,) + row_shape)


def read_xyz(msg: PointCloud2Like, drop_invalid: bool = True) -> np.ndarray:
    """Contiguous float32 ``(N, 3)`` array of x, y, z in row-major order.

    With ``drop_invalid`` rows with a NaN or infinite coordinate are removed
    (``is_dense`` is not trusted: drivers often get it wrong); without it
    ``N == height * width``.
    """
    xyz, finite = _xyz_float32(_point_grid(msg))
    if finite or not drop_invalid:
        return xyz
    return _select_rows(xyz, _finite_rows(xyz))


def read_fields(
    msg: PointCloud2Like,
    names: Sequence[str] | None = None,
    drop_invalid: bool = True,
) -> dict[str, np.ndarray]:
    """``'xyz'`` as in :func:`read_xyz` plus each named field, with the same rows kept.

    ``names=None`` returns every field other than x, y, z. Field values keep
    their type in native byte order, shape ``(N,)`` or ``(N, count)``; packed
    ``rgb``/``rgba`` come back raw (see :func:`unpack_rgb`).

    Raises:
        MalformedCloudError: ``msg`` is malformed.
        KeyError: a requested field is not in the cloud.
    """
    grid = _point_grid(msg)
    available = grid.dtype.names
    if names is None:
        names = [name for name in available if name not in _XYZ]
    for name in names:
        if name not in available:
            raise KeyError(f"field {name!r} not in cloud (fields: {', '.join(available)})")
    xyz, finite = _xyz_float32(grid)
    keep = None if finite or not drop_invalid else _finite_rows(xyz)
    result = {"xyz": xyz if keep is None else _select_rows(xyz, keep)}
    point_count = len(xyz)
    for name in names:
        column = grid[name]
        values = np.ascontiguousarray(column, dtype=column.dtype.newbyteorder("="))
        values = values.reshape((point_count,) + column.shape[2:])
        result[name] = values if keep is None else _select_rows(values, keep)
    return result


def unpack_rgb(values: np.ndarray) -> np.ndarray:
    """``(N, 3)`` uint8 r, g, b from packed ``0x00RRGGBB`` values (float32 bits or integers)."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        if values.dtype.itemsize != 4:
            raise TypeError(f"packed rgb floats must be float32, got {values.dtype}")
        # PCL stores the integer bit pattern in a float32: reinterpret, don't convert.
        packed = values.astype(np.float32).view(np.uint32)
    else:
        packed = values.astype(np.uint32)
    return np.stack(
        [(packed >> 16) & 0xFF, (packed >> 8) & 0xFF, packed & 0xFF], axis=-1
    ).astype(np.uint8)


def object_id_of(msg: PointCloud2Like) -> int | None:
    """The object a segmented cloud holds (its :data:`OBJECT_ID_FIELD`).

    None for a cloud without that field, or without points. Raises
    :class:`MalformedCloudError` for a malformed cloud, an id field of count other than 1, or
    a cloud that mixes objects.
    """
    field = next((f for f in msg.fields if f.name == OBJECT_ID_FIELD), None)
    if field is None:
        return None
    if field.count != 1:
        raise MalformedCloudError(f"{OBJECT_ID_FIELD} must have count 1, got {field.count}")
    ids = read_points(msg)[OBJECT_ID_FIELD]  # a view of the message: nothing is copied
    if ids.size == 0:
        return None
    if (ids != ids[0]).any():
        raise MalformedCloudError(f"cloud mixes objects {sorted(set(ids.tolist()))[:5]}")
    return int(ids[0])

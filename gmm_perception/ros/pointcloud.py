"""Vectorised conversion between ``sensor_msgs/PointCloud2`` and numpy arrays.

``sensor_msgs_py`` is not available in our environment, so this module is our
own implementation. Messages are validated before any numpy view touches their
buffer, so a malformed or truncated message raises :class:`MalformedCloudError`
instead of reading out of bounds.

Performance notes (measured, see ``bench/cloud_io.py``):

* Reading: ``np.frombuffer(msg.data)`` is zero-copy (``msg.data`` is an
  ``array.array('B')``). x, y and z are copied with one strided pass per
  column, which is ~3x faster than numpy's copy of an ``(N, 3)`` view whose
  rows are ``point_step`` apart.
* Writing: the generated ``data`` setter stores an ``array.array('B')``
  as-is (``ROS_PYTHON_CHECK_FIELDS=1``) or copies it (the default); it
  copies ``bytes`` too (so ``arr.tobytes()`` costs two copies) and converts a
  numpy array or ``memoryview`` element by element (~1 s per 16 MB). Passing
  ``data=`` to the constructor copies twice. We sidestep the setter:
  the message's own (empty) ``array.array`` is grown in place, either with
  ``frombytes`` of the float32 points (one memcpy) or sized with an in-place
  repeat and filled through a numpy view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

__all__ = [
    "MalformedCloudError",
    "cloud_dtype",
    "read_fields",
    "read_points",
    "read_xyz",
    "unpack_rgb",
    "validate_cloud",
    "xyz_to_cloud",
]

# PointField datatype code -> numpy type string without byte-order prefix.
_POINTFIELD_TO_NUMPY: dict[int, str] = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}
_NUMPY_TO_POINTFIELD: dict[str, int] = {
    type_str: code for code, type_str in _POINTFIELD_TO_NUMPY.items()
}
_FLOAT_DATATYPES = (PointField.FLOAT32, PointField.FLOAT64)
_XYZ = ("x", "y", "z")
# Points per block when copying x, y, z: 1 MB of 16-byte points stays in L2.
_BLOCK_POINTS = 1 << 16


class MalformedCloudError(ValueError):
    """A PointCloud2 whose header, fields and data are inconsistent."""


def _field_extent(field: PointField) -> int:
    return field.offset + np.dtype(_POINTFIELD_TO_NUMPY[field.datatype]).itemsize * field.count


def _validate_layout(msg: PointCloud2) -> None:
    """Check what building the structured dtype needs: known fields that fit in a point."""
    seen: set[str] = set()
    for field in msg.fields:
        if field.datatype not in _POINTFIELD_TO_NUMPY:
            raise MalformedCloudError(
                f"field {field.name!r} has unknown datatype {field.datatype}")
        if field.count < 1:
            raise MalformedCloudError(
                f"field {field.name!r} has count {field.count}; count must be >= 1")
        if field.name in seen:
            raise MalformedCloudError(f"duplicate field name {field.name!r}")
        seen.add(field.name)
    extent = max((_field_extent(field) for field in msg.fields), default=0)
    if msg.point_step < extent:
        raise MalformedCloudError(
            f"point_step {msg.point_step} is smaller than the field extent of {extent} bytes")


def validate_cloud(msg: PointCloud2) -> None:
    """Raise :class:`MalformedCloudError` naming the first defect of ``msg``."""
    _validate_layout(msg)
    fields_by_name = {field.name: field for field in msg.fields}
    missing = [axis for axis in _XYZ if axis not in fields_by_name]
    if missing:
        raise MalformedCloudError(f"missing required field(s) {', '.join(missing)}")
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
    expected = msg.row_step * msg.height
    if len(msg.data) != expected:
        raise MalformedCloudError(
            f"data length {len(msg.data)} != row_step*height = {expected} "
            "(truncated or oversized buffer)")


def cloud_dtype(msg: PointCloud2) -> np.dtype:
    """Structured dtype of one point: explicit offsets, ``itemsize=point_step``.

    Fields with ``count > 1`` become sub-array fields; byte order follows
    ``msg.is_bigendian``. Only the field layout is validated here.
    """
    _validate_layout(msg)
    byte_order = ">" if msg.is_bigendian else "<"
    formats = []
    for field in msg.fields:
        scalar = np.dtype(byte_order + _POINTFIELD_TO_NUMPY[field.datatype])
        formats.append(scalar if field.count == 1 else np.dtype((scalar, (field.count,))))
    return np.dtype({
        "names": [field.name for field in msg.fields],
        "formats": formats,
        "offsets": [field.offset for field in msg.fields],
        "itemsize": msg.point_step,
    })


def _point_grid(msg: PointCloud2) -> np.ndarray:
    """Validated, zero-copy, read-only ``(height, width)`` structured view of ``msg.data``."""
    validate_cloud(msg)
    dtype = cloud_dtype(msg)
    if msg.height * msg.width == 0:
        return np.empty((msg.height, msg.width), dtype)
    # Strides come from the validated header, so the view ends exactly at
    # height*row_step == len(data); numpy re-checks the bound as well.
    grid = np.ndarray(
        shape=(msg.height, msg.width),
        dtype=dtype,
        buffer=np.frombuffer(msg.data, dtype=np.uint8),
        strides=(msg.row_step, msg.point_step),
    )
    grid.flags.writeable = False  # never let callers scribble over the message
    return grid


def read_points(msg: PointCloud2) -> np.ndarray:
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
    all_finite = True
    for row in range(0, rows, rows_per_block):
        row_slice = slice(row, row + rows_per_block)
        for column in range(0, columns, columns_per_block):
            column_slice = slice(column, column + columns_per_block)
            block = xyz_grid[row_slice, column_slice]
            for axis_index, source in enumerate(sources):
                block[..., axis_index] = source[row_slice, column_slice]
            all_finite = all_finite and _all_finite(block)
    return xyz, all_finite


def _all_finite(values: np.ndarray) -> bool:
    """True iff every value of the C-contiguous array is finite (True when empty)."""
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


def read_xyz(msg: PointCloud2, drop_invalid: bool = True) -> np.ndarray:
    """Contiguous float32 ``(N, 3)`` array of x, y, z.

    With ``drop_invalid`` rows with a NaN or infinite coordinate are removed
    (``is_dense`` is not trusted: drivers often get it wrong).
    """
    xyz, all_finite = _xyz_float32(_point_grid(msg))
    if all_finite or not drop_invalid:
        return xyz
    return _select_rows(xyz, _finite_rows(xyz))


def read_fields(
    msg: PointCloud2,
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
    xyz, all_finite = _xyz_float32(grid)
    keep = None if all_finite or not drop_invalid else _finite_rows(xyz)
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
    if f"{kind}{size}" not in _NUMPY_TO_POINTFIELD:
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
        datatype = _NUMPY_TO_POINTFIELD[f"{values.dtype.kind}{values.dtype.itemsize}"]
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
        is_dense=_all_finite(xyz),
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

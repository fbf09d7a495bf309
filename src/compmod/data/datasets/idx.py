"""Reader for the IDX format of MNIST-style datasets (optionally gzip-compressed)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from compmod.errors import DataError

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (``.gz`` decompressed on the fly).

    The header is 2 zero bytes, a type byte, the number of dimensions, then one big-endian int32 per
    dimension; the data follows in row-major order.

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        An array of the header's shape, e.g. uint8 (60000, 28, 28) for images, (60000,) for labels.

    Raises:
        DataError: the file cannot be decompressed, or its header or length is not valid IDX.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(
            f"{path} is not an IDX file: bad magic number {raw[:4].hex() or '(empty file)'} "
            f"(expected 0000 + type byte + dimension count, e.g. 00000803 for uint8 images)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"IDX file {path} holds {len(raw) - header} data bytes but its header {shape} needs {expected}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=False)

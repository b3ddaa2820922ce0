"""Reading the project's ``.npz`` archives (chip images, host layers) without trusting them.

`numpy.load` lets a damaged archive escape as whatever its layers raise (``zlib.error: invalid distance too
far back``, ``BadZipFile``, ``EOFError``, ``NotImplementedError`` for a flipped compression method, a
``MemoryError`` for a flipped array shape ...). `read_npz` reads every member itself: the zip directory,
each member's ``.npy`` header, its size against what the header declares (before anything is allocated)
and the zip's CRC-32 at the end of each member, and turns any failure into one `EieError` line.
"""

import math
import zipfile
from pathlib import Path

import numpy as np

from eie.errors import EieError

__all__ = ["read_npz"]

# Deflate cannot expand data more than about 1032 times: a member claiming more is damaged (or a zip bomb).
_MAX_RATIO = 1100


def read_npz(path, what, fix):
    """{name: array} of every member of the ``.npz`` at `path` (written by `numpy.savez[_compressed]`).

    Any problem is an `EieError` "`path`: not a readable `what` (reason); `fix`". Object arrays are refused
    (nothing is unpickled); arrays come back writeable."""
    path = Path(path)

    def bad(reason):
        return EieError(f"{path}: not a readable {what} ({reason}); {fix}")

    if not path.exists():
        raise EieError(f"{path}: no such {what} file")
    if path.is_dir():
        raise EieError(f"{path} is a folder, not a {what} file")
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename
                if not name.endswith(".npy") or name[:-4] in out:
                    raise bad(f"unexpected member {name!r}")
                if info.file_size > _MAX_RATIO * info.compress_size + 4096:
                    raise bad(f"member {name!r} claims {info.file_size} bytes from {info.compress_size}")
                with zf.open(info) as f:
                    out[name[:-4]] = _read_member(f, info.file_size, name, bad)
    except EieError:
        raise
    except Exception as e:   # noqa: BLE001 -- a damaged archive can raise from any layer of zipfile/zlib/numpy
        kind = type(e).__name__ if type(e).__module__ == "builtins" else f"{type(e).__module__}.{type(e).__name__}"
        first = str(e).splitlines()[0] if str(e) else ""
        raise bad(f"{kind}{': ' + first if first else ''}") from None
    return out


def _read_member(f, size, name, bad):
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise bad(f"member {name!r} has .npy format version {version}")
    if dtype.hasobject:
        raise bad(f"member {name!r} holds Python objects")
    nbytes = math.prod(shape) * dtype.itemsize
    if f.tell() + nbytes != size:
        raise bad(f"member {name!r} is {size} bytes but its header declares {f.tell() + nbytes}")
    data = bytearray(f.read())      # to the member's end: zipfile checks the CRC-32 there
    if len(data) != nbytes:
        raise bad(f"member {name!r} ends after {len(data)} of {nbytes} bytes")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")

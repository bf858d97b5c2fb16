"""Memory-mapped ``.npz``: the arrays of an uncompressed ``np.savez`` file, read in place.

``np.savez`` stores each array as an uncompressed ``.npy`` member of a zip file, so every
array's bytes lie contiguous in the file at a fixed offset. :func:`load_npz` maps them
read-only (``np.memmap``) instead of reading them: the pages come from the page cache, and
every process that maps the same file shares them, so ``llarapp serve --workers N`` holds one
copy of a model's big arrays per machine instead of one per worker. Nothing about the file
changes: a folder written before still loads, and a compressed member (``np.savez_compressed``)
or an object array is read into memory as ``np.load`` would (``allow_pickle=False``).

A mapped file must never be rewritten in place (the maps would read a truncated file):
:func:`save_npz` and :func:`replace_file` write a new file beside it and rename it over the old
one, whose pages live on for whoever still maps them.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # a zip member's local file header (30 bytes)
_SMALL = 1 << 16  # bytes: smaller arrays are read (a page each would not be worth mapping)


def load_npz(path: Path | str, mmap: bool = True) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` file ``path`` by name; with ``mmap``, every uncompressed
    array of 64 KiB or more is a read-only ``np.memmap`` of the file (``np.load``'s result
    otherwise).

    Raises:
        ValueError: ``path`` is not a zip of ``.npy`` members, or a member holds objects.
    """
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path}: not an .npz file ({exc})") from exc
    with zf, open(path, "rb") as raw:
        for info in zf.infolist():
            name = info.filename.removesuffix(".npy")
            if not mmap or info.compress_type != zipfile.ZIP_STORED or info.file_size < _SMALL:
                with zf.open(info) as member:
                    out[name] = np.lib.format.read_array(member, allow_pickle=False)
                continue
            raw.seek(info.header_offset)
            fields = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
            if fields[0] != b"PK\x03\x04":
                raise ValueError(f"{path}: member {info.filename}: bad zip local header")
            raw.seek(fields[-2] + fields[-1], 1)  # file name and extra field
            fmt = np.lib.format
            read_header = (
                fmt.read_array_header_1_0
                if fmt.read_magic(raw) == (1, 0)
                else fmt.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(raw)
            if dtype.hasobject:
                raise ValueError(f"{path}: member {info.filename} holds Python objects")
            order = "F" if fortran else "C"
            mapped = np.memmap(path, dtype, "r", raw.tell(), shape, order)
            out[name] = np.asarray(mapped)  # a plain ndarray view; it keeps the map open
    return out


def replace_file(path: Path | str, write) -> None:
    """``write(f)`` into a temporary file in ``path``'s folder (``f`` open for writing bytes),
    then rename it into place: processes that map the old file keep reading it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # as open() makes files (mkstemp's are private to the owner)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_npz(path: Path | str, **arrays: np.ndarray) -> None:
    """``np.savez(path, **arrays)`` by :func:`replace_file`."""
    replace_file(path, lambda f: np.savez(f, **arrays))

"""Files that are either whole or absent: written under a temporary name, then renamed.

A stage killed mid-write (SIGKILL, a node lost) leaves a ``NAME.tmp-PID`` beside its outputs,
never a half-written ``NAME``; ``os.replace`` is atomic on one file system.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically, on an
    exception it is removed and ``path`` keeps what it had."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

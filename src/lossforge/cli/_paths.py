"""Output folders of the commands: created and proven writable before any work, so that a run
never trains or times for minutes and then fails to save (a read-only or full folder)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["writable_dir"]


def writable_dir(path: str | Path) -> Path:
    """Create the folder ``path`` (and its parents) and write and remove a probe file in it; an
    ``OSError`` naming the folder and the reason when either fails."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create output folder {str(out)!r}: {err.strerror or err}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".lossforge-probe-", dir=out)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise OSError(
            f"cannot write to output folder {str(out)!r}: {err.strerror or err}"
        ) from None
    return out

"""Writing a model folder all at once. No Django here."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def folder_staged(destination: Path) -> Iterator[Path]:
    """Yield a temporary folder beside destination. When the block ends
    well it is renamed to destination (an empty folder there is replaced);
    when it fails it is removed. destination is complete or absent."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        yield staging
        staging.chmod(0o755)
        if destination.is_dir() and not any(destination.iterdir()):
            destination.rmdir()
        os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

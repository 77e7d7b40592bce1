"""What a model version folder holds, and so which runtime serves it.
No torch and no Django here: the web app asks this too."""

from __future__ import annotations

from pathlib import Path


def gguf_file_of(path: Path) -> Path | None:
    """The GGUF weights of a version folder, None for other folders."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return path
    if not path.is_dir():
        return None
    files = sorted(path.glob("*.gguf"))
    return files[0] if len(files) == 1 else None


def is_gguf_folder(path: Path) -> bool:
    return gguf_file_of(path) is not None


def folder_backend(path: Path) -> str:
    """Which runtime serves the folder: "llama.cpp" or "transformers"."""
    return "llama.cpp" if is_gguf_folder(Path(path)) else "transformers"

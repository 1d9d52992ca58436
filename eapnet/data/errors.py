"""Exception types shared by the dataset readers and writers.

Every message names the offending file (or scene) and says what is wrong with it, so a
broken sample in a folder of thousands can be found without a debugger.
"""

from __future__ import annotations

import os

__all__ = ["DataError", "MissingFileError"]


class DataError(ValueError):
    """A dataset file (or in-memory array about to be written) is malformed.

    ``path`` is the offending file when there is one (else ``None``).
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.path = None if path is None else os.fspath(path)


class MissingFileError(DataError, FileNotFoundError):
    """A file that the layout requires does not exist.

    Also a ``FileNotFoundError`` so ``except FileNotFoundError`` callers keep working.
    """

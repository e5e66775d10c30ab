"""Errors for bad input data: always name the file (and key) and what is wrong."""
from __future__ import annotations

import os


class DataError(ValueError):
    """Raised for unreadable, malformed or inconsistent data files and folders."""

    def __init__(self, path: str | os.PathLike | None, message: str, key: str | None = None):
        self.path = None if path is None else os.fspath(path)
        self.key = key
        self.message = message
        where = "" if path is None else f"{self.path}"
        if key is not None:
            where += f" [{key}]"
        super().__init__(f"{where}: {message}" if where else message)

    def __reduce__(self):
        # Rebuilt from its own arguments when it crosses processes (DataLoader or maps-cache workers).
        return type(self), (self.path, self.message, self.key)

"""Atomic file writes and output-folder locks: readers never see a half-written file, a failed write
loses nothing, and two processes never write one output folder at once.

A file is written to a temporary file in its own folder (never in TMPDIR: a rename across filesystems
is a copy, and a kill during a copy leaves half a file), flushed to disk, renamed over the target
(os.replace, atomic within a filesystem) and the folder entry is flushed too. The new file gets the
permissions the user's umask gives any new file (mkstemp alone would make it 0600).
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".mrirecon.lock"


class FolderBusyError(RuntimeError):
    """Another process holds the lock of an output folder."""


def _umask() -> int:
    # /proc avoids os.umask's set-and-restore, which is not thread safe; fall back to it elsewhere.
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_path(path: str | os.PathLike, directory: bool = False) -> None:
    # Flush a file's data (or a folder's entries, making a rename durable); some systems cannot
    # open folders, and a failed flush there is no reason to fail the write.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, copy_from: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield a temporary path in the destination's folder; on success it replaces `path` (os.replace).

    `copy_from` first copies that file to the temporary path (to modify an existing file safely).
    On error (KeyboardInterrupt included) the temporary file is removed and `path` is left as it was.
    The temporary file is fsynced before the rename and the folder after it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        if copy_from is not None:
            shutil.copy2(copy_from, tmp)  # an edited file keeps its mode
        yield Path(tmp)
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) and str(path) not in str(e):
            # A write() error carries no file name: "[Errno 28] No space left on device" says nothing of where.
            raise OSError(e.errno, f"{os.strerror(e.errno)} while writing {path}", str(path)) from None
        raise
    _fsync_path(path.parent, directory=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _holder() -> str:
    """Who holds a lock, as written into the lock file: pid, host and command line."""
    command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))[:200]
    return f"pid {os.getpid()} on {socket.gethostname()}: {command}"


def _take_lock(lock: Path, what: Path) -> int:
    """flock `lock` (created if missing) without waiting; FolderBusyError names `what` and the holder."""
    import fcntl

    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        if holder.isdigit():  # written by an older version: the pid alone
            holder = f"pid {holder}"
        raise FolderBusyError(f"{what}: another process ({holder}) is writing into this folder; "
                              "wait for it or choose another output folder") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{_holder()}\n".encode(), 0)
    return fd


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (flock on FOLDER/.mrirecon.lock) while writing into it.

    A second process asking for the same folder gets FolderBusyError at once, naming the holder (pid, host,
    command), instead of interleaving its files with ours. The lock is released when the block ends or the
    process dies.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = _take_lock(folder / LOCK_NAME, folder)
    try:
        yield folder
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def path_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on `path`, which need not exist: flock on a hidden file beside it
    (PARENT/.NAME.lock), removed when the block ends, so nothing is left behind.

    A lock file removed by its holder may have been opened by a waiting process meanwhile; the lock counts
    only if the file at the lock's path is still the one locked (else it is taken again).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    while True:
        fd = _take_lock(lock, path)
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)

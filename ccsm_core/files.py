"""Writing files atomically: readers see the old file or the whole new one, never a part.

Everything goes to a hidden temporary file beside the target (``.NAME.XXXXXXXX.tmp``, made with
the usual permissions), which is renamed over the target when complete; a replaced file keeps
its permissions; a failure (Ctrl-C included) removes the temporary file and is a `UsageError`
naming the target. A target that is a symlink is written through: the file it points to is
replaced and the link stays. A folder, FIFO or device as the target is refused before anything
is written (`check_output`, which commands also call before their work starts).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import UsageError


def check_output(path: str | os.PathLike[str], what: str = "output") -> Path:
    """The file that writing ``path`` replaces: ``path``, or the file its symlink points to.
    `UsageError` when that is a folder, FIFO, device or socket, or its folder does not exist:
    call it before the work whose result is written, so that nothing is computed in vain."""
    given = Path(path)
    target = Path(os.path.realpath(given)) if given.is_symlink() else given
    _check_folder(target)
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise _cannot(given, e) from None
    if mode is not None and not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise UsageError(f"cannot write {what} {given}: it is {kind}", "write to a regular file: give a file name")
    return target


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, keep_suffix: bool = False, partial: str | os.PathLike[str] | None = None
) -> Iterator[Path]:
    """A temporary path to write ``path``'s new contents to; renamed to ``path`` when the block
    ends without an error. ``keep_suffix`` ends the temporary name with ``path``'s suffix (for
    writers that pick a format by it). ``partial``: when the block fails (or is interrupted),
    what was written is kept under this name instead of removed (``path`` is left as it was)."""
    target = check_output(path)
    try:
        fd, tmp = _create_temp(target, target.suffix if keep_suffix else "")
        os.close(fd)
    except OSError as e:
        raise _cannot(target, e) from None
    try:
        yield Path(tmp)
        _keep_mode(tmp, target)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as e:
        _keep_partial(tmp, partial)
        raise _cannot(target, e) from None
    except BaseException:
        _keep_partial(tmp, partial)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _keep_partial(tmp: str, partial: str | os.PathLike[str] | None) -> None:
    """Move a non-empty ``tmp`` to ``partial`` (if given)."""
    if partial is None:
        return
    with contextlib.suppress(OSError):
        if os.path.getsize(tmp) > 0:
            os.replace(tmp, partial)


def write_atomic(path: str | os.PathLike[str], data: bytes, *, replace: bool = True) -> None:
    """Put ``data`` at ``path`` at once, flushed to disk. Unless ``replace``, an existing ``path``
    is kept and `FileExistsError` raised, with no window between check and creation (the file is
    hard-linked into place)."""
    if not replace and os.path.lexists(path):
        raise FileExistsError(path)
    target = check_output(path) if replace else Path(path)
    _check_folder(target)
    try:
        fd, tmp = _create_temp(target)
    except OSError as e:
        raise _cannot(target, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            _keep_mode(tmp, target)
            os.replace(tmp, target)
        else:
            _link_new(tmp, target)
        _fsync_dir(target.parent)
    except FileExistsError:
        raise
    except OSError as e:
        raise _cannot(target, e) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _check_folder(target: Path) -> None:
    if not target.name or target.name in (".", ".."):
        raise UsageError(f"cannot write {target}: it names a folder", "give a file name")
    if not target.parent.is_dir():
        raise UsageError(
            f"cannot write {target}: the folder {target.parent} does not exist", "create it or choose another path"
        )


def _cannot(target: Path, e: OSError) -> UsageError:
    reason = e.strerror or type(e).__name__
    return UsageError(f"cannot write {target}: {reason}", "choose a path in a folder you can write to")


def _create_temp(target: Path, suffix: str = "") -> tuple[int, str]:
    """A new file ``.NAME.XXXXXXXX.tmp[suffix]`` beside ``target`` (0666 less the umask)."""
    for _ in range(100):
        tmp = os.path.join(target.parent, f".{target.name}.{secrets.token_hex(4)}.tmp{suffix}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {target.parent}")


def _keep_mode(tmp: str, target: Path) -> None:
    """A replaced file keeps its permissions."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(tmp, target.stat().st_mode & 0o7777)


def _link_new(tmp: str, target: Path) -> None:
    """``tmp`` at ``target`` unless ``target`` exists (`FileExistsError`)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links
        if os.name == "nt":
            os.rename(tmp, target)  # fails if target exists
        else:
            if target.exists():
                raise FileExistsError(target) from None
            os.replace(tmp, target)


def _fsync_dir(folder: Path) -> None:
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

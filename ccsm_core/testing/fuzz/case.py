"""One fuzz case: the files it consists of and the arguments it is run with, and its outcome."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

ARGS_FILE = "args.json"


@dataclass(frozen=True)
class Case:
    """Files (name -> bytes), symbolic links (name -> target: an absolute path to an unchanged
    seed file, or a path relative to the link within the case), FIFOs and arguments."""

    files: dict[str, bytes] = field(default_factory=dict)
    links: dict[str, Path] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    fifos: tuple[str, ...] = ()  # names made as FIFOs (nothing ever writes to them)

    @property
    def size(self) -> int:
        """Bytes of input the case gives the code under test (linked seeds included)."""
        linked = sum(p.stat().st_size for p in self.links.values() if p.is_absolute() and p.is_file())
        return sum(len(b) for b in self.files.values()) + linked + sum(len(a) for a in self.args)

    def write(self, folder: Path) -> Path:
        """Materialize the case in ``folder`` (emptied first); returns ``folder``."""
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for name, data in self.files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        for name, target in self.links.items():
            os.symlink(target, folder / name)
        for name in self.fifos:
            os.mkfifo(folder / name)
        (folder / ARGS_FILE).write_text(json.dumps(list(self.args), ensure_ascii=True))
        return folder


def case_args(folder: Path) -> list[str]:
    """The arguments a materialized case was written with."""
    p = folder / ARGS_FILE
    return list(json.loads(p.read_text())) if p.is_file() else []

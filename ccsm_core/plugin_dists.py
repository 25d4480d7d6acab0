"""Plugin distributions' metadata, read defensively: the entry points of the group ``ccsm``, each
one's distribution name and version, and its ``Requires-Dist: ccsm ...``. Malformed metadata
(a broken ``entry_points.txt``, a missing ``Version``, an unparsable requirement) gives a
one-line reason for that plugin, never an exception."""

from __future__ import annotations

import functools
import importlib.metadata as md
import re
from dataclasses import dataclass
from typing import Any

from .plugin_code import reason
from .version import __version__

GROUP = "ccsm"
_SECTION = re.compile(rb"^\s*\[\s*ccsm\s*\]\s*$", re.MULTILINE)
_LEADING_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class BrokenDist:
    """A distribution with a ``[ccsm]`` section whose entry points cannot be read."""

    dist: str
    version: str
    problem: str


def normalize(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def entry_points() -> tuple[list[Any], list[BrokenDist]]:
    """The entry points of the group ``ccsm``, and the distributions whose entry points cannot
    be read (only when one breaks the standard listing: each is then read on its own)."""
    try:
        return list(md.entry_points(group=GROUP)), []
    except Exception:
        pass
    eps: list[Any] = []
    broken: list[BrokenDist] = []
    seen: set[str] = set()
    for dist in md.distributions():
        name = _name(dist)
        if name is not None:
            if normalize(name) in seen:
                continue  # the same distribution further down sys.path
            seen.add(normalize(name))
        try:
            eps.extend(ep for ep in dist.entry_points if ep.group == GROUP)
        except Exception as e:
            if _has_ccsm_section(dist):
                broken.append(
                    BrokenDist(name or "?", _version(dist), f"its entry_points.txt is malformed ({reason(e)})")
                )
    return eps, broken


def _has_ccsm_section(dist: Any) -> bool:
    try:
        text = dist.read_text("entry_points.txt")
    except UnicodeDecodeError as e:
        return bool(_SECTION.search(e.object if isinstance(e.object, bytes) else b""))
    except Exception:
        return False
    return bool(text and _SECTION.search(text.encode("utf-8", "replace")))


def _name(dist: Any) -> str | None:
    try:
        name = dist.metadata.get("Name")
    except Exception:
        return None
    return name if isinstance(name, str) and name.strip() else None


def _version(dist: Any) -> str:
    try:
        version = dist.version
    except Exception:
        return ""
    return version.strip() if isinstance(version, str) else ""


def dist_name(ep: Any) -> str:
    """The name of the distribution that provides ``ep`` (else its top-level package)."""
    dist = getattr(ep, "dist", None)
    name = _name(dist) if dist is not None else None
    return name or str(getattr(ep, "value", "")).split(".")[0].split(":")[0] or "?"


def dist_version(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return _version(dist) if dist is not None else ""


def metadata_problem(ep: Any) -> str | None:
    """Why ``ep``'s metadata is unusable (then the plugin is ``failed`` without importing it)."""
    if not isinstance(ep.name, str) or not ep.name.strip():
        return f"an entry point of group {GROUP!r} has no name"
    if not isinstance(ep.value, str) or not md.EntryPoint.pattern.fullmatch(ep.value.strip()):
        return f"entry point value {ep.value!r} is not 'module' or 'module:attribute'"
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None
    if _name(dist) is None:
        return "its distribution metadata has no Name"
    if not _version(dist):
        return "its distribution metadata has no Version"
    return _ccsm_requirement(dist)[1]


def incompatible(ep: Any) -> str | None:
    """A reason if the plugin's ``Requires-Dist: ccsm ...`` excludes this ccsm version."""
    dist = getattr(ep, "dist", None)
    req = _ccsm_requirement(dist)[0] if dist is not None else None
    if req is None:
        return None
    from packaging.version import Version

    if req.specifier and not req.specifier.contains(Version(__version__), prereleases=True):
        return f"needs ccsm{req.specifier}, this is ccsm {__version__}"
    return None


@functools.cache
def _ccsm_requirement(dist: Any) -> tuple[Any, str | None]:
    """The distribution's requirement on ccsm that applies here (or None), and a problem if
    its requirements cannot be read or the one naming ccsm is malformed (read once per
    distribution: both `metadata_problem` and `incompatible` ask)."""
    try:
        lines = list(dist.requires or [])
    except Exception as e:
        return None, f"its Requires-Dist cannot be read ({reason(e)})"
    for line in lines:
        m = _LEADING_NAME.match(line) if isinstance(line, str) else None
        if m is None or normalize(m.group(1)) != "ccsm":
            continue
        from packaging.requirements import InvalidRequirement, Requirement

        try:
            req = Requirement(line)
            applies = req.marker is None or req.marker.evaluate({"extra": ""})
        except (InvalidRequirement, ValueError) as e:
            return None, f"its Requires-Dist {line.strip()!r} is malformed ({reason(e)})"
        except Exception as e:  # a marker naming something unknown
            return None, f"its Requires-Dist {line.strip()!r} cannot be evaluated ({reason(e)})"
        if applies:
            return req, None
    return None, None

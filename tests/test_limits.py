"""Bounds on files: memory budget, bounded JSON, regular files only, typed schema checks."""

from __future__ import annotations

import math
import os

import pytest

from ccsm_core import limits, schema
from ccsm_core.errors import FormatError, UsageError


@pytest.mark.parametrize("text,expected", [("512M", 512 << 20), ("8G", 8 << 30), ("1.5GiB", 3 << 29), ("4096", 4096)])
def test_parse_size(text: str, expected: int) -> None:
    assert limits.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "-1G", "nanG", "lots", "1e99T"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        limits.parse_size(text)


def test_allocation_over_the_budget_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "_budget", 1 << 20)
    limits.check_allocation(1 << 19, "a cache")
    for size in (1 << 21, math.nan, -1, math.inf):
        with pytest.raises(FormatError, match="a cache would need"):
            limits.check_allocation(size, "a cache")


def test_budget_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "_budget", None)
    monkeypatch.setenv("CCSM_MAX_MEMORY", "3M")
    assert limits.max_memory() == 3 << 20


@pytest.mark.parametrize(
    "text", ["[" * 100_000, "[" * 70 + "]" * 70, "1" * 100, '{"a": NaN}', b'{"a": "\xff"}', "{", '{"a": Infinity}']
)
def test_bounded_json_refuses(text: str | bytes) -> None:
    with pytest.raises(FormatError, match="cfg.json"):
        limits.loads_json(text, "cfg.json")


def test_bounded_json_reads_ordinary_json() -> None:
    assert limits.loads_json('{"a": [1, 2.5, {"b": null}]}', "x") == {"a": [1, 2.5, {"b": None}]}


def test_only_regular_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "FIFO"), (tmp_path, "folder"), ("/dev/null", "device")):
        with pytest.raises(UsageError, match=kind):
            limits.regular_file(path)
    (tmp_path / "f").write_bytes(b"x")
    assert limits.regular_file(tmp_path / "f") == tmp_path / "f"


@pytest.mark.parametrize("value", [0, -3, 2.0, True, "4", None, pytest.param(10**5000, id="huge"), [1]])
def test_count_refuses(value: object) -> None:
    with pytest.raises(FormatError, match="heads"):
        schema.count(value, "heads", "m.gguf")


@pytest.mark.parametrize("value", [0.0, -1e-5, math.nan, math.inf, "1e-5", False, pytest.param(10**400, id="huge")])
def test_positive_refuses(value: object) -> None:
    with pytest.raises(FormatError, match="eps"):
        schema.positive(value, "eps", "m.gguf")


def test_schema_accepts_good_values() -> None:
    assert schema.count(8, "heads", "m") == 8
    assert schema.positive(1e-5, "eps", "m") == 1e-5
    assert schema.text("x", "t", "m") == "x"
    assert schema.mapping({"a": 1}, "c", "m") == {"a": 1}
    schema.divides(4, 64, "heads into dim", "m")
    with pytest.raises(FormatError):
        schema.divides(3, 64, "heads into dim", "m")

"""A model's chat template (Jinja, from the file) rendered in a bounded sandbox.

The template comes from the model file, so it is treated as hostile: it runs in Jinja's
immutable sandbox (no attribute tricks, no mutation of the messages) with bounds on

- output: the prompt, and every string or list built on the way, at most `MAX_OUTPUT`
  characters; repetition (``'x' * n``), padding widths and ``%``-format widths are checked
  before the value is built;
- steps: at most `MAX_STEPS` template lines run (loops over ``range`` nest cheaply);
- time: at most `MAX_SECONDS` of wall time.

A template that exceeds a bound, fails to parse or raises while rendering is one `GenerationError`.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from .errors import FormatError, GenerationError

MAX_TEMPLATE = 1 << 20  # characters of the template itself
MAX_OUTPUT = 1 << 20  # characters of the prompt and of any value built while rendering
MAX_STEPS = 1_000_000  # template lines run
MAX_SECONDS = 5.0
MAX_ARG = 1 << 16  # an integer argument of a filter or method (a width, a count)
_RANGES = ("range", "safe_range")  # bounded by the sandbox itself (100000 items)
_TEMPLATE_FILE = "<template>"  # the file name Jinja gives compiled templates
_WIDTH = re.compile(r"\d{7,}")  # a format width of a million or more
_HINT = "the model's chat template is broken or hostile; use `ccsm generate` with your own prompt"


class TemplateBound(Exception):
    """A bound of the sandbox was exceeded (raised inside the template, reported by `render_chat`)."""


def _size(value: Any, depth: int = 0) -> int:
    """Characters a value stands for: a string's length, a container's items summed (bounded)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)) and depth < 4:
        return len(value) + sum(_size(v, depth + 1) for v in value)
    if isinstance(value, dict) and depth < 4:
        return len(value) + sum(_size(k, depth + 1) + _size(v, depth + 1) for k, v in value.items())
    return 0


def _bounded(value: Any, what: str) -> Any:
    if _size(value) > MAX_OUTPUT:
        raise TemplateBound(f"{what} builds a value of more than {MAX_OUTPUT} characters")
    return value


def _check_args(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Refuse arguments that would build a huge value before it is built."""
    values = [*args, *kwargs.values()]
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_ARG and name not in _RANGES:
            raise TemplateBound(f"{name}() with the argument {v} (at most {MAX_ARG})")
    text = args[0] if args and isinstance(args[0], str) else ""
    if name in ("format", "format_map") and _WIDTH.search(text):
        raise TemplateBound(f"{name}() with a width of a million or more")
    if name == "join" and args:
        method = isinstance(args[0], str) and len(args) > 1  # sep.join(items); the filter: items|join(sep)
        items, sep = (args[1], args[0]) if method else (args[0], args[1] if len(args) > 1 else "")
        if isinstance(items, (list, tuple)) and _size(items) + len(items) * _size(sep) > MAX_OUTPUT:
            raise TemplateBound(f"join() of more than {MAX_OUTPUT} characters")
    if name == "replace" and len(args) >= 3 and all(isinstance(a, str) for a in args[:3]):
        s, old, new = args[:3]
        if len(new) > len(old) and len(s) + (s.count(old) if old else len(s) + 1) * (len(new) - len(old)) > MAX_OUTPUT:
            raise TemplateBound(f"replace() building more than {MAX_OUTPUT} characters")
    if name == "indent" and text:
        width = args[1] if len(args) > 1 else kwargs.get("width", 4)
        pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        if len(text) + (text.count("\n") + 1) * pad > MAX_OUTPUT:
            raise TemplateBound(f"indent() building more than {MAX_OUTPUT} characters")
    if name == "expandtabs" and text:
        raise TemplateBound("expandtabs() is not allowed in a chat template")


def _guard_filter(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(f)  # keeps Jinja's pass_context / pass_environment marks
    def guarded(*args: Any, **kwargs: Any) -> Any:
        plain = [a for a in args if not _is_jinja_state(a)]
        _check_args(name, tuple(plain), kwargs)
        return _bounded(f(*args, **kwargs), f"the filter {name}")

    return guarded


def _is_jinja_state(value: Any) -> bool:
    from jinja2 import Environment
    from jinja2.nodes import EvalContext
    from jinja2.runtime import Context

    return isinstance(value, (Environment, EvalContext, Context))


def _environment() -> Any:
    from jinja2.compiler import CodeGenerator
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedCodeGenerator(CodeGenerator):
        def visit_Concat(self, node: Any, frame: Any) -> None:  # noqa: N802 (Jinja's visitor name)
            self.write("environment.bounded_concat(")
            super().visit_Concat(node, frame)
            self.write(")")

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        code_generator_class = BoundedCodeGenerator
        intercepted_binops = frozenset({"*", "**", "%", "+", "//"})

        def bounded_concat(self, value: Any) -> Any:
            return _bounded(value, "'~'")

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and n > 0:
                        if n > MAX_OUTPUT or max(_size(seq), len(seq), 1) * n > MAX_OUTPUT:
                            raise TemplateBound(f"'*' repeating {len(seq)} items {n} times")
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
                raise TemplateBound(f"'**' with the exponent {right}")
            if operator == "%" and isinstance(left, str) and _WIDTH.search(left):
                raise TemplateBound("'%' formatting with a width of a million or more")
            return _bounded(super().call_binop(context, operator, left, right), f"'{operator}'")

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            name = getattr(__obj, "__name__", "")
            bound_to = getattr(__obj, "__self__", getattr(getattr(__obj, "__wrapped__", None), "__self__", None))
            call_args = (bound_to, *args) if isinstance(bound_to, str) else args
            _check_args(name, call_args, kwargs)
            return _bounded(super().call(__context, __obj, *args, **kwargs), f"{name or 'a call'}()")

    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True)
    env.filters = {name: _guard_filter(name, f) for name, f in env.filters.items()}
    env.globals["raise_exception"] = _raise_exception
    env.globals.pop("lipsum", None)  # text generation no chat template needs (lipsum(65536) is 30 MB)
    return env


def _raise_exception(message: Any) -> None:
    """What Hugging Face chat templates call to refuse a conversation."""
    from jinja2 import TemplateError

    raise TemplateError(str(message))


class _Steps:
    """A trace function counting the template's lines against `MAX_STEPS` and `MAX_SECONDS`."""

    def __init__(self) -> None:
        self.steps = 0
        self.deadline = time.monotonic() + MAX_SECONDS

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code.co_filename == _TEMPLATE_FILE:
            return self.line
        return None

    def line(self, frame: FrameType, event: str, arg: Any) -> Any:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateBound(f"rendering took more than {MAX_STEPS} steps")
        if not self.steps & 1023 and time.monotonic() > self.deadline:
            raise TemplateBound(f"rendering took more than {MAX_SECONDS:g} s")
        return self.line


def template_text(metadata: Mapping[str, Any]) -> str | None:
    """``tokenizer.chat_template`` of the metadata: a text of at most `MAX_TEMPLATE` characters, or None."""
    template = metadata.get("tokenizer.chat_template")
    if template is None or template == "":
        return None
    if not isinstance(template, str) or len(template) > MAX_TEMPLATE:
        kind = type(template).__name__ if not isinstance(template, str) else f"a text of {len(template)} characters"
        raise FormatError(
            f"the model's chat template (tokenizer.chat_template) is {kind}, not a text of at most {MAX_TEMPLATE}",
            _HINT,
        )
    return template


def render_template(template: str, **values: Any) -> str:
    """``template`` rendered with ``values`` in the bounded sandbox (`GenerationError` on failure)."""
    import jinja2

    env = _environment()
    steps, previous = _Steps(), sys.gettrace()
    out: list[str] = []
    total = 0
    sys.settrace(steps)
    try:
        for piece in env.from_string(template).generate(**values):
            total += len(piece)
            if total > MAX_OUTPUT:
                raise TemplateBound(f"the prompt is longer than {MAX_OUTPUT} characters")
            out.append(piece)
    except TemplateBound as e:
        raise GenerationError(f"the model's chat template exceeds a bound: {e}", _HINT) from None
    except jinja2.TemplateError as e:
        raise GenerationError(f"the model's chat template failed: {_line(e)}", _HINT) from None
    except (RecursionError, MemoryError):
        raise GenerationError("the model's chat template recursed too deeply or ran out of memory", _HINT) from None
    except Exception as e:  # the template is data: whatever it raises is its failure
        raise GenerationError(f"the model's chat template failed: {type(e).__name__}: {_line(e)}", _HINT) from None
    finally:
        sys.settrace(previous)
    return "".join(out)


def _line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 200 else text[:197] + "..."


def render_chat(metadata: Mapping[str, Any], tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt for ``messages`` from the model's ``tokenizer.chat_template`` (plain
    ``role: content`` lines when it has none)."""
    template = template_text(metadata)
    if template is None:
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"

    def piece(i: Any) -> str:
        return tokenizer.token_to_piece(i) if i is not None else ""

    return render_template(
        template,
        messages=messages,
        add_generation_prompt=True,
        bos_token=piece(tokenizer.bos_id),
        eos_token=piece(tokenizer.eos_id),
    )

"""``check``: the one assertion that assignment test cells use.

A test cell computes the student's result and the library's expected result
and calls::

    check("adam/step-3", student_value, lambda: expected_value, rtol=1e-6, atol=1e-8)

What ``check`` does depends on where the cell runs (``GD_GRADER_MODE``, read once,
when this module is first imported: the grader's zygotes import it with the mode
set, so code in a run cannot change it):

- unset (a student working in JupyterLab): compares the two right away and
  raises ``AssertionError`` with a message that says what differs.
- ``"student"`` (inside the grading sandbox): records the student's value
  only. Nothing is decided in the student's process, so monkeypatching
  ``torch.allclose``, ``builtins``, ``gd_lib`` or ``__eq__`` there changes nothing.
  The test cells a student run executes carry no expected values at all: the
  grader removes the third argument of every ``check`` call, every ``with
  reference():`` block and every ``@reference`` function from them
  (:mod:`autograder.transform`), so nothing in the student's process can compute,
  read or record an expected value.
- ``"reference"`` (the trusted run of the instructor's source notebook):
  records the expected value and the tolerances, and checks that the
  instructor's own solution passes.

Instructors write expected values only where the grader can remove them: as
``check``'s third argument (a value or a zero-argument callable), in a ``with
reference():`` block, or in a function decorated with ``@reference``.

The grader (:mod:`autograder.grading`) then compares, in its own process,
the recorded student values with the recorded expected values: exact type
(a ``torch.Tensor`` of the same dtype, shape and device type; Python numbers,
strings, lists, tuples and dicts recursively), then values within
``rtol``/``atol`` (``|s - e| <= atol + rtol * |e|``, NaN equal to NaN).

Values travel as JSON with arrays in ``.npy`` form (``allow_pickle=False``):
nothing the student's process writes is ever unpickled or executed.
"""

from __future__ import annotations

import base64
import io
import math
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

MODE_ENV = "GD_GRADER_MODE"
MAX_ARRAY_BYTES = 64 * 2**20  # a recorded value larger than this is refused, not transported
MAX_DEPTH = 20  # lists, tuples and dicts nested deeper are not recorded
_MODE = os.environ.get(MODE_ENV, "interactive")  # fixed at import (see the module docstring)

# Captures recorded in this process, drained by the cell runner after each cell.
_captured: list[dict] = []


class CheckFailure(AssertionError):
    """A check failed: the message says what differs."""


def mode() -> str:
    return _MODE


class _Reference:
    """``@reference`` on a function, or ``with reference():`` around statements: code that computes
    expected values. It runs in the reference run (and for a student working interactively); the
    grader removes it from the test cells a submission runs."""

    def __call__(self, func=None):
        return self if func is None else func  # reference() as a context manager, @reference as a decorator

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


reference = _Reference()


def check(
    name: str,
    value: Any,
    expected: Any | Callable[[], Any] = None,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    about: str | None = None,
) -> None:
    """Check ``value`` against ``expected`` (see the module docstring). ``expected`` may be a
    zero-argument callable, which is only called where the expected value is needed. ``about``
    says in words what the check's case is ("lr=0.1, weight_decay=0.01 after 3 steps"): the
    feedback opens its message with it."""
    if not isinstance(name, str) or not name:
        raise ValueError("check() needs a non-empty name")
    if rtol < 0 or atol < 0:
        raise ValueError(f"Invalid tolerances rtol={rtol}, atol={atol}; expected numbers >= 0")
    current = mode()
    if current == "student":
        try:
            encoded = encode(value)
        except Exception as err:  # e.g. a value too large to record: it cannot match
            encoded = {"kind": "unsupported", "type": f"unrecordable value ({err})"}
        _captured.append({"name": name, "value": encoded})
        return
    exp = expected() if callable(expected) else expected
    encoded_expected = encode(exp)
    problem = compare(encode(value), encoded_expected, rtol, atol)
    if current == "reference":
        if problem is not None:
            raise CheckFailure(f"the reference solution fails its own check {name!r}: {problem}")
        _captured.append(
            {
                "name": name,
                "value": encoded_expected,
                "rtol": rtol,
                "atol": atol,
                **({"about": str(about)} if about else {}),
            }
        )
        return
    if problem is not None:
        raise CheckFailure(f"{name}: {'for ' + about + ': ' if about else ''}{problem}")


def drain() -> list[dict]:
    """The captures recorded since the last call (used by the cell runner)."""
    out = list(_captured)
    _captured.clear()
    return out


# --- encoding -----------------------------------------------------------------------------


def _array_payload(arr: np.ndarray) -> str:
    if arr.nbytes > MAX_ARRAY_BYTES:
        raise ValueError(f"value too large to record ({arr.nbytes} bytes)")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _float_json(x: float):
    return x if math.isfinite(x) else repr(x)  # JSON has no NaN/inf: "nan", "inf", "-inf"


def encode(value: Any, depth: int = 0) -> dict:
    """A JSON-able description of ``value``; types are matched exactly, never by isinstance."""
    if depth > MAX_DEPTH:
        return {"kind": "unsupported", "type": f"nesting deeper than {MAX_DEPTH}"}
    t = type(value)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the course
        torch = None
    if torch is not None and t in (torch.Tensor, torch.nn.Parameter):
        tensor = value.detach()
        dtype = str(tensor.dtype)
        data = tensor.cpu()
        if data.dtype == torch.bfloat16:  # numpy has no bfloat16: transport as float32, keep the dtype
            data = data.float()
        if data.is_complex() or data.is_quantized or data.layout != torch.strided:
            return {"kind": "unsupported", "type": f"tensor with layout {tensor.layout} / {dtype}"}
        return {
            "kind": "tensor",
            "dtype": dtype,
            "shape": list(tensor.shape),
            "device": tensor.device.type,
            "data": _array_payload(data.numpy()),
        }
    if t is np.ndarray:
        if value.dtype.hasobject:
            return {"kind": "unsupported", "type": "object array"}
        return {"kind": "ndarray", "dtype": str(value.dtype), "shape": list(value.shape), "data": _array_payload(value)}
    if value is None:
        return {"kind": "none"}
    if t is bool:
        return {"kind": "bool", "value": value}
    if t is int:
        return {"kind": "int", "value": value}
    if t is float:
        return {"kind": "float", "value": _float_json(value)}
    if t is str:
        return {"kind": "str", "value": value}
    if t in (list, tuple):
        return {"kind": t.__name__, "items": [encode(v, depth + 1) for v in value]}
    if t is dict and all(type(k) is str for k in value):
        return {"kind": "dict", "items": {k: encode(v, depth + 1) for k, v in value.items()}}
    return {"kind": "unsupported", "type": f"{t.__module__}.{t.__qualname__}"}


# CPython 3.11 builds syntax trees with interpreter-wide state (python/cpython#106905): ast.parse and
# ast.literal_eval (which np.load uses for the .npy header) from several threads at once may raise
# SystemError. The grader decides in threads, so every such call holds this lock.
AST_LOCK = threading.Lock()


def _decode_array(payload: str) -> np.ndarray:
    data = base64.b64decode(payload, validate=True)
    with AST_LOCK:
        return np.load(io.BytesIO(data), allow_pickle=False)


def _as_float(x) -> float:
    if type(x) in (int, float) or x in ("nan", "inf", "-inf"):
        return float(x)  # numbers, or the strings "nan", "inf", "-inf" written by _float_json
    raise ValueError("malformed float")


def _shape(shape) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def describe(enc: dict) -> str:
    kind = enc.get("kind")
    if kind == "tensor":
        return f"a {enc['device']} tensor of dtype {enc['dtype']} and shape {_shape(enc['shape'])}"
    if kind == "ndarray":
        return f"a numpy array of dtype {enc['dtype']} and shape {_shape(enc['shape'])}"
    if kind in ("list", "tuple", "dict"):
        n = len(enc["items"])
        return f"a {kind} of {n} item{'s' if n != 1 else ''}"
    if kind == "unsupported":
        return f"an object of type {enc.get('type')}"
    if kind == "none":
        return "None"
    if kind == "int":
        return "an int"
    return f"a {kind}"


def _plain(x) -> str:
    """A number as a person writes it (no np.float64(...), no tensor(...))."""
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return "nan" if math.isnan(x) else f"{x:.6g}"
    return repr(x)


def _where(path: str) -> str:
    return f" (part {path})" if path else ""


def compare(got: dict, expected: dict, rtol: float, atol: float, path: str = "") -> str | None:
    """None when ``got`` matches ``expected``; otherwise a sentence saying what differs.

    Works on encoded values only, so it runs in the grader's own process. ``got`` comes from the
    student's process and may be anything JSON can hold: a value that is not a well-formed
    encoding fails this check (and only this one) with a message, it never raises.
    """
    try:
        return _compare(got, expected, rtol, atol, path)
    except Exception as err:  # noqa: BLE001 - untrusted input: any malformed value is a failed check
        return f"the recorded value could not be read ({type(err).__name__})"


def _check_array(enc: dict, arr: np.ndarray) -> np.ndarray:
    """``arr`` in the shape its description gives (0-dimensional values travel as one element)."""
    shape = enc["shape"]
    if (
        arr.dtype.hasobject
        or arr.dtype.fields is not None
        or type(shape) is not list
        or not all(type(n) is int and n >= 0 for n in shape)
        or len(shape) > 64
    ):
        raise ValueError("array does not match its description")
    return arr.reshape(shape)


def _mismatch(expected: dict, got: dict, where: str) -> str:
    """The sentence for a value of the wrong kind, dtype, shape or device."""
    if got.get("kind") == "none":
        return f"expected {describe(expected)}{where}, got None (does your function return its result?)"
    if got.get("kind") == expected.get("kind") and got.get("kind") in ("tensor", "ndarray"):
        for key, label in (("shape", "shape"), ("dtype", "dtype"), ("device", "device")):
            if got.get(key) != expected.get(key):
                show = (lambda v: _shape(v)) if key == "shape" else (lambda v: str(v))
                return (
                    f"your value{where} has {label} {show(got.get(key))} where {show(expected.get(key))} is "
                    f"expected ({describe(expected)})"
                )
    return f"expected {describe(expected)}{where}, got {describe(got)}"


def _array_difference(g: np.ndarray, e: np.ndarray, rtol: float, atol: float, where: str) -> str | None:
    if e.dtype.kind in "biu" or e.dtype == np.bool_:
        bad = g != e
        if not bad.any():
            return None
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        return (
            f"your value{where} differs from the expected one in {int(bad.sum())} of {bad.size} entries "
            f"(first at position {idx}: yours {_plain(g[idx])}, expected {_plain(e[idx])})"
        )
    g64, e64 = g.astype(np.float64), e.astype(np.float64)
    with np.errstate(invalid="ignore"):
        close = np.abs(g64 - e64) <= atol + rtol * np.abs(e64)
    infinite = np.isinf(e64)
    close = np.where(infinite, g64 == e64, close)  # an infinite expected value is matched exactly (inf <= inf)
    close |= np.isnan(g64) & np.isnan(e64)
    bad = ~close
    if not bad.any():
        return None
    nan = np.isnan(g64) & ~np.isnan(e64)
    if nan.any():
        return (
            f"your value{where} is NaN (not a number) in {int(nan.sum())} of {nan.size} entries where the expected "
            "value is a number: look for a division by zero, the square root or log of a negative number, or "
            "an overflow"
        )
    inf = np.isinf(g64) & ~np.isinf(e64)
    if inf.any():
        return (
            f"your value{where} is infinite in {int(inf.sum())} of {inf.size} entries where the expected value is "
            "finite: look for a division by zero or an overflow"
        )
    diff = np.abs(g64 - e64)
    largest = float(np.max(diff[bad]))
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    at = (
        f" (first at position {idx}: yours {_plain(g[idx])}, expected {_plain(e[idx])})"
        if e.ndim
        else f" (yours {_plain(g.reshape(()))}, expected {_plain(e.reshape(()))})"
    )
    scale = float(np.max(np.abs(e64))) if e64.size else 0.0
    text = (
        f"your value{where} differs from the expected one by up to {largest:.2g} in {int(bad.sum())} of "
        f"{bad.size} entries{at}; the test allows {atol:g} + {rtol:g}·|expected|"
    )
    if scale and largest < 1e-4 * scale:
        text += (
            ". The difference is small compared with the values: often a small constant (such as ε), "
            "a term applied in another order, or another precision"
        )
    return text


def _compare(got: dict, expected: dict, rtol: float, atol: float, path: str = "") -> str | None:
    where = _where(path)
    if not isinstance(got, dict) or got.get("kind") != expected.get("kind") or got.get("kind") == "unsupported":
        if not isinstance(got, dict):
            return f"expected {describe(expected)}{where}, got nothing"
        return _mismatch(expected, got, where)
    kind = expected["kind"]
    if kind in ("list", "tuple", "dict") and not isinstance(got.get("items"), list if kind != "dict" else dict):
        raise ValueError("malformed container")
    if kind in ("tensor", "ndarray"):
        for key in ("dtype", "shape") + (("device",) if kind == "tensor" else ()):
            if got.get(key) != expected.get(key):
                return _mismatch(expected, got, where)
        g = _check_array(got, _decode_array(got["data"]))
        e = _check_array(expected, _decode_array(expected["data"]))
        if g.shape != e.shape or g.dtype != e.dtype:
            return f"the recorded value{where} could not be read (malformed array)"
        return _array_difference(g, e, rtol, atol, where)
    if kind == "none":
        return None
    if kind in ("bool", "int", "str"):
        if type(got["value"]) is not type(expected["value"]):
            raise ValueError("malformed scalar")
        if got["value"] == expected["value"]:
            return None
        show = (lambda v: repr(v)) if kind == "str" else str
        return f"your value{where} is {show(got['value'])}, the expected value is {show(expected['value'])}"
    if kind == "float":
        g, e = _as_float(got["value"]), _as_float(expected["value"])
        if (math.isnan(g) and math.isnan(e)) or g == e or (math.isfinite(e) and abs(g - e) <= atol + rtol * abs(e)):
            return None
        if math.isnan(g):
            return f"your value{where} is NaN (not a number); the expected value is {_plain(e)}"
        return (
            f"your value{where} is {_plain(g)}, the expected value is {_plain(e)} (difference {abs(g - e):.2g}; "
            f"the test allows {atol:g} + {rtol:g}·|expected|)"
        )
    if kind in ("list", "tuple"):
        if len(got["items"]) != len(expected["items"]):
            return f"expected {describe(expected)}{where}, got {describe(got)}"
        for i, (g, e) in enumerate(zip(got["items"], expected["items"])):
            problem = _compare(g, e, rtol, atol, f"{path}[{i}]")
            if problem:
                return problem
        return None
    if kind == "dict":
        if set(got["items"]) != set(expected["items"]):
            missing, extra = (
                sorted(set(expected["items"]) - set(got["items"])),
                sorted(set(got["items"]) - set(expected["items"])),
            )
            parts = ([f"missing keys {missing}"] if missing else []) + ([f"unexpected keys {extra}"] if extra else [])
            return f"your dictionary{where} has {' and '.join(parts)}"
        for k in expected["items"]:
            problem = _compare(got["items"][k], expected["items"][k], rtol, atol, f"{path}[{k!r}]")
            if problem:
                return problem
        return None
    return f"cannot compare values of kind {kind!r}"

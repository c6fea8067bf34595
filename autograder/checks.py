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
from typing import Any, Callable

import numpy as np

MODE_ENV = "GD_GRADER_MODE"
MAX_ARRAY_BYTES = 64 * 2 ** 20  # a recorded value larger than this is refused, not transported
MAX_DEPTH = 20                  # lists, tuples and dicts nested deeper are not recorded
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


def check(name: str, value: Any, expected: Any | Callable[[], Any] = None, *, rtol: float = 1e-6,
          atol: float = 1e-8) -> None:
    """Check ``value`` against ``expected`` (see the module docstring). ``expected`` may be a
    zero-argument callable, which is only called where the expected value is needed."""
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
        _captured.append({"name": name, "value": encoded_expected, "rtol": rtol, "atol": atol})
        return
    if problem is not None:
        raise CheckFailure(f"{name}: {problem}")


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
        return {"kind": "tensor", "dtype": dtype, "shape": list(tensor.shape), "device": tensor.device.type,
                "data": _array_payload(data.numpy())}
    if t is np.ndarray:
        if value.dtype.hasobject:
            return {"kind": "unsupported", "type": "object array"}
        return {"kind": "ndarray", "dtype": str(value.dtype), "shape": list(value.shape),
                "data": _array_payload(value)}
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


def _decode_array(payload: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(payload, validate=True)), allow_pickle=False)


def _as_float(x) -> float:
    if type(x) in (int, float) or x in ("nan", "inf", "-inf"):
        return float(x)  # numbers, or the strings "nan", "inf", "-inf" written by _float_json
    raise ValueError("malformed float")


def describe(enc: dict) -> str:
    kind = enc.get("kind")
    if kind == "tensor":
        return f"a {enc['device']} tensor of dtype {enc['dtype']} and shape {tuple(enc['shape'])}"
    if kind == "ndarray":
        return f"a numpy array of dtype {enc['dtype']} and shape {tuple(enc['shape'])}"
    if kind in ("list", "tuple", "dict"):
        return f"a {kind} of {len(enc['items'])} items"
    if kind == "unsupported":
        return f"an object of type {enc.get('type')}"
    return f"a {kind}"


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
    if (arr.dtype.hasobject or arr.dtype.fields is not None or type(shape) is not list
            or not all(type(n) is int and n >= 0 for n in shape) or len(shape) > 64):
        raise ValueError("array does not match its description")
    return arr.reshape(shape)


def _compare(got: dict, expected: dict, rtol: float, atol: float, path: str = "") -> str | None:
    where = f" at {path}" if path else ""
    if not isinstance(got, dict) or got.get("kind") != expected.get("kind") or got.get("kind") == "unsupported":
        return f"expected {describe(expected)}{where}, got {describe(got) if isinstance(got, dict) else 'nothing'}"
    kind = expected["kind"]
    if kind in ("list", "tuple", "dict") and not isinstance(got.get("items"), list if kind != "dict" else dict):
        raise ValueError("malformed container")
    if kind in ("tensor", "ndarray"):
        for key in ("dtype", "shape") + (("device",) if kind == "tensor" else ()):
            if got.get(key) != expected.get(key):
                return f"expected {describe(expected)}{where}, got {describe(got)}"
        g = _check_array(got, _decode_array(got["data"]))
        e = _check_array(expected, _decode_array(expected["data"]))
        if g.shape != e.shape or g.dtype != e.dtype:
            return f"the recorded value{where} could not be read (malformed array)"
        if e.dtype.kind in "biu" or e.dtype == np.bool_:
            bad = g != e
        else:
            g64, e64 = g.astype(np.float64), e.astype(np.float64)
            close = np.abs(g64 - e64) <= atol + rtol * np.abs(e64)
            close |= np.isnan(g64) & np.isnan(e64)
            close |= np.isinf(e64) & (g64 == e64)
            bad = ~close
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            diff = float(np.nanmax(np.abs(g.astype(np.float64) - e.astype(np.float64)))) if g.size else 0.0
            return (f"values differ{where}: {int(bad.sum())} of {bad.size} entries outside "
                    f"atol={atol:g} + rtol={rtol:g}·|expected| (first at index {idx}: got {g[idx]!r}, "
                    f"expected {e[idx]!r}; largest difference {diff:.3g})")
        return None
    if kind == "none":
        return None
    if kind in ("bool", "int", "str"):
        if type(got["value"]) is not type(expected["value"]):
            raise ValueError("malformed scalar")
        return None if got["value"] == expected["value"] else f"expected {expected['value']!r}{where}, got {got['value']!r}"
    if kind == "float":
        g, e = _as_float(got["value"]), _as_float(expected["value"])
        if (math.isnan(g) and math.isnan(e)) or g == e or abs(g - e) <= atol + rtol * abs(e):
            return None
        return f"expected {e!r}{where}, got {g!r} (atol={atol:g}, rtol={rtol:g})"
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
            return f"expected keys {sorted(expected['items'])}{where}, got {sorted(got['items'])}"
        for k in expected["items"]:
            problem = _compare(got["items"][k], expected["items"][k], rtol, atol, f"{path}[{k!r}]")
            if problem:
                return problem
        return None
    return f"cannot compare values of kind {kind!r}"

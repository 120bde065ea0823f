"""The metadata of an exported real-time decoder (``NAME.json`` next to ``NAME.onnx``), read
and checked before anything is allocated from it, and the ONNX graph opened with its load
errors as one line.

``lfpdistill decode`` trusts neither file: :func:`read_onnx_meta` refuses, in one line, a
metadata file that is not UTF-8 JSON, not an object, or whose fields have the wrong types
(``session`` a string; ``n_channels`` and ``context_bins`` positive integers; ``bin_size_s`` a
positive number; ``state``: ``names`` a list of strings, ``shapes`` an object mapping every
name to a list of at most :data:`MAX_STATE_RANK` non-negative integers, ``dtypes`` optional,
each a numeric dtype; ``normalisation``: ``mean`` and ``std`` lists of ``n_channels`` finite
numbers, ``std`` positive). The state may hold any names (the exporter decides them), but
together its tensors may hold at most :data:`MAX_STATE_ELEMENTS` values (256 Mi, 1 GiB of
float32; a real decoder's state is a few MB). :func:`open_graph` opens the graph, turning
onnxruntime's refusal of a truncated, empty or foreign file into one line, and checks that the
graph's inputs are the metadata's ``lfp`` and state tensors with the same shapes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CheckpointMismatchError

#: most values all state tensors of a metadata file may declare together (1 GiB of float32)
MAX_STATE_ELEMENTS = 1 << 28
#: highest rank of one state tensor
MAX_STATE_RANK = 4
#: the dtypes a state tensor may have
STATE_DTYPES = ("float32", "float64", "float16", "int64", "int32", "bool")


class OnnxMetaError(CheckpointMismatchError):
    """An exported decoder's metadata or graph is unreadable or inconsistent."""


def _error(path: Path, what: str) -> OnnxMetaError:
    return OnnxMetaError(f"metadata '{path}' {what}; export the run again with lfpdistill "
                         "export")


def _int(info: dict[str, Any], key: str, path: Path, minimum: int = 1) -> int:
    value = info.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _error(path, f"has {key} {value!r}, not an integer >= {minimum}")
    return value


def _numbers(value: Any, n: int, name: str, path: Path, positive: bool = False) -> list[float]:
    if not isinstance(value, list) or len(value) != n or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value):
        raise _error(path, f"has normalisation {name} that is not a list of {n} finite numbers "
                           "(one per channel)")
    if positive and any(v <= 0 for v in value):
        raise _error(path, f"has a normalisation {name} <= 0")
    return [float(v) for v in value]


def read_onnx_meta(path: Path, fmt: str) -> dict[str, Any]:
    """The metadata at ``path`` (format ``fmt``), checked as the module docstring says."""
    path = Path(path)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _error(path, "is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise _error(path, f"is not JSON ({e})") from None
    except RecursionError:
        raise _error(path, "is nested too deeply") from None
    if not isinstance(info, dict):
        raise _error(path, f"is a JSON {type(info).__name__}, not an object")
    if info.get("format") != fmt:
        raise OnnxMetaError(f"'{path}' is not an lfpdistill real-time metadata file of this "
                            f"version ({fmt}); export the run again with lfpdistill export")
    if not isinstance(info.get("session"), str) or not info["session"]:
        raise _error(path, "has no 'session' name")
    channels = _int(info, "n_channels", path)
    _int(info, "context_bins", path)
    bin_size = info.get("bin_size_s")
    if not isinstance(bin_size, int | float) or isinstance(bin_size, bool) \
            or not math.isfinite(bin_size) or bin_size <= 0:
        raise _error(path, f"has bin_size_s {bin_size!r}, not a positive number")
    state = info.get("state")
    if not isinstance(state, dict):
        raise _error(path, "has no 'state' object")
    names, shapes, dtypes = state.get("names"), state.get("shapes"), state.get("dtypes")
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names) \
            or len(set(names)) != len(names):
        raise _error(path, "has state names that are not a list of distinct strings")
    if not isinstance(shapes, dict):
        raise _error(path, "has state shapes that are not an object of name -> shape")
    total = 0
    for name in names:
        shape = shapes.get(name)
        if not isinstance(shape, list) or len(shape) > MAX_STATE_RANK or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise _error(path, f"has state '{name}' of shape {shape!r}, not a list of at most "
                               f"{MAX_STATE_RANK} non-negative integers")
        total += math.prod(shape)
        if total > MAX_STATE_ELEMENTS:
            raise _error(path, f"declares state tensors of more than {MAX_STATE_ELEMENTS} values "
                               "in all, far more than an exported decoder holds")
    if dtypes is not None and (not isinstance(dtypes, dict) or any(
            dtypes.get(n, "float32") not in STATE_DTYPES for n in names)):
        raise _error(path, f"has state dtypes that are not among {', '.join(STATE_DTYPES)}")
    norm = info.get("normalisation")
    if not isinstance(norm, dict):
        raise _error(path, "has no 'normalisation' object")
    _numbers(norm.get("mean"), channels, "mean", path)
    _numbers(norm.get("std"), channels, "std", path, positive=True)
    return info


def open_graph(path: Path, make: Callable[[], Any], info: dict[str, Any]) -> Any:
    """``make()`` (an onnxruntime session of the graph at ``path``), its load errors as one line,
    checked against the metadata ``info`` (:func:`read_onnx_meta`): inputs ``lfp`` of
    ``[n_channels]`` and every state tensor with its shape."""
    path = Path(path)
    try:
        sess = make()
    except Exception as e:  # onnxruntime's own types (InvalidProtobuf, Fail, ...), by design
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise OnnxMetaError(f"'{path}' is not a readable ONNX graph ({first}); export the run "
                            "again with lfpdistill export") from None
    want = {"lfp": [info["n_channels"]],
            **{n: info["state"]["shapes"][n] for n in info["state"]["names"]}}
    got = {i.name: list(i.shape) for i in sess.get_inputs()}
    if set(got) != set(want) or any(
            len(got[n]) != len(want[n]) or any(isinstance(g, int) and g != w
                                               for g, w in zip(got[n], want[n], strict=True))
            for n in want):
        raise OnnxMetaError(
            f"'{path}' does not match its metadata '{path.with_suffix('.json').name}' (graph "
            f"inputs {sorted(got)[:8]} vs lfp and state {sorted(want)[:8]}, or other shapes); "
            "export the run again with lfpdistill export")
    return sess


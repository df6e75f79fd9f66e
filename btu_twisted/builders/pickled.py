# -*- test-case-name: tests.test_btu_web -*-
"""Check that bytes are a pickled RQ job `(func_name, instance, args, kwargs)` without running them.

The daemon never imports or calls what the pickle names (the BTU app's classes are not installed
here, and a pickle from the network must not execute code in the daemon): every global it refers
to is replaced by an inert stand-in, so only the pickle's structure is checked.
"""

from __future__ import annotations

import io
import pickle
import re

MAX_PICKLE_BYTES = 4 * 1024 * 1024  # a pickled BTU TaskRunner is a few kB
_DOTTED = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


class PickleError(ValueError):
    """The bytes are not a pickled RQ job; the message says what is wrong."""


class _StandIn:
    """Any global the pickle names: accepts whatever construction and state the pickle applies."""

    def __new__(cls, *_args, **_kwargs):
        return object.__new__(cls)

    def __init__(self, *_args, **_kwargs):
        pass

    def __setstate__(self, _state):
        pass


class _InertUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return type(f"{module}.{name}", (_StandIn,), {})

    def persistent_load(self, pid):
        raise PickleError("it uses persistent ids, which RQ job data never does")


def check_job_pickle(data: bytes) -> str:
    """Return the job's function name if `data` is a pickled `(func_name, instance, args, kwargs)`."""
    if len(data) > MAX_PICKLE_BYTES:
        raise PickleError(f"{len(data)} bytes, more than the {MAX_PICKLE_BYTES} allowed")
    try:
        job = _InertUnpickler(io.BytesIO(data)).load()
    except PickleError:
        raise
    except Exception as e:  # a truncated or garbled pickle raises almost anything
        raise PickleError(f"not a valid pickle ({type(e).__name__}: {e})") from None
    if not isinstance(job, tuple) or len(job) != 4:
        raise PickleError(f"expected a 4-tuple (func_name, instance, args, kwargs), got {_shape(job)}")
    func_name, _instance, args, kwargs = job
    if not isinstance(func_name, str) or not _DOTTED.match(func_name):
        raise PickleError(f"func_name must be a dotted name, got {_shape(func_name)}")
    if not isinstance(args, (tuple, list)):
        raise PickleError(f"args must be a tuple or list, got {_shape(args)}")
    if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
        raise PickleError(f"kwargs must be a dict with string keys, got {_shape(kwargs)}")
    return func_name


def _shape(value) -> str:
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    return repr(value)[:80] if isinstance(value, (str, int, float, type(None))) else type(value).__name__

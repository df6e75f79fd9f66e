"""Tiny job functions for integration tests (importable as ``tests.support.jobfuncs``)."""

import json
import os


def write_marker(path, **kwargs):
    """Write ``kwargs`` as JSON to ``path`` (atomically), proving the job ran with them."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(kwargs, f, sort_keys=True)
    os.replace(tmp, path)
    return kwargs


def noop(**kwargs):
    """Do nothing."""
    return None


def explode(**kwargs):
    """Raise, so tests can see a failed job and its error."""
    raise RuntimeError(f"boom with {sorted(kwargs)}")

"""A tiny stand-in for Frappe, just enough for an RQ worker to run BTU's Frappe-shaped jobs.

Put ``tests/support/fake_frappe`` (not ``tests/support``) on a worker's PYTHONPATH.
"""

import importlib

local = type("Local", (), {})()  # real Frappe's thread-local; execute_job records the site here


def get_attr(method_string: str):
    """Import a dotted path ``package.module.function`` and return the function, as Frappe does."""
    module_name, _, attribute = method_string.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)

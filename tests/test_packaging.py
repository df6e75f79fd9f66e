"""What an install ships: the `twistd btu` plugin and the data files, with no packaging warnings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.trial import unittest

from tests.support.daemon import twistd_executable
from tests.support.workers import REPO_ROOT

# Runs setup.py as far as setuptools' build_py plans the wheel's files, recording every warning;
# in a subprocess so that setup.py's side effects stay out of the test process.
PLAN_SCRIPT = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import setuptools
    from distutils.core import run_setup
    build_py = run_setup("setup.py", stop_after="config").get_command_obj("build_py")
    build_py.ensure_finalized()
    modules = [f"{package}.{module}" for package, module, _ in build_py.find_all_modules()]
    data = {package: files for package, _, _, files in build_py.data_files}
print(json.dumps({"warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
                  "modules": modules, "data": data}))
"""


def environment() -> dict:
    """The inherited environment without PYTHONPATH, so only the install itself is on the path."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


class PackagingTests(unittest.SynchronousTestCase):
    def test_wheel_contents_and_no_warnings(self):
        """setup.py plans twisted/plugins/btu_plugin.py (never Twisted's __init__ or a dropin.cache),
        the embedded configuration and the dashboard's files, and warns about nothing."""
        done = subprocess.run([sys.executable, "-c", PLAN_SCRIPT], cwd=REPO_ROOT, env=environment(),
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        plan = json.loads(done.stdout.splitlines()[-1])
        self.assertEqual(plan["warnings"], [])
        self.assertEqual([m for m in plan["modules"] if m.startswith("twisted.")], ["twisted.plugins.btu_plugin"])
        self.assertEqual(plan["data"]["twisted.plugins"], [])
        self.assertLessEqual({"embedded.toml", "embedded_schedules.toml"}, set(plan["data"]["btu_twisted.data"]))
        self.assertEqual(set(plan["data"]["btu_twisted.web.static"]),
                         {"dashboard.css", "dashboard.html", "dashboard.js"})

    def test_installed_twistd_finds_the_plugin(self):
        """The virtualenv's twistd lists `btu` from any directory, with no PYTHONPATH help
        (the Makefile's editable install is a .pth entry for the checkout)."""
        done = subprocess.run([twistd_executable(), "--help"], cwd=self.mktemp_dir(), env=environment(),
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertRegex(done.stdout, r"\n\s+btu\s+BTU scheduler daemon")
        self.assertNotIn("plugin cache", done.stdout + done.stderr)

    def mktemp_dir(self) -> str:
        path = self.mktemp()
        os.makedirs(path)
        return path

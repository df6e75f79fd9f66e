"""Packaging for btu_twisted: the Twisted scheduler daemon for BTU (Frappe) and Python RQ."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

setup(
    name="btu_twisted",
    version="0.1.0",
    description="Twisted daemon that turns BTU Task Schedules into Python RQ jobs, on time, exactly once",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # Namespace discovery so the data directories (btu_twisted.data, btu_twisted.web.static) are
    # packages too: setuptools warns about importable directories left out of `packages`.
    # The root as the explicit package directory: the editable install (Makefile) is then a plain
    # .pth entry for the root, which Twisted's plugin scan needs to find twisted/plugins/btu_plugin.py.
    package_dir={"": "."},
    packages=find_namespace_packages(include=["btu_twisted", "btu_twisted.*"],
                                     exclude=["*.__pycache__"]) + ["twisted.plugins"],
    package_data={"btu_twisted.data": ["*.toml"], "btu_twisted.web.static": ["*"]},
    include_package_data=True,
    install_requires=[
        "twisted>=23.8",
        "txredisapi>=1.4.10",
        "rq>=1.15,<4",
        "redis>=4.5",
        "pymysql>=1.0",
        "tzdata",
        "click>=8.0",
        "prometheus_client>=0.17",
    ],
    extras_require={"test": ["hypothesis>=6.80", "croniter>=2.0,<8", "selenium>=4.11"]},
    entry_points={"console_scripts": ["btu = btu_twisted.cli:main", "btu-ctl = btu_twisted.cli:main"]},
    zip_safe=False,
)

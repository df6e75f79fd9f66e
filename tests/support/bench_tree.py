"""A Frappe bench tree in a temp directory: the files bench discovery reads, nothing else."""

from __future__ import annotations

import json
import os

V13_INIT = '"""Frappe"""\nfrom .exceptions import *\n\n__version__ = "13.58.0"\n__title__ = "Frappe Framework"\n'
V15_INIT = ('"""Frappe"""\nimport os\n\n__version__ = "15.51.1"\n__title__ = "Frappe Framework"\n'
            'controllers = {}\n')


def make_bench(path: str, common: dict, sites: dict[str, dict], current: str | None = None,
               frappe_init: str = V15_INIT) -> str:
    """Write `sites/common_site_config.json`, each `sites/<site>/site_config.json`, an optional
    `sites/currentsite.txt` and `apps/frappe/frappe/__init__.py` under `path`; returns `path`."""
    os.makedirs(os.path.join(path, "sites"), exist_ok=True)
    os.makedirs(os.path.join(path, "sites", "assets"), exist_ok=True)  # not a site: no site_config.json
    write_json(os.path.join(path, "sites", "common_site_config.json"), common)
    for site, conf in sites.items():
        os.makedirs(os.path.join(path, "sites", site), exist_ok=True)
        write_json(os.path.join(path, "sites", site, "site_config.json"), conf)
    if current is not None:
        with open(os.path.join(path, "sites", "currentsite.txt"), "w", encoding="utf-8") as f:
            f.write(current + "\n")
    os.makedirs(os.path.join(path, "apps", "frappe", "frappe"), exist_ok=True)
    with open(os.path.join(path, "apps", "frappe", "frappe", "__init__.py"), "w", encoding="utf-8") as f:
        f.write(frappe_init)
    return path


def write_json(path: str, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)

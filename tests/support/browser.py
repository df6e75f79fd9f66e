"""Debian's headless Chromium driven by Selenium through Debian's chromedriver, with nothing downloaded."""

from __future__ import annotations

import os
import shutil

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

WINDOW = "1400,1000"  # pixels: wide enough for every column of the schedules table
# Flags that keep the browser from reaching the network on its own (updates, sync, first-run pages).
QUIET_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
               "--hide-scrollbars", f"--window-size={WINDOW}")


def binaries() -> tuple[str | None, str | None]:
    """The system browser and driver (Debian's `chromium` and `chromium-driver`), None where absent."""
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    return browser, shutil.which("chromedriver")


def missing() -> str | None:
    """Why the browser tests cannot run here, or None when both binaries are installed."""
    browser, driver = binaries()
    absent = [package for package, path in (("chromium", browser), ("chromium-driver", driver)) if path is None]
    if not absent:
        return None
    return (f"{' and '.join(absent)} not found on PATH: install Debian's {' '.join(absent)} "
            "(.ci/run does) to run the dashboard browser tests")


def start_chromium(profile_dir: str) -> webdriver.Chrome:
    """A headless Chromium session on a fresh profile (blocking: call it from a thread)."""
    browser, driver = binaries()
    # Both paths are given, so Selenium Manager (which could download a browser or driver) is skipped;
    # SE_OFFLINE forbids it to reach the network should a future Selenium consult it anyway.
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*QUIET_FLAGS, f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)

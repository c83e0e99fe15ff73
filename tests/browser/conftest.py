"""A JupyterLab server and a headless Debian Chromium for the real-browser tests.

JupyterLab runs on a free loopback port with a token, no browser of its own,
``--allow-root`` (CI runs as root), and settings, workspaces and runtime files
in a temporary directory, serving a copy of the notebooks (so that autosave
never touches the committed ones). Chromium is Debian's ``/usr/bin/chromium``,
driven by Playwright through ``executable_path``: nothing is downloaded. When
either is missing the tests skip, except under CI (``CI`` set), where that is
a failure.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
_SERVER_START_S = 60.0


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser test must run; .ci/run installs Debian's chromium)")
    pytest.skip(reason)


def chromium_path() -> str:
    """Debian's chromium (``DEDUP_CHROMIUM`` overrides), or skip / fail under CI."""
    found = os.environ.get("DEDUP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        _unavailable("no chromium on PATH (Debian: apt-get install chromium)")
    return str(found)


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab: where it serves, its token, the folder it serves."""

    url: str
    token: str
    root: Path

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> Iterator[Lab]:
    """JupyterLab serving a copy of ``notebooks/``, stopped (by its own process id) at the end."""
    home = tmp_path_factory.mktemp("lab")
    served = home / "notebooks"
    shutil.copytree(ROOT / "notebooks", served)
    shutil.copytree(ROOT / "data", home / "data", ignore=shutil.ignore_patterns("cache"))
    # Render every cell (JupyterLab 4 leaves cells outside the viewport out of the page by default),
    # and ask nothing about news on first start.
    settings = home / "settings"
    for plugin, values in (
        ("notebook-extension/tracker", '{"windowingMode": "none"}'),
        ("apputils-extension/notification", '{"fetchNews": "false", "checkForUpdates": false}'),
    ):
        target = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(values)
    port, token = _free_port(), secrets.token_hex(16)
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path,
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(home / "ws")}
    log = (home / "lab.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
         f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={served}", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=served, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + _SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start:\n{(home / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.2)  # polling a server that is starting: nothing to wait on but its port
        yield Lab(url, token, served)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def browser(tmp_path_factory) -> Iterator[object]:
    """Headless Debian Chromium under Playwright, with a fresh user-data-dir."""
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install playwright; no browser download)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()

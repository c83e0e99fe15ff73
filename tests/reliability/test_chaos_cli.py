"""``dedup chaos`` when its store cannot start: one clear line, at once, exit 2."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dedup


def run_chaos_cli(path_dir: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PATH"] = str(path_dir)  # only what the test put there
    env["PYTHONPATH"] = str(Path(dedup.__file__).resolve().parents[1])
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "dedup", "chaos", "--small"], env=env, capture_output=True,
                          text=True, timeout=60)
    return done, time.monotonic() - started


@pytest.mark.parametrize("server", ["missing", "failing"])
def test_a_store_that_cannot_start_is_one_clear_line_within_5_s(tmp_path, server):
    if server == "failing":
        fake = tmp_path / "redis-server"
        fake.write_text("#!/bin/sh\necho 'Fatal error, cannot open config file' >&2\nexit 1\n")
        fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    done, elapsed_s = run_chaos_cli(tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    expected = "redis-server is not installed" if server == "missing" else "cannot open config file"
    assert lines[0].startswith("dedup: error: ") and expected in lines[0]
    assert elapsed_s < 5.0

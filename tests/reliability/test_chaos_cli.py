"""``dedup chaos`` when its store cannot start: one clear line, exit 2, before anything slow.

The 5 s bound holds by construction: the store is started (with a 4 s start timeout)
before moto, boto3 or the trace generator are even imported, so the check asserts
that none of them was.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import dedup

SLOW_PARTS = ("moto", "boto3", "dedup.traces", "dedup.chaos.run")
PROGRAM = f"""
import sys
from dedup.cli import main
code = main(["chaos", "--small"])
print(sorted(m for m in {SLOW_PARTS!r} if m in sys.modules))
sys.exit(code)
"""


@pytest.mark.parametrize("server", ["missing", "failing"])
def test_a_store_that_cannot_start_is_one_clear_line_before_anything_slow_is_loaded(tmp_path, server):
    if server == "failing":
        fake = tmp_path / "redis-server"
        fake.write_text("#!/bin/sh\necho 'Fatal error, cannot open config file' >&2\nexit 1\n")
        fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PATH"] = str(tmp_path)  # only what the test put there
    env["PYTHONPATH"] = str(Path(dedup.__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    expected = "redis-server is not installed" if server == "missing" else "cannot open config file"
    assert lines[0].startswith("dedup: error: ") and expected in lines[0]
    assert done.stdout.strip() == "[]"  # failed before loading moto, boto3 or the traces

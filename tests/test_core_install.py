"""The core as users deploy it: ``pip install dedup`` without extras into a fresh venv, and the Lambda
zip imported alone in a clean interpreter. Both run the Lambda entry on the canonical SQS event with
the memory store and a real Redis, with nothing else installed.

Slow (each builds dedup and resolves its dependencies with pip: ~15-30 s), but part of ``make test``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from samples import EVENTS_DIR, load_event

from dedup.aws.lambda_zip import LAMBDA_UNZIPPED_LIMIT_BYTES, build_lambda_zip

pytestmark = [pytest.mark.slow, pytest.mark.redis]

CORE_LIMIT_BYTES = 10 * 1000 * 1000
EVENT = EVENTS_DIR / "lambda_sqs_event_mixed.json"
PROBE = Path(__file__).parent / "lambda_probe.py"
GENESYS, REPUBLISHED, NOT_JSON, KEYLESS, NICE = (r["messageId"] for r in load_event(EVENT.name)["Records"])
ROOT = Path(__file__).resolve().parents[1]
# Installed distributions' sizes, from their RECORD files (what pip put into the venv).
SIZES = """
import importlib.metadata as m, json
print(json.dumps({d.metadata["Name"].lower(): sum(f.size or 0 for f in d.files or ())
                  for d in m.distributions()}))
"""


def _probe(python: str | Path, path_entry: str, *stores: str, flags: tuple[str, ...] = ("-I",)) -> dict:
    done = subprocess.run([str(python), *flags, str(PROBE), path_entry, str(EVENT), *stores],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _check_lambda_entry(report: dict, stores: list[str]) -> None:
    first, _, _, _, nice = load_event(EVENT.name)["Records"]
    for url in stores:
        decided = report["stores"][url]
        # first invocation: the republished copy is a duplicate, the bad and keyless records come back
        # second: everything that was processed is now a duplicate; the handler ran once per event
        assert decided["failures"] == [[NOT_JSON, KEYLESS], [NOT_JSON, KEYLESS]], url
        assert decided["handled"] == [json.loads(first["body"])["id"], json.loads(nice["body"])["id"]], url


def _staged_source(into: Path) -> Path:
    """What building dedup needs, copied out of the checkout (a build writes next to its source)."""
    into.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, into / name)
    shutil.copytree(ROOT / "dedup", into / "dedup", ignore=shutil.ignore_patterns("__pycache__"))
    return into


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """A fresh venv with ``pip install dedup`` (from this checkout, no extras) and what it installed."""
    tmp = tmp_path_factory.mktemp("core")
    venv.EnvBuilder(with_pip=True).create(tmp / "venv")
    python = tmp / "venv" / "bin" / "python"
    before = _sizes(python)
    done = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           str(_staged_source(tmp / "source"))],
                          capture_output=True, text=True, timeout=180, cwd=tmp)
    assert done.returncode == 0, done.stderr
    return python, {name: size for name, size in _sizes(python).items() if name not in before}


def _sizes(python: Path) -> dict[str, int]:
    done = subprocess.run([python, "-I", "-c", SIZES], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_the_core_installs_redis_and_jmespath_only_in_at_most_10_mb(core_venv, record_property):
    _, installed = core_venv
    total = sum(installed.values())
    record_property("core_install_bytes", total)
    print(f"\ncore install: {total / 1e6:.2f} MB ({', '.join(sorted(installed))})")
    assert set(installed) == {"dedup", "redis", "jmespath"}
    assert total <= CORE_LIMIT_BYTES


def test_the_core_install_runs_the_lambda_entry_on_the_memory_store_and_real_redis(core_venv, redis_server):
    python, _ = core_venv
    stores = ["memory", redis_server.url]
    report = _probe(python, "-", *stores)
    assert "/venv/" in report["dedup"]
    _check_lambda_entry(report, stores)
    assert report["installed"] == report["loaded"] == []
    assert report["dynamodb"] == ("MissingExtraError: dedup[aws] is not installed: pip install 'dedup[aws]' "
                                  "(needed for botocore)")


@pytest.mark.parametrize(("command", "extra", "module"), [
    (["provision"], "aws", "botocore"),  # the command imports boto3 (its AWS errors come first)
    (["chaos", "--small"], "aws", "botocore"),  # the run needs the embedded AWS
    (["sweep", "--trace", "x.jsonl"], "workbench", "pandas"),  # the analytics need pandas
    (["trace", "--help"], None, None),  # parsing and help need no extra
])
def test_a_command_needing_a_missing_extra_says_which_in_one_line(core_venv, command, extra, module):
    python, _ = core_venv
    done = subprocess.run([python, "-I", "-m", "dedup", *command], capture_output=True, text=True,
                          timeout=60, cwd=python.parent)
    if extra is None:
        assert done.returncode == 0, done.stderr
        return
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"dedup: error: dedup[{extra}] is not installed: pip install 'dedup[{extra}]' (needed for {module})"]


def test_the_lambda_zip_alone_runs_the_lambda_entry_in_a_clean_interpreter(tmp_path, redis_server,
                                                                          record_property):
    package = build_lambda_zip(tmp_path / "dedup-lambda.zip", add=[PROBE])
    record_property("lambda_zip_bytes", package.zipped_bytes)
    print(f"\n{package.summary()}")
    assert package.unzipped_bytes < LAMBDA_UNZIPPED_LIMIT_BYTES
    with zipfile.ZipFile(package.path) as archive:
        names = archive.namelist()
    assert "dedup/aws/lambda_handler.py" in names and "lambda_probe.py" in names
    assert {n.split("/")[0] for n in names if n.endswith(".py")} == {"dedup", "redis", "jmespath",
                                                                     "lambda_probe.py"}
    assert not [n for n in names if n.endswith((".so", ".pyd", ".pyc"))]  # pure Python: any runtime
    stores = ["memory", redis_server.url]
    # -I: no environment or user site; -S: no site-packages either, so only the zip and the stdlib
    report = _probe(sys.executable, str(package.path), *stores, flags=("-I", "-S"))
    assert report["dedup"].startswith(str(package.path))
    _check_lambda_entry(report, stores)
    assert report["installed"] == report["loaded"] == []



@pytest.mark.parametrize("module", ["dedup.analysis", "dedup.plots"])
def test_importing_the_analytics_without_the_workbench_extra_names_the_extra(core_venv, module):
    python, _ = core_venv
    done = subprocess.run([python, "-I", "-c", f"import {module}"], capture_output=True, text=True,
                          timeout=60, cwd=python.parent)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "dedup.extras.MissingExtraError: dedup[workbench] is not installed: "
        "pip install 'dedup[workbench]' (needed for numpy)")

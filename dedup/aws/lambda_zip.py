"""The Lambda deployment package: the core and its dependencies in one zip (``dedup lambda-zip``).

The ``dedup`` package as it runs here, plus ``pip install --target`` of its core
requirements (redis and jmespath, both pure Python, so the zip runs on any Lambda
Python 3.11+ runtime and architecture), plus your handler's modules (``add``).
The handler is ``dedup.aws.lambda_handler.handler``.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import dedup
from dedup.errors import ConfigurationError

LAMBDA_UNZIPPED_LIMIT_BYTES = 250 * 1024 * 1024
_SKIPPED_DIRS = {"__pycache__", "bin"}


@dataclass(frozen=True)
class LambdaZip:
    """A built deployment package and its sizes."""

    path: Path
    zipped_bytes: int
    unzipped_bytes: int
    files: int

    def summary(self) -> str:
        return (f"{self.path}: {self.zipped_bytes / 1e6:.2f} MB zipped, {self.unzipped_bytes / 1e6:.2f} MB "
                f"unzipped ({self.files} files; Lambda allows {LAMBDA_UNZIPPED_LIMIT_BYTES / 2**20:.0f} MiB "
                "unzipped); handler dedup.aws.lambda_handler.handler")


def core_requirements() -> list[str]:
    """What the core needs: ``pyproject.toml``'s dependencies in a checkout, else the installed metadata's
    requirements outside any extra."""
    pyproject = Path(dedup.__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file():
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        if project.get("name") == "dedup":
            return list(project["dependencies"])
    return [r for r in importlib.metadata.requires("dedup") or () if "extra ==" not in r]


def build_lambda_zip(output: str | Path, *, add: Sequence[str | Path] = (),
                     python: str = sys.executable) -> LambdaZip:
    """Build the zip at ``output``: dedup and its core requirements, plus ``add`` at the zip's root."""
    output = Path(output)
    for extra in add:
        if not Path(extra).exists():
            raise ConfigurationError(f"cannot add {extra} to the Lambda zip: no such file or directory")
    with tempfile.TemporaryDirectory(prefix="dedup-lambda-") as tmp:
        target = Path(tmp) / "package"
        requirements = core_requirements()
        done = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-compile",
                               "--disable-pip-version-check", "--target", str(target), *requirements],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ConfigurationError(
                f"pip could not install {' '.join(requirements)} for the Lambda zip:\n{done.stderr.strip()}")
        shutil.copytree(Path(dedup.__file__).parent, target / "dedup",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for extra in map(Path, add):
            copy = shutil.copytree if extra.is_dir() else shutil.copy2
            copy(extra, target / extra.name)
        output.parent.mkdir(parents=True, exist_ok=True)
        unzipped, count = _write_zip(target, output)
    return LambdaZip(output, output.stat().st_size, unzipped, count)


def _write_zip(root: Path, output: Path) -> tuple[int, int]:
    unzipped = count = 0
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in _files(root):
            archive.write(path, path.relative_to(root).as_posix())
            unzipped += path.stat().st_size
            count += 1
    return unzipped, count


def _files(root: Path) -> Iterator[Path]:
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        for name in sorted(files):
            yield Path(directory) / name

"""Optional dependencies by extra, and the one-line error that names a missing one.

The core needs redis and jmespath only; the rest comes with an extra
(``pip install 'dedup[aws]'``). When code on a higher floor, or a store the user
asked for, needs a package that is not installed, :class:`MissingExtraError`
says which extra to install instead of a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from types import ModuleType

from dedup.errors import ConfigurationError

# Top-level module -> the extra that installs it (the extras themselves are in pyproject.toml).
EXTRA_OF: dict[str, str] = {
    "boto3": "aws",
    "botocore": "aws",
    "yaml": "aws",
    "tqdm": "aws",
    "pandas": "workbench",
    "numpy": "workbench",
    "matplotlib": "workbench",
    "papermill": "workbench",
    "nbformat": "workbench",
    "nbclient": "workbench",
    "jupyterlab": "workbench",
    "ipywidgets": "workbench",
    "moto": "workbench",
    "fakeredis": "workbench",
    "duckdb": "workbench",
    "numba": "workbench",
    "pyarrow": "workbench",
    "pytest": "test",
    "hypothesis": "test",
    "cfnlint": "test",
}


class MissingExtraError(ConfigurationError, ModuleNotFoundError):
    """A package of an extra that is not installed was needed."""

    def __init__(self, extra: str, module: str):
        self.extra = extra
        self.module = module
        super().__init__(f"dedup[{extra}] is not installed: pip install 'dedup[{extra}]' "
                         f"(needed for {module})", name=module)

    def __str__(self) -> str:
        return str(self.args[0])


def missing_extra(exc: BaseException) -> MissingExtraError | None:
    """The :class:`MissingExtraError` an import failure stands for, ``None`` if it is not one."""
    if isinstance(exc, MissingExtraError):
        return exc
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    extra = EXTRA_OF.get(top)
    return MissingExtraError(extra, top) if extra else None


@contextlib.contextmanager
def needs_extras() -> Iterator[None]:
    """Turn a missing optional package imported in the block into a :class:`MissingExtraError`."""
    try:
        yield
    except ModuleNotFoundError as exc:
        clear = missing_extra(exc)
        if clear is None or clear is exc:
            raise
        raise clear from exc


def require(module: str) -> ModuleType:
    """Import ``module`` (an optional package), or raise :class:`MissingExtraError` naming its extra."""
    with needs_extras():
        return importlib.import_module(module)

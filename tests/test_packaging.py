"""The repository's own hygiene: packaging metadata in step, notebooks committed clean, floors kept."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from dedup.errors import ConfigurationError
from dedup.extras import EXTRA_OF, MissingExtraError, missing_extra
from dedup.notebook_hygiene import is_dirty, notebook_paths, strip

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI's.
CONDA_NAMES = {"redis-py": "redis"}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement.strip(), maxsplit=1)[0].lower()


# environment.yml lists these extras itself and takes dev through `pip install -e .[dev]`.
ENVIRONMENT_EXTRAS = ("aws", "workbench", "test")
CORE_DEPENDENCIES = {"redis", "jmespath"}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_core_depends_on_redis_and_jmespath_only():
    assert {_name(r) for r in _project()["dependencies"]} == CORE_DEPENDENCIES


def test_environment_yml_mirrors_pyproject_dependencies_and_extras():
    project = _project()
    extras = project["optional-dependencies"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in ENVIRONMENT_EXTRAS:
        wanted |= {_name(r) for r in extras[extra]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    listed: set[str] = set()
    editable: list[str] = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            listed |= {_name(r) for r in dep["pip"] if not r.startswith("-e")}
            editable += [r for r in dep["pip"] if r.startswith("-e")]
        else:
            listed.add(CONDA_NAMES.get(_name(dep), _name(dep)))
    listed -= {"python", "pip"}
    assert listed == wanted
    assert editable == ["-e .[dev]"]


def test_make_installs_every_extra_its_targets_use():
    recipe = (ROOT / "Makefile").read_text()
    installs = re.findall(r"pip install [^\n]*-e '\.\[([a-z,]+)\]'", recipe)
    assert [set(i.split(",")) for i in installs] == [set(_project()["optional-dependencies"])]


def test_committed_notebooks_hold_no_outputs():
    dirty = [p.name for p in notebook_paths(ROOT / "notebooks") if is_dirty(json.loads(p.read_text()))]
    assert dirty == [], f"strip them with `make strip-notebooks`: {dirty}"


def test_strip_removes_outputs_and_execution_counts():
    notebook = {"cells": [{"cell_type": "code", "execution_count": 3, "outputs": [{"x": 1}],
                           "metadata": {"execution": {}}, "source": "1"},
                          {"cell_type": "markdown", "metadata": {}, "source": "# t"}],
                "metadata": {"papermill": {}}}
    assert is_dirty(notebook)
    assert not is_dirty(strip(notebook))
    assert "papermill" not in notebook["metadata"]


CORE = ["dedup/keys.py", "dedup/service.py", "dedup/clock.py", "dedup/errors.py", "dedup/localredis.py",
        "dedup/defaults.py", "dedup/extras.py", "dedup/aws_errors.py", "dedup/canonical.py",
        "dedup/key_catalogue.py",
        *[str(p.relative_to(ROOT)) for p in (ROOT / "dedup/stores").glob("*.py")]]
CORE_ALLOWED_THIRD_PARTY = {"redis", "jmespath"}
LAZY_OK = {"fakeredis"}  # imported inside a function, only when a user asks for it


@pytest.mark.parametrize("path", CORE)
def test_core_modules_import_only_the_standard_library_redis_and_jmespath(path):
    tree = ast.parse((ROOT / path).read_text())
    for node in tree.body:  # module level: what a Lambda cold start pays for
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top in CORE_ALLOWED_THIRD_PARTY or top in {
                "dedup", "__future__"
            }, f"{path} imports {name}"
            if top == "dedup":
                assert name.split(".")[1] not in {"aws", "traces", "analysis", "plots", "cli"}, (
                    f"{path} (core) imports {name} from a higher floor"
                )


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def test_importing_the_core_and_the_lambda_entry_loads_no_optional_package():
    done = _run("import sys, dedup, dedup.stores, dedup.defaults, dedup.extras, dedup.aws.lambda_handler\n"
                "print(sorted(m for m in ('boto3', 'botocore', 'pandas', 'numpy', 'matplotlib', 'yaml', "
                "'tqdm', 'moto', 'fakeredis') if m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("module", "extra"), [("boto3", "aws"), ("botocore.exceptions", "aws"),
                                               ("pandas", "workbench"), ("fakeredis", "workbench"),
                                               ("cfnlint.api", "test")])
def test_a_missing_optional_package_names_its_extra(module, extra):
    clear = missing_extra(ModuleNotFoundError(f"No module named {module!r}", name=module))
    assert isinstance(clear, MissingExtraError) and isinstance(clear, ConfigurationError)
    assert str(clear) == (f"dedup[{extra}] is not installed: pip install 'dedup[{extra}]' "
                          f"(needed for {module.split('.')[0]})")


def test_a_missing_module_of_no_extra_stays_what_it_was():
    assert missing_extra(ModuleNotFoundError("No module named 'mypkg'", name="mypkg")) is None
    assert missing_extra(ValueError("boto3")) is None


def test_every_mapped_package_belongs_to_the_extra_it_names():
    extras = _project()["optional-dependencies"]
    distribution = {"yaml": "pyyaml", "cfnlint": "cfn-lint", "nbformat": "nbmake", "nbclient": "nbmake",
                    "numpy": "pandas", "botocore": "boto3"}  # imported as / installed through
    for module, extra in EXTRA_OF.items():
        assert distribution.get(module, module) in {_name(r) for r in extras[extra]}, module


@pytest.mark.parametrize(("blocked", "code", "line"), [
    ("fakeredis", "from dedup.stores import open_store; open_store('fakeredis')",
     "dedup[workbench] is not installed: pip install 'dedup[workbench]' (needed for fakeredis)"),
    ("botocore", "from dedup.stores import open_store; open_store('dynamodb://a-table')",
     "dedup[aws] is not installed: pip install 'dedup[aws]' (needed for botocore)"),
])
def test_a_store_or_name_needing_a_missing_extra_raises_one_clear_line(blocked, code, line):
    done = _run(f"import sys; sys.modules[{blocked!r}] = None\n"
                "from dedup.extras import MissingExtraError\n"
                f"try:\n    {code}\nexcept MissingExtraError as exc:\n    print(exc)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [line]


def test_the_cli_turns_a_missing_extra_into_one_line_and_exit_code_2():
    done = _run("import sys; sys.modules['boto3'] = None\n"
                "from dedup.cli import main\nsys.exit(main(['provision', '--aws', 'real']))")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "dedup: error: dedup[aws] is not installed: pip install 'dedup[aws]' (needed for boto3)"]

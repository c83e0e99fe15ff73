"""The real notebooks, run by the workbench runner with non-default parameters.

Checks that injected values took effect in the computed results (the headline
numbers the notebooks report), that every figure a notebook makes is there as an
image for its reader (the runner fails a notebook otherwise), and that no
executed notebook leaks an AWS secret.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from dedup import analysis
from dedup.traces import Duplicates, generate, read_jsonl
from dedup.workbench import NotebookRun, figure_problems, run_notebooks

ROOT = Path(__file__).resolve().parents[2]

SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "secret key setting": re.compile(r"aws_secret_access_key", re.IGNORECASE),
    # An AWS secret access key is 40 base64 characters standing alone.
    "40-char base64 secret": re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),
}


def secrets_in(notebook: nbformat.NotebookNode) -> list[str]:
    """Every secret-looking string in a notebook's sources and text outputs (images excluded)."""
    texts = []
    for cell in notebook.cells:
        texts.append(cell.source)
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts += [str(v) for k, v in output.get("data", {}).items() if not k.startswith("image/")]
            texts += output.get("traceback", [])
    return [f"{name}: {m.group(0)[:12]}…" for text in texts for name, pattern in SECRET_PATTERNS.items()
            for m in pattern.finditer(text)]


AWS_PARAMETERS = {"n_events": 8, "publish_retries": 2, "delivery_duplicates": 1, "source": "nice",
                  "cache": "fakeredis", "n_failing": 2, "seed": 11}
TUNING_PARAMETERS = {"trace": "nice", "n_events": 20_000, "seed": 4, "mode": "sliding", "window_s": 60,
                     "late_p": 0.001, "late_max_s": 21_600}
#: Small runs of 00 and 06 (05 runs on smaller traces), for the inline-figure check.
OTHER_PARAMETERS = {"n_events": 8, "publish_retries": 2, "delivery_duplicates": 1, "trace_events": 20_000,
                    "seed": 2}
FIGURE_NOTEBOOKS = ("00", "03", "04", "05", "06")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, NotebookRun]:
    """02 and 03 with small volumes on fakeredis, 04 on a NICE trace with another late tail, and 00, 05
    and 06 small, each as the runner executes them."""
    out = tmp_path_factory.mktemp("workbench")
    executed = [
        *run_notebooks(ROOT / "notebooks", out, only=["02", "03"], parameters=AWS_PARAMETERS,
                       echo=lambda line: None),
        *run_notebooks(ROOT / "notebooks", out, only=["04"], parameters=TUNING_PARAMETERS,
                       echo=lambda line: None),
        *run_notebooks(ROOT / "notebooks", out, only=["00", "06"], parameters=OTHER_PARAMETERS,
                       echo=lambda line: None),
        *run_notebooks(ROOT / "notebooks", out, only=["05"], parameters={"n_events": 20_000, "seed": 2},
                       echo=lambda line: None),
    ]
    return {run.notebook.split("_")[0]: run for run in executed}


@pytest.mark.aws
def test_producing_notebook_counts_follow_the_injected_parameters(runs):
    run = runs["02"]
    assert run.ok, run.error
    assert run.headline["logical_events"] == 8
    assert run.headline["messages"] == 8 + 2 + 1
    assert run.headline["missed_by_envelope_id"] == 2, "every publish retry passes an envelope-id key"


@pytest.mark.aws
def test_consuming_notebook_used_the_injected_store_and_volumes(runs):
    run = runs["03"]
    assert run.ok, run.error
    assert run.headline["store"] == "redis", "cache=fakeredis opens a RedisStore, not the memory default"
    assert run.headline["processed"] == 8 and run.headline["duplicates_dropped"] == 3
    assert run.headline["lost_mark_first"] == 2 and run.headline["lost_claim"] == 0
    assert run.figures and run.figures[0].name == "03_consuming-lifecycle_failing_handler.png"


def test_window_tuning_notebook_analysed_the_injected_trace_mode_and_window(runs):
    run = runs["04"]
    assert run.ok, run.error
    trace = generate(n_events=TUNING_PARAMETERS["n_events"], source="nice", seed=TUNING_PARAMETERS["seed"],
                     duplicates=Duplicates(late_p=TUNING_PARAMETERS["late_p"],
                                           late_max_s=TUNING_PARAMETERS["late_max_s"]))
    at_window = analysis.sweep(trace, "auto", [TUNING_PARAMETERS["window_s"]], "sliding").iloc[0]
    recommended = analysis.recommend(trace, "auto", mode="sliding")
    assert run.headline["your_window_caught_pct"] == round(float(at_window["caught_pct"]), 3)
    assert run.headline["your_window_leaked"] == int(at_window["leaked"])
    assert run.headline["recommended_window_s"] == recommended.window_s
    assert {f.name for f in run.figures} == {"04_window_tuning-caught_and_leaked.png",
                                             "04_window_tuning-memory.png",
                                             "04_window_tuning-window_sensitivity.png"}
    assert run.headline["assumed_trace"].endswith("late 0.1% in 1 min-6 h"), "the assumed tail is stated"


@pytest.mark.aws
@pytest.mark.parametrize("number", FIGURE_NOTEBOOKS)
def test_every_figure_a_notebook_makes_is_shown_as_an_image(runs, number):
    run = runs[number]
    assert run.ok, run.error
    assert run.figures, f"{run.notebook} publishes figures"
    executed = nbformat.read(run.output, as_version=4)
    assert figure_problems(executed, len(run.figures)) == []
    images = [o for cell in executed.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= len(run.figures)


def test_the_trace_notebook_states_the_dump_recommendation_in_its_headline(runs):
    run = runs["05"]
    assert run.ok, run.error
    own = analysis.recommend_for_dump(read_jsonl(ROOT / "data" / "sample_genesys.jsonl", truth=False))
    assert (run.headline["own_key"], run.headline["own_mode"], run.headline["own_window_s"]) == (
        own.key, own.mode, own.window_s)
    executed = nbformat.read(run.output, as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert f"Recommendation for ../data/sample_genesys.jsonl: {own.headline()}" in printed


@pytest.mark.aws
def test_executed_notebooks_hold_no_aws_secrets(runs):
    assert len(runs) == 6
    for run in runs.values():
        assert secrets_in(nbformat.read(run.output, as_version=4)) == [], run.notebook


def test_secret_scan_finds_planted_keys_but_not_images():
    planted = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
    planted.cells[0].outputs = [
        nbformat.v4.new_output("stream", text="key AKIAABCDEFGHIJKLMNOP\n"),
        nbformat.v4.new_output("display_data", data={
            "text/plain": "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "image/png": "iVBORw0KGgo" + "A" * 40}),
    ]
    found = secrets_in(planted)
    assert [f.split(":")[0] for f in found] == ["AWS access key id", "secret key setting",
                                                 "40-char base64 secret"]

"""The headless runner behind ``dedup workbench`` / ``make run``, on throwaway notebooks."""

from __future__ import annotations

import json

import matplotlib
import nbformat
import pytest

from dedup.cli import main
from dedup.errors import ConfigurationError
from dedup.workbench import (
    FIGURES_DIR_ENV,
    NOTEBOOK_ENV,
    figure_problems,
    find_notebooks,
    parse_parameters,
    publish,
    run_notebooks,
)

matplotlib.use("Agg")

GOOD_CELLS = [
    "import matplotlib.pyplot as plt\nfrom dedup.workbench import headline, publish",
    "fig, ax = plt.subplots()\nax.plot(range(n))\nax.set_title('line')\npublish(fig, 'line')",
    "headline(n=n, label=label)",
]
BAD_CELLS = ["doubled = n * 2", "assert doubled > 100, f'doubled is only {doubled}'"]


def test_when_a_notebook_fails_then_the_summary_names_the_cell_and_the_exit_code_is_1(
    write_notebook, tmp_path, capsys
):
    write_notebook("00_good", "n = 3\nlabel = 'default'", GOOD_CELLS)
    write_notebook("01_bad", "n = 3", BAD_CELLS)
    out = tmp_path / "build"

    rc = main(["workbench", "--notebooks", str(tmp_path / "notebooks"), "--out", str(out), "-p", "n=7"])

    printed = capsys.readouterr()
    assert rc == 1
    rows = {line.split()[0]: line.split() for line in printed.out.splitlines() if line.startswith("0")}
    assert rows["00_good"][1] == "ok" and rows["01_bad"][1] == "FAILED"
    assert "label=default, n=7" in printed.out, "the injected n=7 reached the headline"
    assert "1 failed" in printed.out
    assert "AssertionError: doubled is only 14" in printed.err
    assert "assert doubled > 100" in printed.err, "the failing cell's source is shown"
    assert "\x1b[" not in printed.err, "tracebacks are shown without terminal colour codes"
    assert (out / "figures" / "00_good-line.png").stat().st_size > 0
    assert (out / "notebooks" / "01_bad.ipynb").exists(), "the failed notebook is kept for inspection"
    summary = {r["notebook"]: r for r in json.loads((out / "workbench.json").read_text())}
    assert summary["00_good"]["headline"] == {"n": 7, "label": "default"}
    assert summary["00_good"]["figures"] == ["00_good-line.png"]
    assert summary["01_bad"]["status"] == "FAILED" and "doubled is only 14" in summary["01_bad"]["error"]


def test_when_all_notebooks_pass_then_the_exit_code_is_0_and_only_selected_ones_run(
    write_notebook, tmp_path, capsys
):
    write_notebook("00_good", "n = 2\nlabel = 'x'", GOOD_CELLS)
    write_notebook("01_bad", "n = 3", BAD_CELLS)

    rc = main(["workbench", "--notebooks", str(tmp_path / "notebooks"), "--out", str(tmp_path / "b"),
               "--only", "00", "-p", "label=hello world"])

    printed = capsys.readouterr().out
    assert rc == 0
    assert "00_good" in printed and "01_bad" not in printed
    assert "label=hello world, n=2" in printed


def test_when_no_selected_notebook_declares_a_parameter_then_it_is_a_clear_error(
    write_notebook, tmp_path, capsys
):
    write_notebook("00_good", "n = 2\nlabel = 'x'", GOOD_CELLS)

    rc = main(["workbench", "--notebooks", str(tmp_path / "notebooks"), "--out", str(tmp_path / "b"),
               "-p", "windw_s=60"])

    assert rc == 2
    assert "no selected notebook has a parameter named windw_s" in capsys.readouterr().err


def test_when_only_matches_no_notebook_then_the_error_lists_the_notebooks(write_notebook, tmp_path):
    write_notebook("00_good", "n = 2", [])
    with pytest.raises(ConfigurationError, match=r"no notebook matches 07 .*00_good"):
        find_notebooks(tmp_path / "notebooks", ["07"])


def test_parameter_values_are_python_literals_or_else_strings():
    assert parse_parameters(["window_s=600", "ratio=0.5", "flag=True", "url=None",
                             "cache=redis://:pw@h:6379/0", "mode=sliding"]) == {
        "window_s": 600, "ratio": 0.5, "flag": True, "url": None,
        "cache": "redis://:pw@h:6379/0", "mode": "sliding"}
    with pytest.raises(ConfigurationError, match="not NAME=VALUE"):
        parse_parameters(["window_s"])


FIGURE_CELLS = [
    "import matplotlib.pyplot as plt\nfrom dedup.plots import InlineFigure\n"
    "from dedup.workbench import publish",
    "for i in range(n):\n    fig, ax = plt.subplots()\n    ax.set_title(f'loop {i}')\n"
    "    publish(fig, f'loop{i}')",
    "bare = InlineFigure()\nbare.subplots().plot([1, 2])\nbare.suptitle('bare')\nbare",
]


def test_figures_made_in_a_loop_and_bare_figures_are_shown_as_images(write_notebook, tmp_path):
    write_notebook("00_figures", "n = 3", FIGURE_CELLS)

    (run,) = run_notebooks(tmp_path / "notebooks", tmp_path / "b", echo=lambda line: None)

    assert run.ok, run.error
    assert [f.name for f in run.figures] == [f"00_figures-loop{i}.png" for i in range(3)]
    executed = nbformat.read(run.output, as_version=4)
    loop, bare = executed.cells[3], executed.cells[4]
    assert [o.data["text/plain"] for o in loop.outputs] == [f"[figure: loop {i}]" for i in range(3)]
    assert all(o.data["image/png"] for o in loop.outputs)
    assert "image/png" in bare.outputs[0].data and bare.outputs[0].data["text/plain"] == "[figure: bare]"
    assert figure_problems(executed, len(run.figures)) == []


def test_when_a_figure_shows_as_text_or_a_published_one_has_no_image_then_the_run_fails(
    write_notebook, tmp_path
):
    write_notebook("00_text", "n = 1", ["from matplotlib.figure import Figure\nprint(repr(Figure()))"])

    (run,) = run_notebooks(tmp_path / "notebooks", tmp_path / "b", echo=lambda line: None)

    assert not run.ok and run.status == "FAILED"
    assert "cell 2 shows a figure as text: <Figure size 640x480 with 0 Axes>" in run.error
    executed = nbformat.read(run.output, as_version=4)
    assert figure_problems(executed, published=2)[-1] == "2 figures published but only 0 shown as images"


def test_publish_saves_a_png_only_when_the_runner_says_where(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.delenv(FIGURES_DIR_ENV, raising=False)
    fig, _ = plt.subplots()
    assert publish(fig, "alone") is None, "publish shows the figure itself: a returned one would show twice"
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setenv(FIGURES_DIR_ENV, str(tmp_path / "figs"))
    monkeypatch.setenv(NOTEBOOK_ENV, "04_window_tuning")
    fig, _ = plt.subplots()
    publish(fig, "caught_vs_window")
    assert (tmp_path / "figs" / "04_window_tuning-caught_vs_window.png").stat().st_size > 0
    with pytest.raises(ConfigurationError, match="figure name"):
        publish(fig, "../escape")


def test_controls_redraw_with_the_current_values_on_every_change():
    import ipywidgets
    import matplotlib.pyplot as plt

    from dedup.workbench import controls

    calls = []

    def redraw(window_s, mode):
        calls.append((window_s, mode))
        fig, _ = plt.subplots()
        return [fig]

    window = ipywidgets.IntSlider(value=60, min=1, max=600)
    mode = ipywidgets.Dropdown(options=["fixed", "sliding"], value="fixed")
    box = controls(redraw, window_s=window, mode=mode)

    assert calls == [], "nothing is drawn until a control moves (the static figures come first)"
    window.value = 300
    mode.value = "sliding"
    assert calls == [(300, "fixed"), (300, "sliding")]
    assert box.children[0].children == (window, mode)


def test_mark_windows_draws_one_labelled_line_per_window_on_every_axes():
    from matplotlib.figure import Figure

    from dedup.workbench import mark_windows

    fig = Figure()
    axes = fig.subplots(1, 2)
    mark_windows(fig, {"your window": 300.0, "recommended": 3600.0})

    for ax in axes:
        assert [line.get_xdata()[0] for line in ax.lines] == [300.0, 3600.0]
        assert [t.get_text() for t in ax.texts] == ["your window", "recommended"]

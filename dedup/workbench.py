"""The notebook workbench: run every notebook headless, and the two helpers notebooks call.

Notebooks call :func:`publish` for each figure worth keeping and :func:`headline`
for the numbers that summarise them. Opened in JupyterLab, both only display.
Under :func:`run_notebooks` (``dedup workbench``, ``make run``), ``publish`` also
saves the figure as a PNG (the runner says where through :data:`FIGURES_DIR_ENV`)
and the headline numbers, carried in the executed notebook under their own MIME
type, end up in the summary table. Nothing else passes between runner and
notebook, so a notebook runs the same under papermill, nbmake or a person.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dedup.environ import overridden
from dedup.errors import ConfigurationError
from dedup.plots import INLINE_DPI as FIGURE_DPI

#: Directory where :func:`publish` saves PNGs; unset outside the runner.
FIGURES_DIR_ENV = "DEDUP_WORKBENCH_FIGURES"
#: The running notebook's file stem, used to prefix its figure files.
NOTEBOOK_ENV = "DEDUP_WORKBENCH_NOTEBOOK"
#: MIME type of the headline numbers a notebook displays (read back from its outputs).
HEADLINE_MIME = "application/vnd.dedup.headline+json"
#: Notebooks the runner executes: ``NN_name.ipynb``.
NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[\w-]+\.ipynb$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TRACEBACK_LINES = 12


# ---- called from notebooks ---------------------------------------------------


def publish(fig: Any, name: str) -> None:
    """Show ``fig`` inline as a PNG here and now; under the runner, also save ``<notebook>-<name>.png``.

    Showing it from the call, not as the cell's value, puts figures made in a
    loop in the notebook too. The figure is detached from pyplot so that the
    inline backend does not show it a second time when the cell ends.
    """
    if not re.fullmatch(r"[\w-]+", name):
        raise ConfigurationError(f"figure name {name!r} must be letters, digits, '_' or '-'")
    target = os.environ.get(FIGURES_DIR_ENV)
    if target:
        stem = os.environ.get(NOTEBOOK_ENV, "notebook")
        path = Path(target) / f"{stem}-{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=FIGURE_DPI, bbox_inches="tight")
    show(fig)


def show(fig: Any) -> None:
    """Display ``fig`` as a PNG image (never as ``<Figure size ...>`` text) and close it in pyplot.

    Works for pyplot figures and bare ``Figure`` objects alike, in a cell or
    inside an ipywidgets ``Output``. Outside IPython (a script) it only closes.
    """
    import matplotlib.pyplot as plt
    from IPython import get_ipython
    from IPython.display import display

    from dedup.plots import png_bundle

    if get_ipython() is not None:
        display(png_bundle(fig, dpi=FIGURE_DPI), raw=True)
    plt.close(fig)


def headline(**numbers: Any) -> None:
    """Display the notebook's headline numbers; the runner lists them in its summary.

    Values must be JSON scalars (numbers, strings, booleans). Several calls merge,
    a later value winning.
    """
    for name, value in numbers.items():
        if not isinstance(value, int | float | str | bool):
            raise ConfigurationError(f"headline {name}={value!r} must be a number, string or boolean")
    from IPython.display import display

    text = "  ".join(f"{k} = {_fmt(v)}" for k, v in numbers.items())
    display({HEADLINE_MIME: dict(numbers), "text/plain": f"headline: {text}"}, raw=True)


def mark_windows(fig: Any, windows_s: Mapping[str, float]) -> Any:
    """Draw a labelled vertical line at each window (label -> seconds) on every axes of ``fig``.

    For figures whose x axis is the window or a delay, e.g. to show your current
    window next to the recommended one. Returns ``fig``.
    """
    styles = ("-", "--", ":", "-.")
    for ax in fig.axes:
        for i, (label, x_s) in enumerate(windows_s.items()):
            ax.axvline(x_s, color="black", linestyle=styles[i % len(styles)], linewidth=1)
            ax.annotate(label, xy=(x_s, 0), xycoords=("data", "axes fraction"), xytext=(-3, 4),
                        textcoords="offset points", rotation=90, ha="right", va="bottom", fontsize="small")
    return fig


def controls(redraw: Callable[..., Any], **widgets: Any) -> Any:
    """ipywidgets ``widgets`` above an output area that shows ``redraw(**values)`` after every change.

    ``redraw`` returns a figure or a list of figures, shown as PNG images
    (:func:`show`); what it prints appears above them. The area starts empty: a
    notebook draws its static figures for the default parameters itself, so that
    they are there when it runs headless (papermill, nbmake), where nothing
    changes a control; in JupyterLab, moving a control redraws below it.
    """
    import ipywidgets

    output = ipywidgets.Output()

    def update(_change: Any = None) -> None:
        values = {name: widget.value for name, widget in widgets.items()}
        with output:
            output.clear_output(wait=True)
            drawn = redraw(**values)
            for fig in drawn if isinstance(drawn, list | tuple) else [drawn]:
                show(fig)

    for widget in widgets.values():
        widget.observe(update, names="value")
    return ipywidgets.VBox([ipywidgets.HBox(list(widgets.values())), output])


def assumed_tail(config: Any) -> str:
    """What a generated trace assumes, in a few words: size, seed and the late-duplicate tail.

    Notebooks put it in their headline next to a recommended window, so that the
    summary can say what each window rests on.
    """
    from dedup.analysis import duration_label

    d = config.duplicates
    return (f"n={config.n_events} seed={config.seed}, late {100 * d.late_p:g}% in "
            f"{duration_label(d.late_min_s)}-{duration_label(d.late_max_s)}")


def window_notes(runs: Sequence[NotebookRun]) -> list[str]:
    """Lines under the summary: every recommended window in the headlines, and what it rests on."""
    from dedup.analysis import duration_label

    found = [(r, name, value) for r in runs for name, value in r.headline.items()
             if name.endswith("window_s") and not name.startswith("your_") and isinstance(value, int | float)]
    if not found:
        return []
    lines = ["Recommended windows, and what each rests on:"]
    for run, name, value in found:
        basis = ("your dump's observed repeat gaps (no ground truth)" if name.startswith("own_")
                 else f"generated trace {run.headline.get('assumed_trace', '(not stated)')}")
        lines.append(f"  {run.notebook.split('_')[0]} {name} = {duration_label(float(value))}: {basis}")
    if len({v for _, n, v in found if not n.startswith("own_")}) > 1:
        lines.append("  They differ where the platform (genesys / nice), the trace (size, seed) or the "
                     "assumed late tail differs: a window is measured on its own trace.")
    lines.append("  Windows on generated traces rest on the assumed late-duplicate share and delay range "
                 "(parameters late_p, late_min_s, late_max_s), not on a measurement: notebook 04 shows how "
                 "the window moves with them; `dedup analyze DUMP` recommends from your own traffic.")
    return lines


def figure_problems(notebook: Mapping[str, Any], published: int = 0) -> list[str]:
    """What keeps an executed notebook's figures from being seen: figures shown as text, missing images.

    Any output reading ``<Figure size ...>`` is a figure Jupyter could not
    draw; ``published`` (the PNGs :func:`publish` saved) must each have an
    ``image/png`` output too.
    """
    problems, images = [], 0
    for index, cell in enumerate(notebook.get("cells", [])):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = output.get("data", {})
            images += "image/png" in data
            text = "".join(output.get("text", "")) + "".join(data.get("text/plain", ""))
            if "<Figure size" in text:
                shown = text[text.index("<Figure size"):].split(">")[0] + ">"
                problems.append(f"cell {index} shows a figure as text: {shown}")
    if images < published:
        problems.append(f"{published} figures published but only {images} shown as images")
    return problems


def headlines_of(notebook: Mapping[str, Any]) -> dict[str, Any]:
    """The headline numbers an executed notebook displayed, merged in cell order."""
    merged: dict[str, Any] = {}
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = output.get("data", {})
            if HEADLINE_MIME in data:
                merged.update(data[HEADLINE_MIME])
    return merged


# ---- the runner ----------------------------------------------------------------


@dataclass
class NotebookRun:
    """The outcome of executing one notebook."""

    notebook: str
    ok: bool
    seconds: float
    output: Path
    headline: dict[str, Any] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    error: str | None = None

    @property
    def status(self) -> str:
        return "ok" if self.ok else "FAILED"


def find_notebooks(root: Path, only: Sequence[str] = ()) -> list[Path]:
    """The ``NN_*.ipynb`` notebooks under ``root``, in order; ``only`` selects by number or name."""
    found = sorted(p for p in Path(root).glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))
    if not only:
        return found
    chosen = [p for p in found if any(_selects(sel, p) for sel in only)]
    unmatched = [sel for sel in only if not any(_selects(sel, p) for p in found)]
    if unmatched:
        names = ", ".join(p.stem for p in found) or "none"
        raise ConfigurationError(f"no notebook matches {', '.join(unmatched)} (notebooks: {names})")
    return chosen


def parse_parameters(pairs: Sequence[str]) -> dict[str, Any]:
    """``["window_s=600", "cache=fakeredis"]`` -> ``{"window_s": 600, "cache": "fakeredis"}``.

    Values are Python literals when they parse as one (numbers, ``True``, ``None``,
    lists), else strings, so URLs and names need no quoting.
    """
    parsed: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ConfigurationError(f"parameter {pair!r} is not NAME=VALUE")
        try:
            parsed[name.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed[name.strip()] = text
    return parsed


def run_notebooks(
    root: Path = Path("notebooks"),
    out: Path = Path("build"),
    *,
    only: Sequence[str] = (),
    parameters: Mapping[str, Any] | None = None,
    cell_timeout_s: float = 300.0,
    echo: Callable[[str], None] = print,
) -> list[NotebookRun]:
    """Execute the notebooks with papermill into ``out/notebooks``, figures into ``out/figures``.

    Each notebook runs in its own kernel (the one named in its metadata) with
    ``root`` as working directory. ``parameters`` override the defaults of the
    notebooks that declare them; a name no selected notebook declares is an error.
    A notebook fails when a cell raises, or when a figure would not be seen
    (:func:`figure_problems`). A failing notebook does not stop the others.
    """
    import nbformat
    import papermill

    logging.getLogger("papermill").setLevel(logging.WARNING)
    root, out = Path(root).resolve(), Path(out).resolve()
    notebooks = find_notebooks(root, only)
    if not notebooks:
        raise ConfigurationError(f"no NN_*.ipynb notebooks in {root}")
    parameters = dict(parameters or {})
    declared = {p: set(papermill.inspect_notebook(str(p))) for p in notebooks}
    unknown = set(parameters) - set().union(*declared.values())
    if unknown:
        raise ConfigurationError(
            f"no selected notebook has a parameter named {', '.join(sorted(unknown))}"
        )
    figures_dir = out / "figures"
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    runs = []
    for path in notebooks:
        output = out / "notebooks" / path.name
        mine = {k: v for k, v in parameters.items() if k in declared[path]}
        echo(f"running {path.stem}" + (f" with {_fmt_params(mine)}" if mine else ""))
        for stale in figures_dir.glob(f"{path.stem}-*.png"):
            stale.unlink()
        started = time.monotonic()
        error = None
        with overridden({FIGURES_DIR_ENV: str(figures_dir), NOTEBOOK_ENV: path.stem}):
            try:
                papermill.execute_notebook(
                    str(path), str(output), parameters=mine, cwd=str(root), progress_bar=False,
                    execution_timeout=cell_timeout_s, extra_arguments=["--IPKernelApp.log_level=ERROR"],
                )
            except papermill.PapermillExecutionError as exc:
                error = describe_failure(exc)
            except Exception as exc:  # the kernel died, timed out, or could not start
                error = f"{type(exc).__name__}: {_ANSI.sub('', str(exc)).strip()}"
        seconds = time.monotonic() - started
        executed = nbformat.read(output, as_version=4) if output.exists() else {}
        figures = sorted(figures_dir.glob(f"{path.stem}-*.png"))
        problems = figure_problems(executed, len(figures)) if error is None else []
        if problems:
            error = "figures a reader would not see:\n" + "\n".join(problems)
        run = NotebookRun(
            notebook=path.stem, ok=error is None, seconds=seconds, output=output,
            headline=headlines_of(executed), error=error, figures=figures,
        )
        echo(f"  {run.status} in {seconds:.1f} s")
        runs.append(run)
    return runs


def describe_failure(exc: Any) -> str:
    """A readable account of a failed cell: where, the code, the error, the last frames."""
    source = "\n".join(str(exc.source).strip().splitlines()[:8])
    frames = [_ANSI.sub("", line) for line in (exc.traceback or [])]
    tail = "\n".join("\n".join(frames).strip().splitlines()[-_TRACEBACK_LINES:])
    return (
        f"cell {exc.cell_index} (execution count {exc.exec_count}) raised {exc.ename}: {exc.evalue}\n"
        f"--- cell source ---\n{source}\n--- traceback (last lines) ---\n{tail}"
    )


def summary_table(runs: Sequence[NotebookRun]) -> str:
    """A plain-text table: notebook, status, seconds, figures, headline numbers."""
    header = ("notebook", "status", "seconds", "figures", "headline")
    rows = [
        (r.notebook, r.status, f"{r.seconds:.1f}", str(len(r.figures)),
         ", ".join(f"{k}={_fmt(v)}" for k, v in r.headline.items()) or "-")
        for r in runs
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    numeric = (2, 3)
    lines = []
    for row in (header, *rows):
        cells = [row[i].rjust(w) if i in numeric else row[i].ljust(w) for i, w in enumerate(widths)]
        lines.append("  ".join([*cells, row[-1]]))
    lines.insert(1, "-" * max(len(line) for line in lines))
    total = sum(r.seconds for r in runs)
    failed = sum(not r.ok for r in runs)
    lines.append(f"{len(runs)} notebooks, {failed} failed, {total:.1f} s")
    return "\n".join(lines)


def write_summary_json(runs: Sequence[NotebookRun], path: Path) -> None:
    """Save the runs as JSON (notebook, status, seconds, headline, figures, error)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([
        {"notebook": r.notebook, "status": r.status, "seconds": round(r.seconds, 2),
         "headline": r.headline, "figures": [f.name for f in r.figures], "error": r.error}
        for r in runs
    ], indent=2) + "\n")


# ---- helpers -------------------------------------------------------------------


def _selects(selector: str, path: Path) -> bool:
    return path.name.startswith(f"{selector}_") or path.stem == selector or selector == path.name


def _fmt(value: Any) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return str(value)


def _fmt_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())

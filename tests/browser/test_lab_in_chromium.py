"""Notebook 04 in JupyterLab in a real browser: figures are images, the window control redraws them.

What a person sees, not what a file holds: Chromium opens the notebook in
JupyterLab, runs every cell, drags the window slider, and the test reads the
page. Screenshots go to ``build/screenshots/`` (``make lab-check``).
"""

from __future__ import annotations

import re

import pytest
from conftest import SCREENSHOTS

from dedup.analysis import duration_label

NOTEBOOK = "04_window_tuning.ipynb"
RUN_ALL_TIMEOUT_MS = 90_000
REDRAW_TIMEOUT_MS = 30_000


@pytest.fixture
def page(lab, browser):
    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.goto(lab.notebook_url(NOTEBOOK))
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    # The kernel has started and is idle (the status bar reads "Python 3 (ipykernel) | Idle").
    page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\| Idle")).first.wait_for(timeout=60_000)
    yield page
    if not SCREENSHOTS.joinpath("04-after-moving-the-window.png").exists():
        _shot(page, "04-failure.png")  # what the page showed when the test stopped
    page.close()


def _run_all(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item:not(.lm-mod-disabled)", has_text=re.compile(r"^Run All Cells$")).click()
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
    # Every code cell numbered, none pending or running ("[*]").
    page.wait_for_function(
        """() => {
            const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent);
            return p.length > 0 && p.every(t => /\\[\\d+\\]/.test(t));
        }""",
        timeout=RUN_ALL_TIMEOUT_MS,
    )
    assert prompts.count() > 5


def _errors_shown(page) -> list[str]:
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'],"
                          " .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
    texts = [errors.nth(i).inner_text()[:300] for i in range(errors.count())]
    return [t for t in texts if "Traceback" in t or "Error" in t]


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name))


def test_window_tuning_figures_are_images_and_the_window_control_redraws_them(page):
    for stale in SCREENSHOTS.glob("04-*.png"):
        stale.unlink()
    _run_all(page)
    notebook = page.locator(".jp-Notebook")
    static_images = notebook.locator(".jp-OutputArea-output img")
    assert static_images.count() >= 2, "the published figures show as images"
    assert "<Figure size" not in notebook.inner_text()
    assert _errors_shown(page) == []
    _shot(page, "04-after-run-all.png")

    widget = notebook.locator(".widget-vbox").last
    widget.scroll_into_view_if_needed()
    redrawn = widget.locator(".widget-output img")
    assert redrawn.count() == 0, "the control area starts empty: nothing has moved yet"
    slider = widget.locator(".widget-slider").first
    readout = widget.locator(".widget-readout").first
    before = readout.inner_text()
    handle = slider.locator(".noUi-handle")
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 120, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    after = readout.inner_text()
    assert after != before, "the slider moved"
    # The redraw for the released value prints it (as a duration) above its two figures.
    chosen = f"fixed {duration_label(float(after))}:"
    output = widget.locator(".widget-output")
    output.get_by_text(chosen).wait_for(timeout=REDRAW_TIMEOUT_MS)
    page.wait_for_function("() => document.querySelectorAll('.widget-output img').length >= 2",
                           timeout=REDRAW_TIMEOUT_MS)
    assert redrawn.count() == 2, "both figures redrawn as images"
    for i in range(2):
        assert redrawn.nth(i).evaluate("img => img.naturalWidth") > 100, "the image decoded"
    output_text = output.inner_text()
    assert "<Figure size" not in output_text
    assert "caught" in output_text, "the redraw prints the numbers at the chosen window"
    assert _errors_shown(page) == []
    widget.scroll_into_view_if_needed()
    _shot(page, "04-after-moving-the-window.png")

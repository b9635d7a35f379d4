"""index.html in a real headless Chromium: the page loads from disk, its script runs without
errors, and a screenshot shows the table and figures.

Skipped only when no chromium binary is found AND MELANOMA_REQUIRE_CHROMIUM is unset
(CI installs Debian's chromium and sets it, so there a missing browser fails).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from melanoma.evaluation.rows import EvalSettings
from melanoma.reporting import run_report as report

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium() -> str:
    found = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                  if p), None)
    if found is None:
        if os.environ.get("MELANOMA_REQUIRE_CHROMIUM"):
            pytest.fail("MELANOMA_REQUIRE_CHROMIUM is set but no chromium binary is on PATH")
        pytest.skip("chromium not installed (apt-get install chromium); "
                    "set MELANOMA_REQUIRE_CHROMIUM=1 to make this a failure")
    return found


def browse(binary: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def test_index_html_renders_in_headless_chromium(fake_predictions, tmp_path):
    binary = chromium()
    out = tmp_path / "run"
    report.write_run(out, fake_predictions(200), {}, {}, {"config": {"name": "browser"}, "seed": 1},
                     fake_predictions(80, seed=1), EvalSettings(seed=1, bootstrap_resamples=100),
                     set(fake_predictions(200)["file"].unique()[::2]), {"n_test": 200})
    url = (out / "index.html").resolve().as_uri()
    dom = browse(binary, tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-js="ok"' in body and "data-js-error" not in body, body
    assert dom.stdout.count("data:image/png;base64,") >= 10  # every figure embedded
    assert "Leakage audit" in dom.stdout and "Provenance" in dom.stdout

    shot = tmp_path / "index.png"
    result = browse(binary, tmp_path, f"--screenshot={shot}", "--window-size=1400,2000",
                    "--hide-scrollbars", url)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1400, 2000)
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert shot.stat().st_size > 50_000  # a blank page compresses to a few kB
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.01  # text, table lines, plots
    if os.environ.get("MELANOMA_SCREENSHOT_DIR"):  # keep it to look at
        shutil.copy(shot, os.environ["MELANOMA_SCREENSHOT_DIR"])


MEASURE = """<script>
function measure(){var d=document.documentElement,b=document.body;
 b.setAttribute('data-scroll-width',String(d.scrollWidth));
 b.setAttribute('data-inner-width',String(window.innerWidth));}
measure();window.addEventListener('load',measure);
</script></body>"""


@pytest.mark.parametrize("width", [1280, 1920])
def test_page_does_not_scroll_sideways(fake_predictions, write_images, default_run_shape, width,
                                       tmp_path):
    """The default run's shape (five long variant names, clean rows, audit, galleries with
    images): at 1280 and 1920 px the page is no wider than the window (only the wide table's
    own box scrolls). The measurement is written onto <body> by a script added to a copy."""
    LONG, AUDIT = default_run_shape

    binary = chromium()
    root = tmp_path / "data"
    test = fake_predictions(200, LONG)
    write_images(root, test["file"])
    out = tmp_path / "run"
    report.write_run(out, test, {n: {"spec": "x / 255 then x - mean(image) " * 3} for n in LONG},
                     {}, {"config": {"name": "browser"}, "seed": 1, "data": {"root": str(root)}},
                     fake_predictions(80, LONG, seed=1), EvalSettings(seed=1, bootstrap_resamples=100),
                     set(test["file"].unique()[::2]), AUDIT)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "<h2>Error galleries</h2>" in page
    measured = out / "measured.html"
    measured.write_text(page.replace("</body>", MEASURE), encoding="utf-8")
    dom = browse(binary, tmp_path, f"--window-size={width},1000", "--virtual-time-budget=5000",
                 "--dump-dom", measured.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    scroll = int(re.search(r'data-scroll-width="(\d+)"', body).group(1))
    inner = int(re.search(r'data-inner-width="(\d+)"', body).group(1))
    assert inner == width and 'data-js="ok"' in body, body
    assert scroll <= inner, (scroll, inner)
    if os.environ.get("MELANOMA_SCREENSHOT_DIR"):  # keep one to look at
        shot = tmp_path / f"index_{width}.png"
        browse(binary, tmp_path, f"--screenshot={shot}", f"--window-size={width},3000",
               "--hide-scrollbars", (out / "index.html").resolve().as_uri())
        shutil.copy(shot, os.environ["MELANOMA_SCREENSHOT_DIR"])

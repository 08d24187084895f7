"""The offline HTML dashboards: valid self-contained pages, escaped names, and a headless
Chromium screenshot that shows the plotly heatmap (and that a page without plotly.js fails).

Chromium missing: the screenshot tests skip, unless ATTRIBUTOR_REQUIRE_CHROMIUM=1 (CI).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from attributor.provenance.analysis import ModelInfo, SimilarityResults, analyze
from attributor.provenance.dashboard import PAGES, heatmap_figure, model_order, render_pages

FAMILIES = {"llama": ["Chat", "Base", "Fine-tuned", "Quantized"], "qwen": ["Base", "Chat", "Pruned"],
            "mistral": ["Distilled", "Base"], "solo": ["Base"]}


def build_analysis(evil_name: str = "<script>alert(1)</script> & co"):
    rng = np.random.default_rng(7)
    infos = [ModelInfo(f"{f}-{t}", f, t, f"{f.title()} {t}") for f, types in FAMILIES.items() for t in types]
    infos[-1] = ModelInfo("solo-Base", "solo", "Base", evil_name)
    n = len(infos)
    m = rng.uniform(0.0, 0.5, (n, n))
    same = np.array([[a.family == b.family for b in infos] for a in infos])
    m = (m + m.T) / 2 + 0.45 * same
    np.fill_diagonal(m, 1.0)
    m[0, 5] = m[5, 0] = np.nan  # not comparable
    results = SimilarityResults(tuple(i.model_id for i in infos), {"input_output": {"cosine": m}})
    return analyze(results, infos, "input_output", "cosine")


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dashboards")
    paths = {}
    for name, text in render_pages(build_analysis()).items():
        (folder / name).write_text(text, encoding="utf-8")
        paths[name] = folder / name
    return paths


# -- the HTML -----------------------------------------------------------------------------------
def test_pages_are_self_contained_html5_that_work_offline(pages):
    from plotly.offline import get_plotlyjs

    library = get_plotlyjs()
    assert sorted(pages) == sorted(PAGES)
    for name, path in pages.items():
        html = path.read_text(encoding="utf-8")
        assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
        assert re.search(r"<title>[^<]*input_output / cosine</title>", html), name
        assert html.count(library) == 1, name  # the library embedded exactly once
        external = re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*[\"']?(https?:)?//", html, re.I)
        assert external is None, (name, external and external.group(0))
        assert "cdn.plot.ly" not in html.replace(library, "")


def test_names_are_escaped_everywhere(pages):
    from plotly.offline import get_plotlyjs

    for name, path in pages.items():
        html = path.read_text(encoding="utf-8").replace(get_plotlyjs(), "")
        assert "<script>alert(1)" not in html, name
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in pages["dashboard.html"].read_text()


def test_heatmap_orders_by_family_then_type_and_leaves_nulls_as_gaps():
    analysis = build_analysis()
    order = [analysis.models[i] for i in model_order(analysis.models)]
    assert [(m.family, m.model_type) for m in order][:4] == [("llama", "Base"), ("llama", "Chat"),
                                                             ("llama", "Fine-tuned"), ("llama", "Quantized")]
    assert [m.family for m in order] == sorted(m.family for m in order)
    trace = heatmap_figure(analysis).data[0]
    assert sum(v is None for row in trace.z for v in row) == 2
    ids = [m.model_id for m in order]
    # the colour is the quantile of the pair; the hover's customdata keeps the similarity itself
    assert trace.customdata[ids.index("llama-Base")][ids.index("llama-Chat")] == pytest.approx(analysis.matrix[1, 0])
    assert sum(v is None for row in trace.customdata for v in row) == 2
    assert "Llama Base" in trace.text[0][1] and "llama, Chat" in trace.text[0][1]  # hover: both models


# -- the screenshot --------------------------------------------------------------------------
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("ATTRIBUTOR_REQUIRE_CHROMIUM") == "1":
        pytest.fail("ATTRIBUTOR_REQUIRE_CHROMIUM=1 but no chromium / chromium-browser / google-chrome on PATH")
    pytest.skip("no headless Chromium on PATH (apt-get install -y chromium)")


def screenshot(page: Path, png: Path) -> np.ndarray:
    """Render ``page`` in headless Chromium at 1200 x 800 and return the RGB pixels."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as profile:
        run = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
             "--disable-dev-shm-usage",
             f"--user-data-dir={profile}", "--window-size=1200,800", "--virtual-time-budget=5000",
             "--hide-scrollbars", f"--screenshot={png}", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=90)
    assert png.is_file(), f"chromium wrote no screenshot (exit {run.returncode}): {run.stderr[-2000:]}"
    with Image.open(png) as image:
        return np.asarray(image.convert("RGB")).astype(np.int16)


def drawn(pixels: np.ndarray) -> tuple[float, float, int]:
    """(fraction of non-white pixels, fraction of coloured pixels, distinct coloured shades).

    Text, rules and table borders are grey (no saturation); the plotly heatmap and boxes are
    coloured, so a page whose plotly.js failed to load has (almost) no coloured pixel.
    """
    non_white = float((pixels.min(axis=2) < 245).mean())
    coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 60
    shades = len(np.unique((pixels[coloured] // 16).reshape(-1, 3), axis=0))
    return non_white, float(coloured.mean()), shades


def looks_drawn(pixels: np.ndarray) -> bool:
    non_white, coloured, shades = drawn(pixels)
    return non_white > 0.05 and coloured > 0.03 and shades >= 12


@pytest.mark.parametrize("name", ["dashboard.html", "heatmap.html"])
def test_page_screenshot_shows_the_heatmap(pages, tmp_path, name):
    pixels = screenshot(pages[name], tmp_path / "shot.png")
    assert pixels.shape == (800, 1200, 3)
    assert looks_drawn(pixels), f"{name} looks blank: (non-white, coloured, shades) = {drawn(pixels)}"


def test_page_without_plotly_counts_as_blank(pages, tmp_path):
    from plotly.offline import get_plotlyjs

    broken = tmp_path / "broken.html"
    broken.write_text(pages["dashboard.html"].read_text(encoding="utf-8").replace(get_plotlyjs(), ""),
                      encoding="utf-8")
    pixels = screenshot(broken, tmp_path / "broken.png")
    assert not looks_drawn(pixels), drawn(pixels)

"""attributor.reports.html / markdown: self-contained HTML and a Markdown summary."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attributor.errors import DataError
from attributor.reports import (
    Section,
    Table,
    plot_self_influence_by_group,
    write_html_report,
    write_markdown_report,
)


@pytest.fixture()
def png(tmp_path) -> Path:
    values = np.random.default_rng(0).lognormal(size=60)
    groups = ["clean"] * 50 + ["flipped"] * 10
    return plot_self_influence_by_group(values, groups, tmp_path / "plots" / "self influence.png")


def _sections(png: Path) -> list[Section]:
    table = Table(
        caption="Detection <AUC>",
        columns=["method", "auc", "n"],
        rows=[["trak <script>alert(1)</script>", 0.9123456, 1797], ["a|b", np.float32(1.0e-7), np.int64(3)]],
    )
    text = "First paragraph with <script>alert('x')</script>.\n\nSecond paragraph & more."
    return [Section("Self-influence", text, images=[png], tables=[table]), Section("Empty")]


def test_html_is_self_contained_and_escaped(tmp_path, png):
    out = write_html_report(tmp_path / "out" / "report.html", "Digits <demo>", _sections(png))
    assert out == tmp_path / "out" / "report.html"
    html = out.read_text(encoding="utf-8")
    # the image is embedded, byte for byte
    match = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert match is not None
    assert base64.b64decode(match.group(1)) == png.read_bytes()
    assert "http://" not in html and "https://" not in html
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "<title>Digits &lt;demo&gt;</title>" in html
    assert html.count("<p>") >= 2  # paragraphs split on the blank line
    assert "<td class=\"num\">0.9123</td>" in html  # 4 significant digits
    assert "1e-07" in html and ">1797<" in html
    assert not list(out.parent.glob("*.tmp"))


def test_html_missing_image_is_refused(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        write_html_report(tmp_path / "r.html", "t", [Section("s", images=[tmp_path / "nope.png"])])
    assert not (tmp_path / "r.html").exists()


def test_table_row_length_is_checked():
    with pytest.raises(DataError, match="row 1 has 1 cells"):
        Table("t", ["a", "b"], [[1, 2], [3]])


def test_markdown_table_and_relative_image(tmp_path, png):
    out = write_markdown_report(tmp_path / "report.md", "Digits demo", _sections(png))
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Digits demo\n")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links == ["plots/self%20influence.png"]
    target = (out.parent / links[0].replace("%20", " ")).resolve()
    assert target.is_file() and target == png.resolve()
    assert "| method | auc | n |" in text
    assert "| trak <script>alert(1)</script> | 0.9123 | 1797 |" in text
    assert "| a\\|b | 1e-07 | 3 |" in text
    # every table line has the same number of unescaped pipes
    table_lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table_lines) == 4
    assert len({len(re.findall(r"(?<!\\)\|", line)) for line in table_lines}) == 1


def test_markdown_link_from_a_sibling_folder(tmp_path, png):
    out = write_markdown_report(tmp_path / "docs" / "summary.md", "t", [Section("s", images=[png])])
    link = re.search(r"\]\(([^)]+)\)", out.read_text()).group(1)
    assert link == "../plots/self%20influence.png"
    assert (out.parent / link.replace("%20", " ")).resolve() == png.resolve()


def test_importing_reports_does_not_import_matplotlib():
    code = "import sys, attributor.reports; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

"""The README's promises: the two set-up commands and a Python example that runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_names_the_two_setup_commands_and_ci_runs_one():
    assert "make demo" in README and "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "torch==2.13.0" in makefile and "attributor demo --out runs/demo" in makefile


def test_readme_python_example_runs_as_written(tmp_path):
    code = re.search(r"## Python\n\n```python\n(.*?)```", README, re.S).group(1)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "proponents of test query 0: [" in result.stdout
    flipped = int(re.search(r"flipped among the 20 most self-influential: (\d+)", result.stdout).group(1))
    assert flipped >= 15  # 10% of labels are flipped: a random top-20 would hold about 2

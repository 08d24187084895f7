"""`import attributor` stays light: optional dependencies are imported only when used."""

from __future__ import annotations

import subprocess
import sys

HEAVY = {"faiss", "plotly", "fastapi", "transformers", "ray", "matplotlib"}


def test_import_attributor_does_not_import_optional_dependencies():
    code = (
        "import attributor, attributor.cli, attributor.reports, attributor.pipelines, sys; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_public_api_is_declared():
    import attributor

    assert set(attributor.__all__) <= set(dir(attributor))
    assert "trak" in attributor.method_names()

"""The README's install step (`pip install -e .`, what scripts/lib.sh runs) prints
progress lines and no build warnings (issue 17: three screens of setuptools
deprecations). Builds in a throwaway virtualenv; pip fetches the build backend the
pyproject names (from its cache when it has it)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_editable_install_prints_no_build_warnings(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "--no-deps",
                           "-e", str(ROOT)], capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Successfully installed clusterflow" in output
    assert not re.search(r"warning|deprecat", output, re.IGNORECASE), output
    metadata = next((venv / "lib").glob("python*/site-packages/clusterflow-*.dist-info/METADATA")).read_text()
    assert "License-Expression: Apache-2.0" in metadata

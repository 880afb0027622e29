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


def test_the_client_installs_and_runs_without_the_server(tmp_path):
    """`pip install clusterflow` (no extra) gives a working CLI and Python client, with
    none of the server's packages; `up` says which extra it needs."""
    venv = tmp_path / "client"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-e", str(ROOT)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    python, cli = str(venv / "bin" / "python"), str(venv / "bin" / "clusterflow")
    absent = subprocess.run([python, "-c", "import importlib.util as u; print([m for m in ('sqlalchemy', 'faststream', "
                             "'aiokafka', 'minio', 'numpy', 'sklearn', 'ray', 'fastapi') if u.find_spec(m)])"],
                            capture_output=True, text=True, timeout=60)
    assert absent.stdout.strip() == "[]", absent.stdout + absent.stderr
    helped = subprocess.run([cli, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "collections" in helped.stdout, helped.stdout + helped.stderr
    imported = subprocess.run([python, "-c", "import clusterflow.client.demo, clusterflow.client.cli; "
                               "from clusterflow.client import Client; print(Client)"],
                              capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    # A command over REST reaches for the gateway, not for a server package.
    listed = subprocess.run([cli, "--url", "http://127.0.0.1:9", "collections", "list"],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 1 and "ModuleNotFoundError" not in listed.stderr, listed.stderr
    up = subprocess.run([cli, "up"], capture_output=True, text=True, timeout=60)
    assert up.returncode == 2 and "pip install 'clusterflow[server]'" in up.stderr, up.stderr

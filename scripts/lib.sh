# Shared by the two commands: a virtualenv with the pinned project installed.
# Downloads are cached by pip outside the repo (~/.cache/pip), so a second run is fast.
VENV=${CLUSTERFLOW_VENV:-$PWD/.venv}
PY=$VENV/bin/python
export CLUSTERFLOW_VENV=$VENV

ensure_venv() {
  if [ ! -x "$PY" ]; then
    echo "creating $VENV" >&2
    python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
  fi
  # Reinstall only when the dependency list changed since the last install.
  local stamp=$VENV/.clusterflow-installed
  if [ ! -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp"; then
    echo "installing clusterflow and its pinned dependencies into $VENV" >&2
    "$PY" -m pip install -q --disable-pip-version-check -U pip >&2
    "$PY" -m pip install -q --disable-pip-version-check -e '.[dev]' >&2
    cp pyproject.toml "$stamp"
  fi
}

"""`clusterflow up`'s pieces that need no process: the supervisord config, the
environment the services get, the prefixed log follower."""
from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from clusterflow import up


def test_config_runs_each_service_supervised_and_stops_whole_process_groups(tmp_path):
    plan = up.Plan(host="127.0.0.1", port=8123, metrics_port_base=9201, python="/venv/bin/python")
    layout = up.Layout(state_dir=tmp_path / "100% up")
    parser = configparser.RawConfigParser()
    parser.read_string(up.render_config(plan, layout))
    programs = {s.split(":", 1)[1]: parser[s] for s in parser.sections() if s.startswith("program:")}
    assert set(programs) == set(up.SERVICES)
    for name, section in programs.items():
        assert section["autorestart"] == "true" and section["stopasgroup"] == "true"
        assert section["killasgroup"] == "true" and section["redirect_stderr"] == "true"
        # supervisord expands %(...)s: the literal % of the path must arrive doubled.
        assert section["stdout_logfile"] == str(layout.service_log(name)).replace("%", "%%")
    assert shlex.split(programs["gateway"]["command"]) == [
        "/venv/bin/python", "-m", "uvicorn", "services.gateway.app:app", "--host", "127.0.0.1", "--port", "8123",
        "--log-level", "info"]
    assert shlex.split(programs["status"]["command"]) == ["/venv/bin/python", "-m", "services.status"]
    assert programs["clusterer"]["environment"] == 'CLUSTERFLOW_METRICS_PORT="9202",CLUSTERFLOW_METRICS_HOST="127.0.0.1"'
    assert "environment" not in programs["gateway"]
    assert parser["supervisord"]["silent"] == "true"


def test_metrics_port_base_zero_turns_the_workers_metrics_off():
    plan = up.Plan(metrics_port_base=0)
    assert {plan.service_env(w)["CLUSTERFLOW_METRICS_PORT"] for w in up.WORKERS} == {"0"}


def test_user_settings_win_over_the_servers_env():
    servers = up.parse_exports(
        "export CLUSTERFLOW_KAFKA_BOOTSTRAP=127.0.0.1:39092\n"
        "export CLUSTERFLOW_DATABASE_URL=postgresql+asyncpg://u:p@127.0.0.1:35432/clusterflow\n"
        "export CLUSTERFLOW_S3_SECRET_KEY=with\\ space\n")
    assert servers["CLUSTERFLOW_S3_SECRET_KEY"] == "with space"
    env = up.service_environment(servers, {"PATH": "/bin", "CLUSTERFLOW_DATABASE_URL": "postgresql://mine/db"})
    assert env["CLUSTERFLOW_DATABASE_URL"] == "postgresql://mine/db"
    assert env["CLUSTERFLOW_KAFKA_BOOTSTRAP"] == "127.0.0.1:39092"
    assert env["PATH"] == "/bin" and env["PYTHONUNBUFFERED"] == "1"


def test_log_follower_prefixes_complete_lines_and_picks_up_new_files(tmp_path: Path):
    old = tmp_path / "gateway.log"
    old.write_text("before up\n")  # a previous run's lines are not replayed
    late = tmp_path / "clusterer.log"
    seen: list[str] = []
    follower = up.LogFollower({"gateway": old, "clusterer": late}, seen.append)
    assert follower.poll() == 0
    with old.open("a") as f:
        f.write("started\nhalf a li")
    late.write_text("warm-up done\n")
    assert follower.poll() == 2
    with old.open("a") as f:
        f.write("ne\n")
    follower.poll()
    width = up.PREFIX_WIDTH
    assert seen == [f"{'gateway':<{width}} | started", f"{'clusterer':<{width}} | warm-up done",
                    f"{'gateway':<{width}} | half a line"]


def test_next_steps_quote_what_the_shell_would_split():
    steps = up.next_steps("http://127.0.0.1:8000", "team a", "cfk_x")
    assert steps[0] == "export CLUSTERFLOW_URL=http://127.0.0.1:8000 CLUSTERFLOW_NAMESPACE='team a' " \
                       "CLUSTERFLOW_API_KEY=cfk_x"
    assert any(s.startswith("clusterflow execute") for s in steps)


def test_next_steps_name_the_cli_as_the_user_can_type_it(tmp_path: Path):
    """`.venv/bin/clusterflow up` without the venv activated: a bare `clusterflow` is
    "command not found", so the steps (and the `down` hint) say the path it ran by."""
    entry = str(tmp_path / "venv" / "bin" / "clusterflow")
    assert up.program_name(entry, which=lambda name: None) == entry
    assert up.program_name(entry, which=lambda name: "/usr/local/bin/clusterflow") == entry  # another one
    assert up.program_name(entry, which=lambda name: entry) == "clusterflow"
    assert up.program_name("/x/cli.py", which=lambda name: None).endswith(" -m clusterflow.client.cli")
    steps = up.next_steps("http://127.0.0.1:8000", "default", None, program=entry)
    commands = [s for s in steps if not s.startswith(("export ", "#"))]
    assert commands and all(s.startswith(entry + " ") for s in commands)
    # What documents.parquet must hold is said where the user reads the command.
    assert any(s.startswith("#") and "document_id" in s and "embedding" in s for s in steps)


def test_the_control_socket_has_a_password_so_supervisord_logs_no_crit(tmp_path: Path):
    layout = up.Layout(state_dir=tmp_path)
    parser = configparser.RawConfigParser()
    parser.read_string(up.render_config(up.Plan(), layout, password="p%w"))
    for section in ("unix_http_server", "supervisorctl"):
        assert parser[section]["username"] == "clusterflow" and parser[section]["password"] == "p%%w"
    assert up.render_config(up.Plan(), layout) != up.render_config(up.Plan(), layout)  # a fresh one each time

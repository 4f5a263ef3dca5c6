"""The supervisor's process table: which command runs each configured process, in start order."""

from __future__ import annotations

from pathlib import Path

from inspector.contracts.config import parse_config
from inspector.station.processes import plan


def test_every_configured_process_gets_its_command_in_start_order(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "station": {"id": "s1", "data_dir": str(tmp_path)},
            "supervisor": {"processes": ["camera", "worker", "line", "drift", "jobs", "shadow"], "workers": 2},
        },
        environ={},
    )
    specs = plan(cfg, tmp_path / "station.yaml")
    assert [s.name for s in specs] == ["worker-1", "worker-2", "line", "drift", "jobs", "shadow", "camera"]
    shadow = next(s for s in specs if s.name == "shadow")
    assert shadow.argv[1:5] == ("-m", "inspector.cli", "shadow", "run") and "--config" in shadow.argv
    assert next(s for s in specs if s.name == "worker-2").argv[-1] == "s1-worker-2"


def test_the_recorder_process_starts_after_the_workers_with_a_stable_name(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "station": {"id": "s1", "data_dir": str(tmp_path)},
            "supervisor": {"processes": ["camera", "worker", "recorder", "line"]},
        },
        environ={},
    )
    specs = plan(cfg, tmp_path / "station.yaml")
    assert [s.name for s in specs] == ["worker-1", "recorder", "line", "camera"]
    recorder = next(s for s in specs if s.name == "recorder")
    assert recorder.argv[1:3] == ("-m", "inspector.recording") and recorder.argv[-2:] == ("--name", "s1-recorder")


def test_workers_run_no_recorder_thread_where_the_station_runs_the_recorder_process(tmp_path: Path) -> None:
    def worker_argv(processes: list[str]) -> tuple[str, ...]:
        cfg = parse_config(
            {"station": {"id": "s1", "data_dir": str(tmp_path)}, "supervisor": {"processes": processes}}, environ={}
        )
        return next(s for s in plan(cfg, None) if s.name == "worker-1").argv

    with_process = worker_argv(["camera", "worker", "recorder"])
    assert "--no-record" in with_process and "--no-review" not in with_process  # review routing stays
    assert "--no-record" not in worker_argv(["camera", "worker"])  # the default: each worker records its own

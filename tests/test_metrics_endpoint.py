"""Prometheus metrics of a real station: `inspector station run` (embedded Redis, camera, two workers with their
verdict recorders, line runner, drift monitor, RQ jobs worker), each child serving /metrics on its own port.

During the run every process's port answers; the counters rise; the camera's frames, the workers' verdicts and
every consumer group's lag and pending agree with `inspector status --json`. One worker's port is taken before
the start: that worker says so in one line and inspects like the other.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from inspector.contracts.config import StationConfig, parse_config
from inspector.telemetry import metrics_port

REPO = Path(__file__).resolve().parents[1]
PROCESSES = ["camera", "worker-1", "worker-2", "line", "drift", "jobs"]


def _free_block(n: int = 16) -> int:
    """A base port with ``n`` free ports above it."""
    for _ in range(200):
        base = random.randrange(20_000, 60_000)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


def scrape(port: int, timeout: float = 3.0) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``{sample name: [(labels, value)]}`` of one /metrics page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def total(page: dict[str, list[tuple[dict[str, str], float]]], sample: str, **labels: str) -> float:
    return sum(v for lab, v in page.get(sample, []) if all(lab.get(k) == w for k, w in labels.items()))


def status(config: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "inspector.cli", "status", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_for(pred: Any, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return True
        except OSError:
            pass
        time.sleep(step)
    return False


def _why_not_up(ports: dict[str, int], serving: list[str], config: Path) -> str:
    """What each process's port served when the wait ran out, and the station's status (a timeout says why)."""
    lines = []
    for p in serving:
        try:
            page = scrape(ports[p])
        except OSError as err:
            lines.append(f"{p} :{ports[p]}: no page ({err})")
            continue
        verdicts, parts = total(page, "inspector_verdicts_total"), total(page, "inspector_line_parts_total")
        lines.append(f"{p} :{ports[p]}: {len(page)} samples, verdicts {verdicts:g}, line parts {parts:g}")
    try:
        st = status(config)
        lines.append(f"status counters {st.get('counters')}; workers {[w.get('counts') for w in st['workers']]}")
    except (AssertionError, subprocess.TimeoutExpired, ValueError, KeyError) as err:
        lines.append(f"status: {err}")
    return "\n".join(lines) + "\n--- station log ---\n"


@pytest.fixture
def station(tmp_path: Path, tiny_package: Path) -> Iterator[tuple[StationConfig, Path, Path, socket.socket]]:
    base = _free_block()
    data = {
        "station": {"id": f"met{os.getpid()}", "data_dir": str(tmp_path / "data")},
        "model": {"package": str(tiny_package)},
        "camera": {"fps": 10},
        "worker": {"max_batch": 4},
        "review": {"enabled": False},
        "line": {"deadline_ms": 2000},
        "supervisor": {
            "processes": ["camera", "worker", "line", "drift", "jobs"],
            "workers": 2,
            "restart_initial_s": 0.5,
            "stop_timeout_s": 15,
        },
        "metrics": {"enabled": True, "port_base": base},
    }
    cfg = parse_config(data, environ={})
    config = tmp_path / "station.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    taken = socket.socket()  # worker-2's metrics port is in use before the station starts
    taken.bind(("127.0.0.1", metrics_port(cfg, "worker-2")))
    taken.listen(1)
    log = tmp_path / "station.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTOR_") or k == "INSPECTOR_SLOW"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    with open(log, "ab") as fh:
        sup = subprocess.Popen(
            [sys.executable, "-m", "inspector.cli", "station", "run", "--config", str(config)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )
    try:
        yield cfg, config, log, taken
    finally:
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(40)
        except subprocess.TimeoutExpired:
            sup.kill()
            sup.wait(10)
        taken.close()


def test_every_process_serves_rising_counters_that_match_status(
    station: tuple[StationConfig, Path, Path, socket.socket],
) -> None:
    cfg, config, log, _taken = station
    ports = {p: metrics_port(cfg, p) for p in PROCESSES}
    serving = [p for p in PROCESSES if p != "worker-2"]

    def all_up() -> bool:
        pages = {p: scrape(ports[p]) for p in serving}
        return (
            total(pages["worker-1"], "inspector_verdicts_total") > 0
            and total(pages["line"], "inspector_line_parts_total") > 0
        )

    assert wait_for(all_up, 180), _why_not_up(ports, serving, config) + log.read_text()[-4000:]

    first = {p: scrape(ports[p]) for p in serving}
    time.sleep(3)
    # bracket `inspector status` between two scrapes: what it reports lies between them
    before = {p: scrape(ports[p]) for p in serving}
    st = status(config)
    after = {p: scrape(ports[p]) for p in serving}

    # every process serves the station view and its own process metrics
    for p in serving:
        assert total(after[p], "inspector_redis_up") == 1, p
        assert after[p].get("process_cpu_seconds_total"), p

    # frames: the camera's own count against the station's published counter
    def published(page: dict) -> float:  # type: ignore[type-arg]
        return total(page, "inspector_frames_published_total", camera=cfg.camera.id)

    assert published(first["camera"]) < published(before["camera"]), "frames do not rise"
    assert published(before["camera"]) <= st["counters"]["published"] <= published(after["camera"])
    assert total(after["camera"], "inspector_station_counter_total", name="published") >= st["counters"]["published"]

    # verdicts: the workers' by decision and defect class add up to the station's verdicts counter
    def verdicts(pages: dict) -> float:  # type: ignore[type-arg]
        return total(pages["worker-1"], "inspector_verdicts_total")

    # worker-2 serves no metrics (its port is taken); its own count comes from the status heartbeat
    w2 = [w for w in st["workers"] if w["worker"].endswith("-worker-2")]
    assert w2 and w2[0]["counts"]["verdicts"] > 0, "worker-2 stopped inspecting without its metrics port"
    w1_before, w1_after = verdicts(before), verdicts(after)
    assert verdicts(first) < w1_before, "verdicts do not rise"
    w1_status = [w for w in st["workers"] if w["worker"].endswith("-worker-1")][0]["counts"]["verdicts"]
    assert w1_before - 20 <= w1_status <= w1_after + 20  # the heartbeat's counts are up to a beat old
    decisions = {lab["decision"] for lab, v in after["worker-1"]["inspector_verdicts_total"] if v > 0}
    assert decisions <= {"PASS", "FAIL", "REVIEW", "ERROR"} and decisions
    assert total(after["worker-1"], "inspector_stage_latency_seconds_count", stage="end_to_end") >= w1_before
    assert total(after["worker-1"], "inspector_frames_inspected_total") >= w1_before
    assert [lab["version"] for lab, _ in after["worker-1"]["inspector_model_info"]]
    assert total(after["worker-1"], "inspector_model_load_seconds") > 0
    assert total(after["worker-1"], "inspector_verdicts_recorded_total") > 0
    assert (
        total(before["line"], "inspector_station_counter_total", name="verdicts")
        <= st["counters"]["verdicts"]
        <= total(after["line"], "inspector_station_counter_total", name="verdicts")
    )

    # lag and pending of every consumer group: the same groups in status and metrics, the same values
    groups = {(g["stream"], g["group"]): g for g in st["groups"]}
    assert (
        ("frames", cfg.worker.group) in groups
        and ("verdicts", "line") in groups
        and ("verdicts", "store") in groups
        and ("verdicts", "drift") in groups
    ), sorted(groups)
    lag = {(lab["stream"], lab["group"]): v for lab, v in after["line"]["inspector_stream_lag"]}
    pending = {(lab["stream"], lab["group"]): v for lab, v in after["line"]["inspector_stream_pending"]}
    assert set(lag) == set(groups)
    for key, g in groups.items():
        if g["lag"] is not None:
            assert abs(lag[key] - g["lag"]) <= 10, (key, lag[key], g["lag"])
        assert abs(pending[key] - g["pending"]) <= 10, (key, pending[key], g["pending"])

    # line, drift, jobs
    assert total(first["line"], "inspector_line_parts_total") < total(after["line"], "inspector_line_parts_total")
    assert total(after["line"], "inspector_line_ready") == 1
    assert total(after["drift"], "inspector_drift_band", band="psi_threshold") == cfg.drift.psi_threshold
    assert {lab["state"] for lab, _ in after["jobs"]["inspector_jobs"]} >= {"queued", "started", "failed"}

    # the taken port: one clear line from worker-2, and it kept inspecting (checked above)
    text = log.read_text()
    lines = [ln for ln in text.splitlines() if "metrics port" in ln]
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{ports['worker-2']}" in lines[0] and "worker-2 goes on without metrics" in lines[0]


def test_dashboard_uses_only_metric_names_the_station_defines() -> None:
    """configs/grafana/station.json is built on the names of inspector/telemetry.py and its station view,
    inspector/telemetry_station.py (a renamed metric breaks this)."""
    import re

    sources = [REPO / "inspector" / "telemetry.py", REPO / "inspector" / "telemetry_station.py"]
    defined = {n for f in sources for n in re.findall(r'"(inspector_[a-z_]+)"', f.read_text())}
    dashboard = json.loads((REPO / "configs" / "grafana" / "station.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {re.sub(r"_(total|bucket|count|sum)$", "", n) for e in exprs for n in re.findall(r"inspector_[a-z_]+", e)}
    assert len(used) >= 25 and used <= defined, sorted(used - defined)


def test_drift_process_serves_its_statistics_against_their_bands(
    station_config: StationConfig, redis_client: Any, tmp_path: Path
) -> None:
    """`inspector jobs drift` on a real Redis: PSI, KS p-value and mean shift per statistic, the bands, tripped
    statistics and the alarm count on its metrics port, moving when the images darken."""
    import numpy as np

    from inspector.contracts.messages import Decision, ImageStats, Verdict
    from inspector.contracts.names import Names
    from inspector.drift.reference import reference_from_samples

    rng = np.random.default_rng(3)

    def stats(scale: float) -> dict[str, float]:
        b = float(rng.normal(120, 8)) * scale
        return {
            "brightness": b,
            "contrast": float(rng.normal(30, 3)) * scale,
            "sharpness": float(rng.normal(50, 5)),
            "mean_r": b,
            "mean_g": b,
            "mean_b": b,
        }

    package = tmp_path / "pkg-v1"
    package.mkdir()
    (package / "manifest.json").write_text(
        json.dumps(
            {
                "name": "drift-metrics",
                "version": "v1",
                "created_at": 1.0,
                "task": "anomaly",
                "model": {},
                "preprocess": {"size": [8, 8]},
                "drift_reference": reference_from_samples([stats(1.0) for _ in range(400)], decisions=["PASS"] * 400),
            }
        )
    )
    base = _free_block(4)
    cfg = station_config.model_copy(
        update={
            "drift": station_config.drift.model_copy(
                update={"window": 100, "check_every": 10, "hysteresis": 2, "cooldown_s": 0}
            ),
            "metrics": station_config.metrics.model_copy(update={"enabled": True, "port_base": base}),
        }
    )
    names = Names(cfg.redis.prefix, cfg.station.id)
    redis_client.hset(names.active_model, mapping={"version": "v1", "path": str(package)})
    config = tmp_path / "station.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTOR_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "drift", "--config", str(config), "--no-auto-retrain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
    )
    port = metrics_port(cfg, "drift")

    def add(n: int, scale: float, start: int) -> None:
        for i in range(start, start + n):
            v = Verdict(
                station=cfg.station.id,
                frame_id=f"f{i}",
                camera="c",
                seq=i,
                part_id=f"p{i}",
                captured_at=0,
                decision=Decision.PASS,
                reject=False,
                model_version="v1",
                image_stats=ImageStats(**stats(scale)),
            )
            redis_client.xadd(names.verdicts, {b"m": v.to_json()})

    try:
        assert wait_for(lambda: total(scrape(port), "inspector_drift_band", band="psi_threshold") > 0, 60)
        # the monitor's group starts at the end of the stream: feed once it reads
        assert wait_for(
            lambda: any(g["name"] in (b"drift", "drift") for g in redis_client.xinfo_groups(names.verdicts)), 30
        )
        add(150, 1.0, 0)
        # every calm frame checked (the window fills at 100, then a check every 10) before it is read
        assert wait_for(lambda: total(scrape(port), "inspector_drift_checks_total") >= 6, 30), scrape(port)
        calm = scrape(port)
        assert {lab["statistic"] for lab, _ in calm["inspector_drift_psi"]} >= {"brightness", "contrast"}
        assert total(calm, "inspector_drift_alarms_total") == 0
        assert total(calm, "inspector_drift_psi", statistic="brightness") < cfg.drift.psi_threshold
        add(150, 0.7, 150)  # 30 % darker
        assert wait_for(lambda: total(scrape(port), "inspector_drift_alarms_total") >= 1, 30)
        dark = scrape(port)
        assert total(dark, "inspector_drift_psi", statistic="brightness") > total(
            dark, "inspector_drift_band", band="psi_threshold"
        )
        assert total(dark, "inspector_drift_shift_sigma", statistic="brightness") < -1
        assert total(dark, "inspector_drift_tripped", statistic="brightness") == 1
        assert total(dark, "inspector_drift_consecutive") >= 2
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "Traceback" not in out, out


def test_gui_process_serves_metrics(station_config: StationConfig, redis_client: Any, tmp_path: Path) -> None:
    """`inspector gui` (offscreen Qt) serves its port from the start, the station view included, even while its
    log-in dialog waits."""
    pytest.importorskip("PySide6", reason="pip install -e '.[gui]'")
    base = _free_block(6)
    cfg = station_config.model_copy(
        update={"metrics": station_config.metrics.model_copy(update={"enabled": True, "port_base": base})}
    )
    config = tmp_path / "station.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTOR_")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector.cli", "gui", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        port = metrics_port(cfg, "gui")
        assert port == base + 4
        assert wait_for(lambda: total(scrape(port), "inspector_gui_start_time_seconds") > 0, 60)
        page = scrape(port)
        assert total(page, "inspector_redis_up") == 1 and "inspector_workers_alive" in page
    finally:
        proc.kill()
        proc.communicate(timeout=20)

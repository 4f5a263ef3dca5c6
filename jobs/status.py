"""What `inspector jobs status` shows: recent jobs (step, progress, status) and model versions."""

from __future__ import annotations

from typing import Any

import redis
from rich.table import Table
from rq.exceptions import NoSuchJobError
from rq.job import Job

from inspector.contracts.config import StationConfig
from inspector.contracts.lifecycle import GateReport
from inspector.store.db import open_store
from inspector.store.records import list_models
from jobs.queues import SERIALIZER, JobKeys, names_of
from jobs.trigger import lock_holder


def job_rows(cfg: StationConfig, client: redis.Redis, limit: int = 20) -> list[dict[str, Any]]:
    rows = []
    for raw in client.lrange(JobKeys(names_of(cfg)).history, 0, limit - 1):
        jid = raw.decode()
        try:
            job = Job.fetch(jid, connection=client, serializer=SERIALIZER)
        except NoSuchJobError:
            rows.append({"id": jid, "status": "expired"})
            continue
        meta = job.meta or {}
        rows.append(
            {
                "id": jid,
                "status": job.get_status().value,
                "kind": meta.get("kind"),
                "step": meta.get("step"),
                "progress": meta.get("progress"),
                "reason": meta.get("reason"),
                "version": meta.get("version"),
                "error": meta.get("error"),
                "enqueued_at": job.enqueued_at,
                "retries_left": job.retries_left,
            }
        )
    return rows


def jobs_status(cfg: StationConfig, client: redis.Redis) -> dict[str, Any]:
    with open_store(cfg) as store:
        versions = [
            {
                "version": m.version,
                "status": m.status,
                "created_at": m.created_at,
                "promoted_at": m.promoted_at,
                "path": m.package_path,
            }
            for m in list_models(store)
        ]
    return {
        "station": cfg.station.id,
        "lock": lock_holder(client, cfg),
        "jobs": job_rows(cfg, client),
        "versions": versions,
    }


def render(st: dict[str, Any]) -> list[Table]:
    jobs = Table(
        "job",
        "kind",
        "status",
        "step",
        "progress",
        "version / error",
        "reason",
        title=f"jobs of {st['station']} (lock: {st['lock'] or 'free'})",
    )
    for j in st["jobs"]:
        prog = f"{100 * j['progress']:.0f}%" if j.get("progress") is not None else ""
        jobs.add_row(
            j["id"],
            j.get("kind") or "",
            j["status"],
            j.get("step") or "",
            prog,
            j.get("version") or j.get("error") or "",
            j.get("reason") or "",
        )
    versions = Table("version", "status", "promoted at", "path", title="model versions")
    for v in st["versions"]:
        versions.add_row(v["version"], v["status"], f"{v['promoted_at']:.0f}" if v["promoted_at"] else "", v["path"])
    return [jobs, versions]


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def gate_table(version: str, status: str, report: GateReport | None) -> Table:
    """Every gate row of a version, candidate beside incumbent: what a person reads before approving."""
    if report is None:
        t = Table("gate", title=f"{version} ({status}): no gate ran")
        t.add_row("a version without a gate report cannot be promoted")
        return t
    verdict = "PASSED" if report.passed else f"FAILED ({len(report.failed)} rows)"
    t = Table(
        "gate",
        "metric",
        "frames",
        "candidate",
        f"incumbent ({report.incumbent_version or 'none'})",
        "limit",
        "result",
        title=f"gate of {version} ({status}): {verdict}; frame sets {report.frame_sets}",
    )
    for r in report.rows:
        t.add_row(
            r.gate,
            r.metric,
            r.frame_set,
            _fmt(r.candidate),
            _fmt(r.incumbent),
            _fmt(r.limit),
            "[green]PASS[/]" if r.passed else "[bold red]FAIL[/]",
        )
    return t

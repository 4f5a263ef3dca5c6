"""Data report: is there enough data, are there duplicates, what sizes and modes are the images?

Rules of thumb for the minimum number of images (pretrained fine-tuning; from scratch needs 5-10x more):

- binary classification: 500-2,000 per class
- 3-20 classes: 1,000-5,000 per class
- anomaly detection: 200-500 good images; 1,000+ for robustness
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from rich.console import Console
from rich.table import Table

from trainer.data import Sample, scan_anomaly, scan_class_folders

Task = Literal["classification", "anomaly"]
SCRATCH_FACTOR = (5, 10)


@dataclass(frozen=True)
class Need:
    low: int
    high: int
    what: str


def need_for(task: Task, num_classes: int) -> Need:
    if task == "anomaly":
        return Need(200, 500, "good images for anomaly detection (1,000+ for robustness)")
    if num_classes <= 2:
        return Need(500, 2000, "images per class for binary classification")
    return Need(1000, 5000, f"images per class for {num_classes}-class classification")


def _image_info(path: Path) -> tuple[int, int, str]:
    with Image.open(path) as im:
        return im.width, im.height, im.mode


def _sizes(samples: list[Sample]) -> dict[str, Any]:
    infos = [_image_info(s.path) for s in samples]
    if not infos:
        return {}
    w = [i[0] for i in infos]
    h = [i[1] for i in infos]
    return {
        "width": {"min": min(w), "median": statistics.median(w), "max": max(w)},
        "height": {"min": min(h), "median": statistics.median(h), "max": max(h)},
        "modes": dict(Counter(i[2] for i in infos)),
    }


def _duplicates(samples: list[Sample]) -> list[list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for s in samples:
        groups[s.sha256].append(str(s.path))
    return [sorted(g) for g in groups.values() if len(g) > 1]


def _class_rows(groups: dict[str, list[Sample]], need: Need) -> list[dict[str, Any]]:
    rows = []
    for name, items in sorted(groups.items()):
        n = len(items)
        status = "ok" if n >= need.low else "below minimum"
        rows.append(
            {
                "class": name,
                "count": n,
                "min_pretrained": need.low,
                "good_pretrained": need.high,
                "min_scratch": need.low * SCRATCH_FACTOR[0],
                "good_scratch": need.high * SCRATCH_FACTOR[1],
                "status": status,
                **_sizes(items),
            }
        )
    return rows


def _warnings(task: Task, rows: list[dict[str, Any]], need: Need, dups: list[list[str]]) -> list[str]:
    out = []
    for r in rows:
        if r["count"] < need.low:
            label = "train/good" if task == "anomaly" else f"class {r['class']}"
            if task == "anomaly" and r["class"] != "train/good":
                continue
            out.append(
                f"{label} has {r['count']} images, below the {need.low:,} minimum of {need.what}; "
                f"pretrained fine-tuning may still work, collect more (from scratch needs "
                f"{need.low * SCRATCH_FACTOR[0]:,}-{need.high * SCRATCH_FACTOR[1]:,})"
            )
    good = next((r for r in rows if r["class"] == "train/good"), None)
    if good is not None and need.low <= good["count"] < 1000:
        out.append(
            f"train/good has {good['count']} images: enough to start, below the 1,000 for a robust "
            "anomaly model; keep collecting good parts"
        )
    counts = [r["count"] for r in rows if task == "classification"]
    if counts and max(counts) > 3 * max(1, min(counts)):
        out.append(f"classes are imbalanced ({min(counts)} vs {max(counts)}): use class weights and per-class recall")
    for g in dups:
        out.append(f"{len(g)} identical files (kept in one split): {', '.join(g)}")
    modes = {m for r in rows for m in r.get("modes", {})}
    if len(modes) > 1:
        out.append(f"mixed image modes {sorted(modes)}: images are converted to RGB when loaded")
    return out


def build_report(root: str | Path, task: Task) -> dict[str, Any]:
    """The report as a JSON-ready dict (classes, counts vs minimums, duplicates, sizes, modes, warnings)."""
    root = Path(root)
    if task == "anomaly":
        data = scan_anomaly(root)
        groups: dict[str, list[Sample]] = {"train/good": data.train}
        for s in data.test:
            groups[f"test/{s.defect or 'good'}"] = [*groups.get(f"test/{s.defect or 'good'}", []), s]
        samples = data.train + data.test
        need = need_for(task, 2)
    else:
        samples, classes = scan_class_folders(root)
        groups = {c: [s for s in samples if s.label_name == c] for c in classes}
        need = need_for(task, len(classes))
    rows = _class_rows(groups, need)
    dups = _duplicates(samples)
    return {
        "root": str(root),
        "task": task,
        "total": len(samples),
        "need": need.__dict__,
        "classes": rows,
        "duplicates": dups,
        "warnings": _warnings(task, rows, need, dups),
    }


def _n(v: float | int | None) -> str:
    return "?" if v is None else str(int(v)) if float(v).is_integer() else f"{v:.1f}"


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    need = report["need"]
    table = Table(title=f"{report['root']} ({report['task']}, {report['total']} images)")
    for col in (
        "class",
        "count",
        "need (pretrained)",
        "need (scratch)",
        "status",
        "size w×h min / median / max",
        "modes",
    ):
        table.add_column(col, justify="right" if col == "count" else "left")
    for r in report["classes"]:
        w, h = r.get("width", {}), r.get("height", {})
        sizes = " / ".join(f"{_n(w.get(k))}×{_n(h.get(k))}" for k in ("min", "median", "max"))
        is_test = report["task"] == "anomaly" and r["class"] != "train/good"
        status = "[dim]test[/]" if is_test else "[green]ok[/]" if r["status"] == "ok" else "[red]below minimum[/]"
        pre = "—" if is_test else f"{r['min_pretrained']:,}–{r['good_pretrained']:,}"
        scratch = "—" if is_test else f"{r['min_scratch']:,}–{r['good_scratch']:,}"
        table.add_row(
            r["class"],
            str(r["count"]),
            pre,
            scratch,
            status,
            sizes,
            ", ".join(f"{m}:{n}" for m, n in r.get("modes", {}).items()),
        )
    console.print(table)
    console.print(
        f"minimum: {need['low']:,}–{need['high']:,} {need['what']}; from scratch {SCRATCH_FACTOR[0]}–"
        f"{SCRATCH_FACTOR[1]}× more"
    )
    console.print(f"exact duplicates: {len(report['duplicates'])} group(s)")
    for w in report["warnings"]:
        console.print(f"[yellow]warning:[/] {w}")

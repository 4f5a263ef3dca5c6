"""The deployment checklist of a model package: each item with its figure and PASS/FAIL.

Items are judged from the manifest's recorded figures plus measurements taken now, on this machine,
through the station's own runtime (``load_package`` + ``InspectionModel``, preprocessing included).
A missing figure is a FAIL, never a silent pass.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inspector.contracts.config import RuntimeSection
from inspector.contracts.manifest import Manifest
from inspector.runtime.package import ModelPackage, load_package

MB = 1024 * 1024


@dataclass
class CheckItem:
    key: str
    title: str
    passed: bool
    figure: str
    detail: str = ""


@dataclass
class ChecklistReport:
    items: list[CheckItem] = field(default_factory=list)
    measured: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.items) and all(i.passed for i in self.items)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "items": {i.key: asdict(i) for i in self.items},
            "measured": self.measured,
            "checked_at": time.time(),
            "hardware": hardware_description(),
        }


def hardware_description() -> str:
    """CPU model and core count of this machine, e.g. 'AMD EPYC 9R45 (2 cores)'."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores)"


def measure_latency(
    package: ModelPackage, threads: int = 2, runs: int = 20, warmup: int = 3, precision: str = "auto"
) -> dict[str, Any]:
    """p50/p90 ms of InspectionModel.infer on one frame (batch 1, preprocessing included)."""
    from inspector.models.inference import InspectionModel

    model = InspectionModel(package, RuntimeSection(threads=threads, precision=precision))  # type: ignore[arg-type]
    frame = _sample_frame(package)
    try:
        for _ in range(warmup):
            model.infer([frame])
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model.infer([frame])
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        model.close()
    return {
        "p50_ms": statistics.median(times),
        "p90_ms": float(np.percentile(times, 90)),
        "runs": float(runs),
        "threads": threads,
        "precision": model.precision,
    }


def _sample_frame(package: ModelPackage) -> np.ndarray:
    """A canary frame when the package has one (real size), else a mid-grey 480x640 frame."""
    import cv2

    for canary in package.manifest.canaries:
        img = cv2.imread(str(package.file(canary.file)), cv2.IMREAD_COLOR)
        if img is not None:
            return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return np.full((480, 640, 3), 128, np.uint8)


_RSS_SCRIPT = """
import json, sys
import numpy as np, onnxruntime as ort
def hwm():  # VmHWM is per address space; ru_maxrss would carry the parent's peak across fork+exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
path, threads, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
before = hwm()
o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.log_severity_level = 3
s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
s.run(None, {s.get_inputs()[0].name: np.zeros((1, 3, h, w), np.float32)})
print(json.dumps({"peak_rss_kb": hwm(), "before_kb": before}))
"""


def measure_session_rss(onnx_path: Path, size: tuple[int, int], threads: int = 2) -> float:
    """Peak RSS (MB) of a fresh process that loads the session and runs one frame."""
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(onnx_path), str(threads), str(size[0]), str(size[1])],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"session memory probe failed: {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_kb"] / 1024


def _recommended_file(manifest: Manifest) -> str:
    m = manifest.model
    if m.recommended == "bf16" and m.bf16:
        return m.bf16
    return m.int8 if (m.recommended == "int8" and m.int8) else m.fp32


def _num(d: dict[str, Any], key: str) -> float | None:
    v = d.get(key)
    return float(v) if isinstance(v, int | float) and np.isfinite(v) and v > 0 else None


def check_latency(manifest: Manifest, measured: dict[str, Any]) -> CheckItem:
    title = "latency target defined and met (p50, batch 1, preprocessing included)"
    target = manifest.latency_target_ms
    p50 = measured.get("p50_ms")
    if target is None:
        return CheckItem("latency", title, False, f"p50 {_ms(p50)}, no target", "set latency_target_ms")
    if p50 is None:
        return CheckItem(
            "latency", title, False, f"target {target:g} ms, not measured", "run the checklist with measuring"
        )
    return CheckItem("latency", title, p50 <= target, f"p50 {p50:.2f} ms vs target {target:g} ms")


def check_hardware(manifest: Manifest) -> CheckItem:
    ok = bool(manifest.target_hardware and manifest.target_hardware.strip())
    return CheckItem("target_hardware", "target hardware named", ok, manifest.target_hardware or "missing")


def check_baseline(manifest: Manifest) -> CheckItem:
    b = manifest.benchmark
    fp32, torch_ms = _num(b, "fp32_ms"), _num(b, "torch_eager_ms")
    fig = f"ORT fp32 {_ms(fp32)}, torch eager {_ms(torch_ms)}"
    return CheckItem(
        "baseline", "baseline measured before optimisation", fp32 is not None and torch_ms is not None, fig
    )


def check_int8(manifest: Manifest) -> CheckItem:
    title = "INT8 accuracy validated on held-out set (or declined by measurement)"
    q = manifest.benchmark.get("int8")
    if not isinstance(q, dict):
        return CheckItem("int8", title, False, "INT8 never evaluated", "run quantize_and_gate while packaging")
    measured = _num(q, "fp32_ms") is not None and _num(q, "int8_ms") is not None and "metric_int8" in q
    fig = (
        f"{q.get('metric')} fp32 {q.get('metric_fp32')} / int8 {q.get('metric_int8')}, "
        f"x{q.get('speedup', 0):.2f}: {'kept' if q.get('kept') else 'declined'}"
    )
    reason = str(q.get("reason") or "")
    runtime = manifest.benchmark.get("runtime")
    if isinstance(runtime, dict):  # the precision gate's choice (trainer.precision): INT8 won <=> the file is in
        consistent = (runtime.get("precision") == "int8") == bool(manifest.model.int8)
        fig += f"; runtime kept {runtime.get('backend')} {runtime.get('precision')} x{runtime.get('speedup_vs_fp32', 1):.2f}"
    else:
        consistent = bool(q.get("kept")) == bool(manifest.model.int8)  # kept <=> the file is in the package
    ok = measured and consistent and bool(reason)
    return CheckItem("int8", title, ok, fig, reason or "no reason recorded")


def check_parity(manifest: Manifest) -> CheckItem:
    p = manifest.parity
    diffs = p.get("max_abs_diff") or {}
    fig = ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()) or "no figures"
    if p.get("top1_agreement") is not None:
        fig += f", top-1 {p['top1_agreement']:.3f}"
    if p.get("spearman") is not None:
        fig += f", Spearman {p['spearman']:.4f}"
    ok = p.get("passed") is True and bool(diffs) and not p.get("failures")
    return CheckItem("parity", "ONNX outputs match PyTorch", ok, fig, "; ".join(p.get("failures") or []))


def check_benchmark(manifest: Manifest, here: str) -> CheckItem:
    b = manifest.benchmark
    hw, fp32 = b.get("hardware"), _num(b, "fp32_ms")
    if not hw or fp32 is None:
        return CheckItem("benchmark", "runtime benchmarked on the target", False, "no benchmark recorded")
    ok = hw == here
    return CheckItem(
        "benchmark",
        "runtime benchmarked on the target",
        ok,
        f"{hw}: fp32 {fp32:.2f} ms",
        "" if ok else f"benchmarked on {hw}, this machine is {here}: benchmark again here",
    )


def check_memory(manifest: Manifest, measured: dict[str, Any]) -> CheckItem:
    title = "model size within the memory budget (file + session peak RSS)"
    budget = manifest.memory_budget_mb
    file_mb, rss = measured.get("model_file_mb"), measured.get("session_peak_rss_mb")
    fig = f"file {_mb(file_mb)}, session peak RSS {_mb(rss)}, budget {_mb(budget)}"
    if budget is None or file_mb is None or rss is None:
        return CheckItem("memory", title, False, fig, "set memory_budget_mb and measure")
    return CheckItem("memory", title, file_mb <= budget and rss <= budget, fig)


def _ms(v: float | None) -> str:
    return "missing" if v is None else f"{v:.2f} ms"


def _mb(v: float | None) -> str:
    return "missing" if v is None else f"{v:.1f} MB"


def measure_package(package: ModelPackage, threads: int = 2, runs: int = 20) -> dict[str, Any]:
    """Latency through InspectionModel, model file size and session peak RSS, measured now."""
    rel = _recommended_file(package.manifest)
    path = package.file(rel)
    out: dict[str, Any] = {"model_file": rel, "model_file_mb": path.stat().st_size / MB}
    out.update(measure_latency(package, threads, runs))
    out["session_peak_rss_mb"] = measure_session_rss(path, package.manifest.preprocess.size, threads)
    return out


def run_checklist(
    package: str | Path | ModelPackage,
    measure: bool = True,
    threads: int = 2,
    runs: int = 20,
    measured: dict[str, Any] | None = None,
) -> ChecklistReport:
    """Judge every item; ``measured`` (figures taken elsewhere) is used when ``measure`` is False."""
    pkg = package if isinstance(package, ModelPackage) else load_package(package)
    figures = measure_package(pkg, threads, runs) if measure else dict(measured or {})
    m = pkg.manifest
    checks: list[Callable[[], CheckItem]] = [
        lambda: check_latency(m, figures),
        lambda: check_hardware(m),
        lambda: check_baseline(m),
        lambda: check_int8(m),
        lambda: check_parity(m),
        lambda: check_benchmark(m, hardware_description()),
        lambda: check_memory(m, figures),
    ]
    return ChecklistReport([c() for c in checks], figures)


def print_checklist(report: ChecklistReport) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="deployment checklist")
    for col in ("item", "figure", "result", "note"):
        table.add_column(col)
    for i in report.items:
        table.add_row(i.title, i.figure, "[green]PASS[/]" if i.passed else "[red]FAIL[/]", i.detail)
    Console().print(table)

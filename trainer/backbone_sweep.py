"""``trainer backbone-sweep``: EfficientNet-Lite0/1/2 at two input sides each, side by side in one run.

For each variant on an anomaly-layout folder (magnetic_tile): the good-only scorer of ``trainer package-anomaly``
(same config, only ``backbone`` and ``image_size`` change) fitted on train/good, its threshold from held-out
good parts (``fit_anomaly``), then on test/: image AUROC, recall and false-reject at that threshold; the same
through OpenVINO bf16 (the reduced precision the package gate may keep). On a class-folder set (NEU,
optional): a linear probe (logistic regression) on the pooled stride-32 map of the frozen backbone, accuracy
and ECE on a stratified test split. Latency last: p50 of one full inspection (station preprocessing of a real
test frame + the exported graph, batch 1, 2 threads) for every variant in ONNX Runtime fp32 and OpenVINO bf16,
all runners taking turns frame by frame in one loop so a noisy neighbour slows all alike.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from sklearn.metrics import roc_auc_score

DEFAULT_VARIANTS = (
    "tf_efficientnet_lite0@224",
    "tf_efficientnet_lite0@256",
    "tf_efficientnet_lite1@224",
    "tf_efficientnet_lite1@256",
    "tf_efficientnet_lite2@224",
    "tf_efficientnet_lite2@256",
)


def parse_variant(text: str) -> tuple[str, int]:
    from trainer.backbone import check_backbone_name, check_image_size

    name, _, size = text.partition("@")
    name = name if name.startswith("tf_") or name.startswith("mobilenet") else f"tf_efficientnet_{name}"
    check_backbone_name(name)
    return name, check_image_size(name, int(size or 256))[0]


def _anomaly_variant(
    name: str, size: int, good: list[np.ndarray], held: Any, folder: Path, console: Console
) -> tuple[dict[str, Any], Path, Any]:
    from inspector.contracts.manifest import Preprocess
    from inspector.models.preprocess import Preprocessor
    from trainer.anomaly import AnomalyConfig
    from trainer.backbone import build_backbone
    from trainer.export import export_onnx
    from trainer.network import InspectionNet
    from trainer.pipelines import fit_anomaly, net_scores, operating_points

    cfg = replace(AnomalyConfig(), backbone=name, image_size=(size, size))
    t0 = time.perf_counter()
    backbone, bspec = build_backbone(name, out_indices=cfg.out_indices)
    pre_spec = Preprocess(size=(size, size), resize="stretch", mean=bspec.mean, std=bspec.std, color="gray")
    pre = Preprocessor(pre_spec)
    scorer, anomaly, _ = fit_anomaly(backbone, pre, good, cfg, console)
    net = InspectionNet(backbone, scorer=scorer).eval()
    scores = net_scores(net, pre, held.images)
    row: dict[str, Any] = {
        "backbone": name,
        "image_size": size,
        "weights": bspec.weights,
        "auroc": float(roc_auc_score(held.is_defect, scores)),
        **_point(operating_points(scores, held.is_defect, anomaly.reject_raw)),
    }
    path = folder / f"{name}_{size}.onnx"
    export_onnx(net, torch.from_numpy(pre.batch(held.images[:2])), path)
    row["fit_and_score_s"] = round(time.perf_counter() - t0, 1)
    try:
        from trainer.precision import open_runner, run_all

        got = run_all(open_runner(path, "openvino", "bf16", 2), pre.batch(held.images))["anomaly_score"]
        row["bf16_auroc"] = float(roc_auc_score(held.is_defect, got))
        row.update(
            {f"bf16_{k}": v for k, v in _point(operating_points(got, held.is_defect, anomaly.reject_raw)).items()}
        )
    except Exception as err:  # noqa: BLE001 - no OpenVINO / no bf16 here: the fp32 figures stand
        row["bf16_error"] = str(err).splitlines()[0][:200]
    return row, path, pre


def _point(points: dict[str, Any]) -> dict[str, Any]:
    p = points["good_quantile"]
    return {"recall": p["recall"], "false_reject": p["false_reject_rate"]}


def _neu_variant(name: str, size: int, data: Path, per_class: int) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    from inspector.contracts.manifest import Preprocess
    from inspector.models.preprocess import Preprocessor
    from trainer.backbone import build_backbone
    from trainer.calibration import expected_calibration_error
    from trainer.data import load_rgb, scan_class_folders, stratified_split

    samples, _ = scan_class_folders(data)
    by_class: dict[int, list[Any]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    picked = [s for c in sorted(by_class) for s in by_class[c][:per_class]]
    splits = stratified_split(picked, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    backbone, bspec = build_backbone(name, out_indices=(4,))
    pre = Preprocessor(Preprocess(size=(size, size), resize="stretch", mean=bspec.mean, std=bspec.std))

    @torch.inference_mode()
    def feats(items: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        rows = []
        for i in range(0, len(items), 16):
            x = torch.from_numpy(pre.batch([np.asarray(load_rgb(s.path)) for s in items[i : i + 16]]))
            rows.append(backbone.eval()(x)[0].mean((2, 3)).numpy())
        return np.concatenate(rows), np.array([s.label for s in items])

    xtr, ytr = feats(splits["train"] + splits["val"])
    xte, yte = feats(splits["test"])
    probe = LogisticRegression(max_iter=2000, C=1.0).fit(xtr, ytr)
    prob = probe.predict_proba(xte)
    return {
        "neu_accuracy": float((prob.argmax(1) == yte).mean()),
        "neu_ece": float(expected_calibration_error(prob, yte)),
        "neu_test_images": int(len(yte)),
    }


def time_variants(
    items: list[tuple[str, Path, Any, np.ndarray]],
    runs: int = 40,
    precisions: tuple[str, ...] = ("onnxruntime:fp32", "openvino:bf16"),
) -> dict[str, dict[str, float]]:
    """p50 ms of preprocessing + graph per (variant, backend:precision), all taking turns in one loop."""
    from trainer.precision import open_runner

    runners = []
    for key, path, pre, frame in items:
        for bp in precisions:
            backend, precision = bp.split(":")
            try:
                runners.append((key, bp, open_runner(path, backend, precision, 2), pre, frame))
            except Exception:  # noqa: BLE001 - backend missing here: that column stays empty
                continue
    times: dict[tuple[str, str], list[float]] = {(k, bp): [] for k, bp, *_ in runners}
    for i in range(runs + 5):
        for key, bp, runner, pre, frame in runners:
            t0 = time.perf_counter()
            runner.run(pre.batch([frame]))
            if i >= 5:
                times[(key, bp)].append((time.perf_counter() - t0) * 1000)
    out: dict[str, dict[str, float]] = {}
    for (key, bp), t in times.items():
        out.setdefault(key, {})[f"p50_ms_{bp.replace(':', '_')}"] = round(statistics.median(t), 2)
    return out


def run_sweep(
    data: Path,
    variants: list[str],
    neu: Path | None = None,
    neu_per_class: int = 100,
    good_limit: int | None = None,
    runs: int = 40,
    console: Console | None = None,
) -> dict[str, Any]:
    from trainer.data import load_rgb, scan_anomaly
    from trainer.evaluate import load_test_split

    console = console or Console(stderr=True)
    parsed = [parse_variant(v) for v in variants]
    train = scan_anomaly(data).train
    if good_limit:
        train = train[:: max(1, len(train) // good_limit)][:good_limit]
    good = [np.asarray(load_rgb(s.path)) for s in train]
    held = load_test_split(data)
    rows, timing_items = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in parsed:
            console.print(f"sweep: {name} @ {size} px")
            row, path, pre = _anomaly_variant(name, size, good, held, Path(tmp), console)
            if neu is not None:
                row.update(_neu_variant(name, size, neu, neu_per_class))
            rows.append(row)
            timing_items.append((f"{name}@{size}", path, pre, held.images[0]))
        console.print("sweep: timing every variant side by side")
        timing = time_variants(timing_items, runs)
    for row in rows:
        row.update(timing.get(f"{row['backbone']}@{row['image_size']}", {}))
    from inspector.runtime.openvino_runner import cpu_description

    return {
        "data": str(data),
        "neu": str(neu) if neu else None,
        "train_good": len(good),
        "test": len(held.images),
        "cpu": cpu_description(),
        "threads": 2,
        "variants": rows,
    }


def table(report: dict[str, Any]) -> str:
    """The README's markdown table of a sweep report."""
    head = (
        "| backbone @ side | image AUROC | recall / FRR (good-only thr.) | bf16 AUROC | bf16 recall / FRR | "
        "NEU acc / ECE | p50 ORT fp32 | p50 OV bf16 |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in report["variants"]:
        neu = f"{r['neu_accuracy']:.3f} / {r['neu_ece']:.3f}" if "neu_accuracy" in r else "-"
        bf = (
            (f"{r['bf16_auroc']:.4f}", f"{r['bf16_recall']:.3f} / {r['bf16_false_reject']:.3f}")
            if "bf16_auroc" in r
            else ("-", "-")
        )
        lines.append(
            f"| {r['backbone'].replace('tf_efficientnet_', '')} @ {r['image_size']} | {r['auroc']:.4f} | "
            f"{r['recall']:.3f} / {r['false_reject']:.3f} | {bf[0]} | {bf[1]} | {neu} | "
            f"{r.get('p50_ms_onnxruntime_fp32', float('nan')):.2f} ms | "
            f"{r.get('p50_ms_openvino_bf16', float('nan')):.2f} ms |"
        )
    return "\n".join(lines)


def save(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))

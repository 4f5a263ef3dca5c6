"""Evaluate an EXPORTED package through the station's own runtime on the fixed held-out set.

The package is loaded with ``inspector.runtime.package.load_package`` and run with
``inspector.models.inference.InspectionModel`` (same preprocessing, same post-processing, same
threshold), so the figures describe what the station will run.

Held-out sets: the anomaly layout's ``test/`` folder; for class folders the ``test`` part of the fixed
stratified 60/20/20 split (seed 0) from ``trainer.data``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score, roc_curve

from inspector.contracts.config import RuntimeSection
from inspector.contracts.errors import DataError, FrameError
from inspector.contracts.labels import GOOD_LABEL
from inspector.contracts.manifest import Manifest
from inspector.evaluation import infer_frames
from inspector.models.preprocess import letterbox_geometry
from inspector.runtime.package import ModelPackage, load_package

log = logging.getLogger(__name__)

SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
MASK_SIDE = 128  # masks and maps are compared at this longer side (pixel AUROC)
ECE_BINS = 15


@dataclass
class EvalSet:
    """Held-out frames: uint8 RGB images, their label names (class, or 'good' / defect type), masks."""

    images: list[np.ndarray]
    label_names: list[str]
    masks: list[np.ndarray | None] = field(default_factory=list)  # bool (H,W), None where no mask
    source: str = ""

    @property
    def is_defect(self) -> np.ndarray:
        return np.array([n != GOOD_LABEL for n in self.label_names], dtype=int)


def _read_mask(path: Path | None) -> np.ndarray | None:
    if path is None:
        return None
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise DataError(f"cannot read mask {path}", "replace the mask file")
    return m > 127  # masks are anti-aliased


def load_test_split(data_dir: str | Path, seed: int = 0, limit: int | None = None) -> EvalSet:
    """A data folder's TEST split for offline package evaluation (``trainer package-*``, ``trainer evaluate``):
    anomaly layout: test/; class folders: the 20 % stratified test split.

    Not the station's held-out set: that one is ``trainer.heldout`` (half of every test/<class>, frozen by file
    hash at commissioning, never trained on), which the retraining and the gates use."""
    from trainer.data import scan_anomaly, scan_class_folders, stratified_split
    from trainer.heldout import load_rgb

    root = Path(data_dir)
    if (root / "train" / GOOD_LABEL).is_dir():
        samples = scan_anomaly(root).test
        names = [s.defect or GOOD_LABEL for s in samples]
        source = f"{root}/test"
    else:
        all_samples, _ = scan_class_folders(root)
        samples = stratified_split(all_samples, SPLIT_FRACTIONS, seed=seed)["test"]
        names = [s.label_name for s in samples]
        source = f"{root} stratified 60/20/20 seed {seed}: test"
    if limit is not None:
        picked = np.linspace(0, len(samples) - 1, min(limit, len(samples))).round().astype(int)
        samples, names = [samples[i] for i in picked], [names[i] for i in picked]
    images = [load_rgb(s.path) for s in samples]
    masks = [_read_mask(s.mask) for s in samples]
    return EvalSet(images, names, masks, source)


def run_package(
    package: ModelPackage, images: list[np.ndarray], threads: int = 2, precision: str = "auto"
) -> list[Any]:
    """ModelOutputs of every image through InspectionModel; a FrameError fails the evaluation."""
    runtime = RuntimeSection(threads=threads, precision=precision)  # type: ignore[arg-type]  # a CLI str, validated here
    outs = infer_frames(package, images, runtime)
    bad = [(i, o) for i, o in enumerate(outs) if isinstance(o, FrameError)]
    if bad:
        raise DataError(
            f"{len(bad)} held-out frames failed inference, first #{bad[0][0]}: {bad[0][1]}",
            "fix or remove the frames, or rebuild the package",
        )
    return outs


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (confidence > lo) & (confidence <= hi)
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - confidence[sel].mean())
    return float(ece)


def classifier_metrics(manifest: Manifest, outs: list[Any], label_names: list[str]) -> dict[str, Any]:
    classes = manifest.class_names or sorted(set(label_names))
    unknown = sorted(set(label_names) - set(classes))
    if unknown:
        raise DataError(
            f"held-out labels {unknown} are not classes of the package {classes}",
            "evaluate the package on the data set it was trained for",
        )
    probs = np.array([[o.class_probs[c] for c in classes] for o in outs])
    y = np.array([classes.index(n) for n in label_names])
    pred = probs.argmax(1)
    cm = confusion_matrix(y, pred, labels=list(range(len(classes))))
    recall = {c: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None for i, c in enumerate(classes)}
    return {
        "n": len(y),
        "classes": classes,
        "accuracy": float((pred == y).mean()),
        "per_class_recall": recall,
        "confusion_matrix": cm.tolist(),
        "ece": expected_calibration_error(probs.max(1), pred == y),
        "_probs": probs,
        "_y": y,
    }


def _map_to_mask(amap: np.ndarray, mask_hw: tuple[int, int], manifest: Manifest) -> np.ndarray:
    """The network-space map placed over the original frame (undoing a letterbox), at ``mask_hw``."""
    if manifest.preprocess.resize == "letterbox":
        net_h, net_w = manifest.preprocess.size
        box = letterbox_geometry(mask_hw, (net_h, net_w))
        sy, sx = amap.shape[0] / net_h, amap.shape[1] / net_w
        y0, x0 = int(box.top * sy), int(box.left * sx)
        y1, x1 = (
            max(y0 + 1, int(round((box.top + box.height) * sy))),
            max(x0 + 1, int(round((box.left + box.width) * sx))),
        )
        amap = amap[y0:y1, x0:x1]
    return cv2.resize(amap.astype(np.float32), (mask_hw[1], mask_hw[0]), interpolation=cv2.INTER_LINEAR)


def pixel_auroc(manifest: Manifest, outs: list[Any], held: EvalSet) -> float | None:
    """Pixel AUROC over defect images with masks plus good images (all-zero masks), at MASK_SIDE."""
    ys, ss = [], []
    for out, img, mask, name in zip(outs, held.images, held.masks or [None] * len(outs), held.label_names, strict=True):
        if out.anomaly_map is None or (mask is None and name != GOOD_LABEL):
            continue
        h, w = img.shape[:2]
        scale = min(1.0, MASK_SIDE / max(h, w))
        hw = (max(1, round(h * scale)), max(1, round(w * scale)))
        m = (
            np.zeros(hw, bool)
            if mask is None
            else cv2.resize(mask.astype(np.uint8) * 255, (hw[1], hw[0]), interpolation=cv2.INTER_AREA) > 127
        )
        ys.append(m.ravel())
        ss.append(_map_to_mask(out.anomaly_map, hw, manifest).ravel())
    if not ys:
        return None
    y = np.concatenate(ys)
    return float(roc_auc_score(y, np.concatenate(ss))) if 0 < y.sum() < y.size else None


def rate_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Exact (Clopper-Pearson) interval of a rate observed as ``k`` events in ``n`` trials; None when n = 0.

    A false-reject rate measured on 193 good parts is not known to better than a few points: the interval
    says how far the line's true rate can be from the figure printed.
    """
    from scipy.stats import binomtest

    if n <= 0:
        return None
    ci = binomtest(k, n).proportion_ci(confidence, method="exact")
    return round(float(ci.low), 4), round(float(ci.high), 4)


def anomaly_metrics(manifest: Manifest, outs: list[Any], held: EvalSet) -> dict[str, Any]:
    raw = np.array([o.anomaly_raw for o in outs], dtype=float)
    score = np.array([o.anomaly_score for o in outs], dtype=float)
    y = held.is_defect
    cut = 1.0 - (manifest.anomaly.review_margin if manifest.anomaly else 0.0)  # the line rejects from here (REVIEW)
    pred = (score >= cut).astype(int)
    names = np.array(held.label_names)
    per_class: dict[str, Any] = {}
    for d in sorted(set(held.label_names) - {GOOD_LABEL}):
        sel = names == d
        both = sel | (y == 0)
        per_class[d] = {
            "n": int(sel.sum()),
            "detection_rate": float(pred[sel].mean()),
            "auroc": float(roc_auc_score(y[both], raw[both])) if (y[both] == 0).any() else None,
        }
    two = 0 < y.sum() < len(y)
    good, bad = pred[y == 0], pred[y == 1]
    return {
        "n": len(y),
        "n_good": int((y == 0).sum()),
        "n_defect": int(y.sum()),
        "threshold": manifest.anomaly.threshold if manifest.anomaly else None,
        "image_auroc": float(roc_auc_score(y, raw)) if two else None,
        "pixel_auroc": pixel_auroc(manifest, outs, held),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "false_reject_rate": float(good.mean()) if good.size else None,
        "escape_rate": float(1 - bad.mean()) if bad.size else None,
        "false_reject_rate_ci95": rate_interval(int(good.sum()), len(good)),
        "recall_ci95": rate_interval(int(bad.sum()), len(bad)),
        "per_defect": per_class,
        "_raw": raw,
        "_score": score,
        "_y": y,
    }


def evaluate_package(
    package: str | Path | ModelPackage,
    held: EvalSet,
    plots_dir: str | Path | None = None,
    threads: int = 2,
    precision: str = "auto",
) -> dict[str, Any]:
    """Metrics (and PNG plots) of the package on the held-out frames."""
    pkg = package if isinstance(package, ModelPackage) else load_package(package)
    m = pkg.manifest
    outs = run_package(pkg, held.images, threads, precision)
    report: dict[str, Any] = {
        "package": m.name,
        "version": m.version,
        "precision": precision,
        "source": held.source,
        "n": len(outs),
    }
    if m.model.outputs.class_probs:
        labels = held.label_names
        if m.task == "combined" and m.class_names and set(m.class_names) == {m.good_class, "defect"}:
            labels = [n if n == GOOD_LABEL else "defect" for n in labels]
        known = set(m.class_names or labels)
        keep = [i for i, n in enumerate(labels) if n in known]
        if m.class_names and len(keep) < len(labels) and keep:
            # held-out defects of a class the classifier was not given (too few labelled frames): the
            # anomaly scorer's metrics cover them; the classifier is scored on the classes it knows
            report["classifier"] = classifier_metrics(m, [outs[i] for i in keep], [labels[i] for i in keep])
            excluded: dict[str, int] = {}
            for n in labels:
                if n not in known:
                    excluded[n] = excluded.get(n, 0) + 1
            report["classifier"]["excluded_labels"] = excluded
        else:
            report["classifier"] = classifier_metrics(m, outs, labels)
    if m.model.outputs.anomaly_score:
        report["anomaly"] = anomaly_metrics(m, outs, held)
    if plots_dir is not None:
        report["plots"] = write_plots(report, Path(plots_dir))
    return strip_private(report)


def strip_private(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: strip_private(v) for k, v in d.items() if not str(k).startswith("_")}
    return d


def write_plots(report: dict[str, Any], folder: Path) -> list[str]:
    """ROC curve, score histogram with the threshold line, confusion matrix (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    an = report.get("anomaly")
    if an and 0 < an["_y"].sum() < len(an["_y"]):
        fpr, tpr, _ = roc_curve(an["_y"], an["_raw"])
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(fpr, tpr, label=f"AUROC {an['image_auroc']:.3f}")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="image ROC")
        ax.legend(loc="lower right")
        written.append(_save(fig, folder / "roc.png"))
        fig, ax = plt.subplots(figsize=(5, 3.5))
        bins = np.linspace(0, max(2.0, float(np.quantile(an["_score"], 0.99))), 40)
        ax.hist(np.clip(an["_score"][an["_y"] == 0], 0, bins[-1]), bins, alpha=0.6, label="good")
        ax.hist(np.clip(an["_score"][an["_y"] == 1], 0, bins[-1]), bins, alpha=0.6, label="defect")
        ax.axvline(1.0, color="r", label="threshold")
        ax.set(xlabel="anomaly score (threshold = 1)", ylabel="images")
        ax.legend()
        written.append(_save(fig, folder / "score_hist.png"))
    cl = report.get("classifier")
    if cl:
        cm = np.array(cl["confusion_matrix"])
        fig, ax = plt.subplots(figsize=(1 + 0.6 * len(cm), 1 + 0.6 * len(cm)))
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(cm)), cl["classes"], rotation=45, ha="right")
        ax.set_yticks(range(len(cm)), cl["classes"])
        ax.set(xlabel="predicted", ylabel="true", title=f"accuracy {cl['accuracy']:.3f}")
        written.append(_save(fig, folder / "confusion.png"))
    return written


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{report['package']}[/] {report['version']} on {report['source']} ({report['n']} images)")
    cl = report.get("classifier")
    if cl:
        t = Table(title=f"classifier: accuracy {cl['accuracy']:.4f}, ECE {cl['ece']:.4f}")
        t.add_column("class")
        t.add_column("recall", justify="right")
        for c, r in cl["per_class_recall"].items():
            t.add_row(c, "-" if r is None else f"{r:.3f}")
        console.print(t)
    an = report.get("anomaly")
    if an:
        t = Table(title="anomaly at the package threshold")
        t.add_column("figure")
        t.add_column("value", justify="right")
        for k in ("image_auroc", "pixel_auroc", "f1", "false_reject_rate", "escape_rate", "threshold"):
            t.add_row(k, "-" if an[k] is None else f"{an[k]:.4f}")
        for k in ("false_reject_rate_ci95", "recall_ci95"):
            if an.get(k):
                t.add_row(k.replace("_ci95", " 95% interval"), f"{an[k][0]:.3f} - {an[k][1]:.3f}")
        for d, v in an["per_defect"].items():
            t.add_row(f"detection rate {d} (n={v['n']})", f"{v['detection_rate']:.3f}")
        console.print(t)
    for p in report.get("plots", []):
        console.print(f"plot: {p}")

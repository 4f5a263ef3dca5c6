"""The learning curve's points and how they are shown (``trainer.learning_curve``): one point per labelled
fraction pooled over its rotations, a rich table, a matplotlib plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from trainer.learning_curve_thresholds import rate_interval


def curve_point(fraction: float, rotations: list[dict[str, Any]]) -> dict[str, Any]:
    """One curve point from its rotations: pooled counts (recall, false rejects) and mean AUROC."""
    det = sum(r["detected"] for r in rotations)
    n_def = sum(r["defects"] for r in rotations)
    fr = sum(r["false_rejects"] for r in rotations)
    n_good = sum(r["goods"] for r in rotations)
    per_class = _pooled_per_class(rotations)
    # the rotations judge the same images more than once (a defect at both good rotations' thresholds and in
    # several defect rotations, a test/good image once per defect rotation): intervals use the pooled rates on
    # the number of DISTINCT images judged, not on the number of judgements
    hs = rotations[0].get("good_rotations", 1)
    n_def_eff = n_def // hs
    distinct_def = len(set().union(*(set(r["scored_defect_ids"]) for r in rotations)))
    distinct_good = rotations[0]["test_goods"]
    recalls = [r["detected"] / r["defects"] for r in rotations]
    aurocs = [r["auroc"] for r in rotations]
    return {
        "labelled_fraction": fraction,
        "labelled_defects": round(float(np.mean([r["labelled"] for r in rotations])), 1),
        "recall": round(det / n_def, 4),
        "false_reject_rate": round(fr / n_good, 4),
        "image_auroc": round(float(np.mean(aurocs)), 4),
        "recall_ci95": rate_interval(det / n_def * distinct_def, distinct_def),
        "false_reject_rate_ci95": rate_interval(fr / n_good * distinct_good, distinct_good),
        "rotations": len(rotations),
        "good_rotations": hs,
        "recall_range": [round(min(recalls), 4), round(max(recalls), 4)],
        "image_auroc_range": [round(min(aurocs), 4), round(max(aurocs), 4)],
        "per_class_recall": {c: round(k / n, 4) for c, (k, n) in per_class.items()},
        "threshold": round(float(np.mean([r["threshold"] for r in rotations])), 4),
        "at_plain_quantile": {
            "recall": round(sum(r["plain_quantile"]["detected"] for r in rotations) / n_def, 4),
            "false_reject_rate": round(sum(r["plain_quantile"]["false_rejects"] for r in rotations) / n_good, 4),
        },
        "at_pooled_upper_bound": {  # the Clopper-Pearson rule on all threshold goods pooled (the previous default)
            "recall": round(sum(r["pooled_upper_bound"]["detected"] for r in rotations) / n_def, 4),
            "false_reject_rate": round(sum(r["pooled_upper_bound"]["false_rejects"] for r in rotations) / n_good, 4),
        },
        "oracle_recall": round(float(np.mean([r["oracle_recall"] for r in rotations])), 4),
        "by_rotation": _by_rotation(rotations),
        "scored_defects": n_def_eff,
        "scored_goods": n_good,
        "distinct_scored_defects": distinct_def,
        "distinct_scored_goods": distinct_good,
        "median_good_score": {
            k: round(float(np.mean([r["median_good_score"][k] for r in rotations])), 4)
            for k in ("train_good_heldout", "test_good")
        },
        "models_with_probe": f"{sum(r['probe_models'] for r in rotations)}/{sum(len(r['models']) for r in rotations)}",
        "chosen_alpha": sorted({m["alpha"] for r in rotations for m in r["models"]}),
    }


def _pooled_per_class(rotations: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Per defect class, [detected, judged] summed over the rotations."""
    per_class: dict[str, list[int]] = {}
    for r in rotations:
        for c, (k, n) in r["per_class"].items():
            acc = per_class.setdefault(c, [0, 0])
            acc[0] += k
            acc[1] += n
    return per_class


def _by_rotation(rotations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (defect rotation, good rotation): its false rejects, recall and threshold."""
    return [
        {
            "defect_rotation": i,
            "good_rotation": g["good_rotation"],
            "false_rejects": f"{g['false_rejects']}/{g['goods']}",
            "recall": round(g["detected"] / g["defects"], 4),
            "threshold": round(g["threshold"], 4),
            "threshold_goods": g["threshold_goods"],
        }
        for i, r in enumerate(rotations)
        for g in r["by_good_rotation"]
    ]


def print_curve(result: dict[str, Any], console: Console) -> None:
    """The curve as a rich table."""
    t = Table(
        title=f"learning curve: recall at a false-reject target of {result['target_false_reject']:.0%} "
        "(threshold from held-out good images)"
    )
    for col in (
        "labelled",
        "defects labelled",
        "recall (95 % CI)",
        "false-reject",
        "image AUROC",
        "probe models",
        "per-class recall",
    ):
        t.add_column(col, justify="right" if col != "per-class recall" else "left")
    for p in result["points"]:
        ci = p["recall_ci95"]
        t.add_row(
            f"{p['labelled_fraction']:.0%}",
            f"{p['labelled_defects']:g}",
            f"{p['recall']:.3f} ({ci[0]:.3f}-{ci[1]:.3f})" if ci else f"{p['recall']:.3f}",
            f"{p['false_reject_rate']:.2%}",
            f"{p['image_auroc']:.4f}",
            p["models_with_probe"],
            " ".join(f"{c} {r:.2f}" for c, r in p["per_class_recall"].items()),
        )
    console.print(t)
    console.print(f"time: {result['seconds']}")


def plot_curve(result: dict[str, Any], path: str | Path, dpi: int = 90) -> Path:
    """Recall and image AUROC against the labelled fraction (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = result["points"]
    x = [100 * p["labelled_fraction"] for p in pts]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    rec = [p["recall"] for p in pts]
    lo = [p["recall"] - p["recall_ci95"][0] if p["recall_ci95"] else 0 for p in pts]
    hi = [p["recall_ci95"][1] - p["recall"] if p["recall_ci95"] else 0 for p in pts]
    ax.errorbar(
        x,
        rec,
        yerr=[lo, hi],
        marker="o",
        capsize=3,
        label=f"recall at {result['target_false_reject']:.0%} false-reject (95 % CI)",
    )
    ax.plot(x, [p["image_auroc"] for p in pts], marker="s", label="image AUROC")
    ax.axhline(pts[0]["recall"], color="grey", lw=0.8, ls=":", label="good-only recall")
    ax.set_xlabel("labelled defects per class (%)")
    ax.set_ylabel("recall / AUROC")
    ax.set_title(f"learning curve: {Path(result['data'] or 'synthetic').name}", fontsize=10)
    ax.grid(alpha=0.3)
    fr = ax.twinx()  # the false-reject rate on the scored test/good images, against its budget
    fr.plot(
        x,
        [100 * p["false_reject_rate"] for p in pts],
        marker="v",
        color="tab:red",
        lw=1,
        label="false-reject on test/good (%, right)",
    )
    fr.axhline(100 * result["target_false_reject"], color="tab:red", lw=0.8, ls="--", label="false-reject budget")
    fr.set_ylim(0, max(6.0, 110 * max(p["false_reject_rate"] for p in pts)))
    fr.set_ylabel("false-reject (%)", color="tab:red")
    lines = ax.get_legend_handles_labels()
    more = fr.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path

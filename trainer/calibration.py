"""Temperature scaling and expected calibration error (ECE).

The temperature ``T`` is fitted on validation logits by minimising the negative log-likelihood of
``softmax(logits / T)`` (scipy bounded scalar search on log T: one parameter, exact, deterministic).
It never changes the argmax, so accuracy is unchanged; the package exports ``softmax(logits / T)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

N_BINS = 15


@dataclass(frozen=True)
class ReliabilityBins:
    edges: np.ndarray  # [n_bins + 1]
    confidence: np.ndarray  # mean confidence per bin (nan when empty)
    accuracy: np.ndarray  # accuracy per bin (nan when empty)
    count: np.ndarray  # samples per bin


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> ReliabilityBins:
    """Equal-width bins of top-class confidence in (0, 1]; a confidence c falls in bin ceil(c * n) - 1."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(float)
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return ReliabilityBins(np.linspace(0, 1, n_bins + 1), mean_conf, acc, count)


def expected_calibration_error(
    probs: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, n_bins: int = N_BINS
) -> float:
    """ECE = sum over bins of (n_b / N) * |accuracy_b - confidence_b| (15 equal-width bins by default)."""
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels)
    bins = reliability_bins(p, y, n_bins)
    mask = bins.count > 0
    gap = np.abs(bins.accuracy[mask] - bins.confidence[mask])
    return float(np.sum(bins.count[mask] / len(y) * gap))


def softmax_t(logits: torch.Tensor, temperature: float = 1.0) -> np.ndarray:
    return torch.softmax(logits.double() / temperature, dim=1).numpy()


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    return float(F.cross_entropy(logits.double() / temperature, labels).item())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature minimising validation NLL (bounded search over log T)."""
    logits = logits.detach().double()
    labels = labels.detach().long()
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(
        lambda lt: nll(logits, labels, math.exp(lt)), bounds=(lo, hi), method="bounded", options={"xatol": 1e-4}
    )
    return float(math.exp(res.x))


@dataclass(frozen=True)
class CalibrationReport:
    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in self.__dict__.items()}


def calibrate(
    val_logits: torch.Tensor, val_labels: torch.Tensor, test_logits: torch.Tensor, test_labels: torch.Tensor
) -> CalibrationReport:
    """Fit T on validation; report ECE and NLL on the test split before and after."""
    t = fit_temperature(val_logits, val_labels)
    y = test_labels.numpy()
    return CalibrationReport(
        temperature=t,
        ece_before=expected_calibration_error(softmax_t(test_logits), y),
        ece_after=expected_calibration_error(softmax_t(test_logits, t), y),
        nll_before=nll(test_logits, test_labels, 1.0),
        nll_after=nll(test_logits, test_labels, t),
    )


def reliability_diagram(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float, path: Path, n_bins: int = N_BINS
) -> Path:
    """PNG with the reliability curves before and after temperature scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = labels.numpy()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    for ax, t, title in ((axes[0], 1.0, "before"), (axes[1], temperature, f"after (T={temperature:.3f})")):
        probs = softmax_t(logits, t)
        bins = reliability_bins(probs, y, n_bins)
        centers = (bins.edges[:-1] + bins.edges[1:]) / 2
        used = bins.count > 0
        ax.bar(centers[used], bins.accuracy[used], width=1 / n_bins, edgecolor="black", alpha=0.7, label="accuracy")
        ax.plot(bins.confidence[used], bins.accuracy[used], "o", color="red", ms=4, label="(confidence, accuracy)")
        for c, a, n in zip(centers[used], bins.accuracy[used], bins.count[used], strict=True):
            ax.annotate(str(n), (c, min(a, 0.95)), ha="center", va="bottom", fontsize=7)
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ece = expected_calibration_error(probs, y, n_bins)
        ax.set_title(f"{title}: ECE {ece:.4f}")
        ax.set_xlabel("confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""How much the anomaly package's threshold and model depend on WHICH good images are held out.

``python -m trainer.threshold_study DATA [--folds 5] [--json]`` (anomaly layout: train/good, test/<class>),
the default scorer of ``trainer package-anomaly``, one backbone pass over train/good and test/:

- one row per fold f: the scorer fitted without fold f (the goods with index % folds == f), its image AUROC on
  test/, and recall / false-reject on test/ at the threshold set from fold f's goods alone (fold 2 is the rule
  ``--threshold-from holdout`` ships: ``split_holdout``);
- the shipped rule (``trainer.anomaly_crossfit``): the scorer fitted on every good image, the threshold from
  the pooled out-of-fold scores of all of them (their split-conformal rank, ``threshold_good_quantile``);
- with ``--ranks K``: the shipped scorer at the out-of-fold scores one rank below the shipped one to K above,
  each with the chance that a new good part exceeds it, (n + 1 - k)/(n + 1), and the chance that the line's
  false-reject rate at it is over the target (the coverage of rank k is Beta(k, n + 1 - k)): how steep the
  trade between false rejects and recall is around the threshold. Read from the test set, chosen by nothing.

Numbers a maintainer needs before trusting one held-out fifth: the spread of the rows is what one fifth
costs. The README's table "The threshold from every good image" comes from this command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from trainer.anomaly_config import AnomalyConfig

app = typer.Typer(add_completion=False)
console = Console(stderr=True)


def _row(name: str, scores: np.ndarray, is_defect: np.ndarray, threshold: float, n_threshold: int) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    from trainer.evaluate import rate_interval

    flagged = scores > threshold
    n_fr = int(flagged[~is_defect].sum())
    return {
        "rule": name,
        "threshold_images": n_threshold,
        "threshold": round(float(threshold), 4),
        "image_auroc": round(float(roc_auc_score(is_defect, scores)), 4),
        "recall": round(float(flagged[is_defect].mean()), 4),
        "false_rejects": n_fr,
        "false_reject_rate": round(n_fr / int((~is_defect).sum()), 4),
        "false_reject_ci95": rate_interval(n_fr, int((~is_defect).sum())),
    }


def rank_rows(
    oof: np.ndarray, test: np.ndarray, is_defect: np.ndarray, target: float, above: int
) -> list[dict[str, Any]]:
    """The test split at out-of-fold ranks around the shipped threshold's (one below it to ``above`` above)."""
    from scipy.stats import beta

    from trainer.anomaly import conformal_rank

    ranked, n = np.sort(oof), len(oof)
    shipped = conformal_rank(n, target)
    rows = []
    for k in range(max(1, shipped - 1), min(n, shipped + above) + 1):
        row = _row(f"out-of-fold rank {k}" + (" (shipped)" if k == shipped else ""), test, is_defect, ranked[k - 1], n)
        row["expected_frr"] = round((n + 1 - k) / (n + 1), 4)
        row["p_frr_over_target"] = round(float(beta.cdf(1.0 - target, k, n + 1 - k)), 3)
        rows.append(row)
    return rows


def study(data_dir: Path, folds: int = 5, cfg: AnomalyConfig | None = None, ranks: int = 0) -> list[dict[str, Any]]:
    """One row per held-out fold, then the shipped cross-fit rule, then ``ranks`` (see the module docstring)."""
    from inspector.models.preprocess import Preprocessor
    from trainer.anomaly import threshold_good_quantile
    from trainer.anomaly_crossfit import (
        backbone_features,
        fit_on_rows,
        fold_scorers,
        image_batches,
        scores_on_features,
    )
    from trainer.backbone import build_backbone
    from trainer.data import scan_anomaly
    from trainer.evaluate import load_test_split
    from trainer.pipelines import _anomaly_preprocess, _rgb

    cfg = cfg or AnomalyConfig()
    good = [_rgb(s.path) for s in scan_anomaly(data_dir).train]
    backbone, bspec = build_backbone(cfg.backbone, out_indices=cfg.out_indices)
    pre = Preprocessor(_anomaly_preprocess(cfg, bspec))
    held = load_test_split(data_dir)
    is_defect = held.is_defect.astype(bool)
    console.print(f"backbone pass: {len(good)} train/good, {len(held.images)} test")
    f_good = backbone_features(backbone, image_batches(pre, good, cfg.batch_size))
    f_test = backbone_features(backbone, image_batches(pre, held.images, cfg.batch_size))
    test_rows = np.arange(len(held.images))
    rows, oof = [], np.zeros(len(good))
    console.print(f"fitting {folds} fold scorers on {len(good)} goods less one fold each")
    for f, (held_rows, scorer) in enumerate(fold_scorers(backbone, f_good, cfg, folds)):
        oof[held_rows] = scores_on_features(scorer, f_good, held_rows, cfg.batch_size)
        thr = threshold_good_quantile(oof[held_rows], cfg.target_false_reject)
        test = scores_on_features(scorer, f_test, test_rows, cfg.batch_size)
        name = f"without fold {f}, threshold from it" + (" (the holdout rule)" if f == 2 else "")
        rows.append(_row(name, test, is_defect, thr, len(held_rows)))
        console.print(f"fold {f + 1}/{folds}: AUROC {rows[-1]['image_auroc']:.4f}")
    console.print(f"shipped: fitting on all {len(good)} goods")
    test = scores_on_features(
        fit_on_rows(backbone, f_good, np.arange(len(good)), cfg), f_test, test_rows, cfg.batch_size
    )
    thr = threshold_good_quantile(oof, cfg.target_false_reject)
    rows.append(_row(f"all goods, {folds}-fold cross-fit (default)", test, is_defect, thr, len(good)))
    return rows + (rank_rows(oof, test, is_defect, cfg.target_false_reject, ranks) if ranks > 0 else [])


@app.command()
def main(
    data: Annotated[Path, typer.Argument(help="Anomaly-layout folder: train/good, test/<class>.")],
    folds: Annotated[int, typer.Option(help="Folds of the good images (5: the package's rule).")] = 5,
    ranks: Annotated[int, typer.Option(help="Also the out-of-fold ranks up to this many above the shipped one.")] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Per held-out fold: AUROC, recall and false-reject at that fold's threshold; then the shipped rule."""
    if folds < 2:
        console.print(f"[red]error:[/] --folds {folds}: use 2 or more")
        raise typer.Exit(code=2)
    rows = study(data, folds, ranks=ranks)
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title=f"threshold and model by held-out goods: {data} (target false-reject 2 %)")
    columns = ["rule", "thr. images", "image AUROC", "recall", "false rejects", "FRR (95 % interval)"]
    for col in columns + (["new good over it", "P(FRR > target)"] if ranks > 0 else []):
        table.add_column(col)
    for r in rows:
        ci = r["false_reject_ci95"] or (0.0, 0.0)
        table.add_row(
            r["rule"],
            str(r["threshold_images"]),
            f"{r['image_auroc']:.4f}",
            f"{r['recall']:.3f}",
            str(r["false_rejects"]),
            f"{r['false_reject_rate']:.2%} ({ci[0]:.1%}-{ci[1]:.1%})",
            *([f"{r['expected_frr']:.2%}", f"{r['p_frr_over_target']:.3f}"] if "expected_frr" in r else []),
        )
    Console(width=None if sys.stdout.isatty() else 120).print(table)


if __name__ == "__main__":
    app()

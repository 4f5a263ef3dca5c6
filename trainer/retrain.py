"""The retraining of a station: one path, owned by the trainer; ``jobs/`` only calls these steps.

    snapshot(cfg, store, stage, since)          held-out set, base items, a labelling dataset version, splits
    train(cfg, stage, incumbent)                the SAME KIND of package as the incumbent: fit, export, INT8 gate
    evaluate(cfg, stage, incumbent)             candidate and incumbent on the same frames, the gate, drift reference
    package(cfg, stage, job_id)                 manifest written ONCE with everything, verified, renamed into place

Each step is a function of plain inputs (config, store, paths, ids) that returns JSON-able info, and reads
what an earlier step left in the staging folder ``<data_dir>/models/.staging-<job id>/``::

    labels/            the labelling service's exported dataset version (classification layout)
    work/              snapshot.json, the classifier run, draft.json (the in-memory manifest), evaluation.json
    package/           ONNX files and canaries; manifest.json appears only in :func:`package`

:func:`package` renames ``package/`` to ``<data_dir>/models/<version>`` after ``load_package`` verified it and
then deletes the staging folder (the label export is a view of the archive: its dataset version hash and
the image hashes in the manifest's data snapshot name exactly what was trained on). A killed worker leaves a
staging folder behind, never a half-built package under a version name.

Data (``trainer.heldout``): the station's frozen held-out set is never trained on (every training item whose
sha256 is in it is dropped and counted). Training material: the base folder's ``train/good`` (at most
``jobs.train_images``, evenly spaced) and its test images not held out, plus every current label. Labels made
since the incumbent was promoted (``since``) are split per label by sha256 order: even positions train,
odd positions form the "recent" gate set, scored for candidate and incumbent alike.

Kind: the incumbent manifest's ``task`` (a combined model stays combined: classifier head on the labelled
classes plus the good-only scorer on one backbone pass); no incumbent: combined when labelled defects of at
least 2 classes reach ``jobs.min_class_frames`` training frames, else anomaly-only. A defect class below the
minimum gets no classifier output: a class learnt from a handful of frames is a confident guess (FIELD-NOTES:
a probe fitted on 10 % of the defects fell below the good-only score), and the anomaly scorer still rejects
its parts; its frames stay in the gate sets, so the gate measures that.

A combined package is FUSED (``trainer.fusion_head``): one graph whose ``anomaly_score`` is the learning
curve's fused defect score (``wknn`` good-only score + a guarded ridge probe on pooled stages 2-4 and the
scorer's patch statistics, fitted on the bank goods, inner cross-fitted, and EVERY labelled defect of any
class), thresholded on good frames neither the bank nor the probe saw by the curve's Clopper-Pearson rule;
``outputs.classifier_decides`` is False: that score alone decides, the classifier head only names the class
(``inspector.decision._decide_by_score``), and the canaries are chosen by the fused score alone. With fewer
labelled defects than ``FusionConfig.min_defects`` the fused score is the (monotone) good-only score.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from inspector.archive import Archive
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import DataError, InspectorError
from inspector.contracts.lifecycle import GateReport, LineMetrics
from inspector.contracts.manifest import Manifest, Preprocess
from inspector.drift.reference import reference_from_samples
from inspector.evaluation import Scored, line_metrics, score_frames
from inspector.gates import HELDOUT, RECENT, evaluate_gates
from inspector.runtime.package import ModelPackage, hash_file, load_package
from trainer.heldout import (
    GOOD,
    LabelledImage,
    base_training_items,
    file_sha256,
    labelled_frames,
    load_heldout_set,
    load_images,
    without_heldout,
)

Say = Callable[[str], None]

#: The classifier recipe of retrained combined / classification packages (``jobs.classifier_recipe`` overrides).
#: A linear probe on cached, pooled stride-32 features of the frozen ImageNet backbone (``train_blocks=0``:
#: the backbone the anomaly scorer reads stays exactly as fitted, and the job costs one backbone pass per
#: frame). ``class_weights`` OFF: on a line the prior is honest (good parts dominate) and inverse-frequency
#: weights (x47 for 16 fray tiles against 759 good ones) push good parts into defect classes; measured on
#: magnetic_tile with weights on and LP-FT, the classifier's own test accuracy was 0.39, i.e. a classifier that
#: rejects good parts. Without weights a rare class is called only when the features are clear, and the
#: good-only scorer still rejects what the classifier misses (decide(): either model's reject rejects).
#: Augmentation ``tile-anomaly``: flips and mild photometric changes; no crop (it can cut a defect at a part's
#: edge off the image and leave a wrong label), no erasing (it paints fake defects). ``image_size`` is set
#: from ``jobs.anomaly_image_size``: one preprocessing for both heads.
RETRAIN_RECIPE_FIELDS: dict[str, Any] = dict(
    name="station-retrain", backbone="tf_efficientnet_lite0", head="linear", train_blocks=0, epochs=40,
    finetune_epochs=0, patience=6, views=1, class_weights=False, policy="tile-anomaly", threads=2,
)
SNAPSHOT_FILE = "snapshot.json"
DRAFT_FILE = "draft.json"
EVALUATION_FILE = "evaluation.json"


# -- paths ----------------------------------------------------------------------------------------------
def models_dir(cfg: StationConfig) -> Path:
    return (Path(cfg.data_dir) / "models").resolve()


def staging_dir(cfg: StationConfig, job_id: str) -> Path:
    return models_dir(cfg) / f".staging-{job_id}"


def _work(stage: Path) -> Path:
    return Path(stage) / "work"


def _read(stage: Path, name: str) -> dict[str, Any]:
    f = _work(stage) / name
    if not f.is_file():
        raise InspectorError(f"{f} is missing", "run the retraining steps in order (snapshot, train, evaluate, package)")
    return json.loads(f.read_text())


def _write(stage: Path, name: str, body: dict[str, Any]) -> None:
    _work(stage).mkdir(parents=True, exist_ok=True)
    (_work(stage) / name).write_text(json.dumps(body, indent=1))


def _say(say: Say | None) -> Say:
    if say is not None:
        return say
    console = Console(stderr=True)
    return lambda msg: console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {msg}")


def sweep_staging(cfg: StationConfig, keep: str = "") -> int:
    """Remove staging folders of earlier, dead attempts (never a finished package)."""
    n = 0
    for p in models_dir(cfg).glob(".staging-*"):
        if p.name != keep and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    return n


# -- snapshot -------------------------------------------------------------------------------------------
def _items(rows: list[dict[str, str]]) -> list[LabelledImage]:
    return [LabelledImage(**r) for r in rows]


def _spaced(items: list[Any], n: int | None) -> list[Any]:
    if n is None or n >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def _split_recent(recent: list[LabelledImage]) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Per label, by sha256 order: even positions train, odd positions are the recent gate set."""
    train: list[LabelledImage] = []
    gate: list[LabelledImage] = []
    for label in sorted({i.label for i in recent}):
        same = sorted((i for i in recent if i.label == label), key=lambda i: i.sha256)
        train += same[0::2]
        gate += same[1::2]
    return train, gate


def _dedupe(items: list[LabelledImage]) -> list[LabelledImage]:
    """One item per image (sha256); a person's label wins over the base folder's."""
    out: dict[str, LabelledImage] = {}
    for i in items:
        if i.sha256 not in out or i.source == "label":
            out[i.sha256] = i
    return list(out.values())


def snapshot_digest(train: list[LabelledImage], recent: list[LabelledImage], heldout: list[LabelledImage]) -> str:
    import hashlib

    rows = [f"{role} {i.sha256} {i.label}" for role, items in (("train", train), ("recent", recent),
                                                                ("heldout", heldout)) for i in items]
    return hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()


def snapshot(cfg: StationConfig, store: Any, stage: str | Path, since: float = 0.0, condition_changed: bool = False,
             until: float | None = None, say: Say | None = None) -> dict[str, Any]:
    """Freeze what this retraining learns from and is judged on; writes ``work/snapshot.json``.

    ``since``: when the incumbent was promoted (0: no incumbent); labels made since then are the line's
    present condition. ``condition_changed``: the camera or lighting changed; the new condition's labelled
    frames JOIN the base material (they never replace it): the held-out set still shows the old condition and
    the gate's no-regression rows hold the candidate to it, and a line whose lamp is replaced back must not
    meet a model that forgot it. The gate's primary set and the drift reference become the new condition's."""
    from inspector.review.labelling import LabellingService

    say = _say(say)
    stage = Path(stage)
    stage.mkdir(parents=True, exist_ok=True)
    base = cfg.jobs.base_data
    held_set = load_heldout_set(cfg.data_dir, base)
    heldout = _spaced(held_set.items, cfg.jobs.heldout_limit)
    base_items = base_training_items(base, held_set) if base is not None else []
    base_goods = _spaced([i for i in base_items if i.label == GOOD], cfg.jobs.train_images)
    base_defects = [i for i in base_items if i.label != GOOD]
    archive = Archive.for_data_dir(cfg.data_dir)
    labels_dir = stage / "labels"
    if labels_dir.exists():
        shutil.rmtree(labels_dir)
    dv = LabellingService(store, archive).export_dataset(labels_dir, layout="classification")
    exported = [LabelledImage(str(labels_dir / rel), rel.split("/", 1)[0], file_sha256(labels_dir / rel), "label")
                for rel in json.loads((labels_dir / "dataset.json").read_text())["files"]]
    recent_shas = {i.sha256 for i in labelled_frames(store, archive, since, until)}
    recent = [i for i in exported if i.sha256 in recent_shas]
    older = [i for i in exported if i.sha256 not in recent_shas]
    recent_train, recent_gate = _split_recent(recent)
    use_base_goods = True  # see the docstring: a condition change adds material, it never forgets the old
    candidates = base_goods + base_defects + older + recent_train
    gate_shas = {i.sha256 for i in recent_gate}
    train, dropped = without_heldout(_dedupe([i for i in candidates if i.sha256 not in gate_shas]), held_set)
    train.sort(key=lambda i: (i.label, i.sha256))
    counts = {"train": _count(train), "recent": _count(recent_gate), "heldout": _count(heldout)}
    scorer_goods = [i.sha256 for i in train if i.label == GOOD]
    body = {
        "train": [asdict(i) for i in train], "recent": [asdict(i) for i in recent_gate],
        "heldout": [asdict(i) for i in heldout], "hash": snapshot_digest(train, recent_gate, heldout),
        "dataset_version": dv.hash, "dataset_counts": dv.counts, "heldout_digest": held_set.digest,
        "heldout_source": held_set.source, "dropped_heldout": dropped, "counts": counts,
        "labels": {"current": len(exported), "since_incumbent": len(recent), "older": len(older)},
        "condition_changed": condition_changed, "base_goods_used": use_base_goods, "since": since,
        "scorer_goods": scorer_goods,
        "base_data": str(base) if base else None,
    }
    _write(stage, SNAPSHOT_FILE, body)
    say(f"snapshot {body['hash'][:12]}: train {sum(counts['train'].values())} {counts['train']}, recent gate "
        f"{sum(counts['recent'].values())}, held-out {len(heldout)}; dataset version {dv.hash[:12]} "
        f"({len(exported)} labels); {dropped} held-out images dropped from training")
    return {k: v for k, v in body.items() if k not in ("train", "recent", "heldout", "scorer_goods")}


def _count(items: list[LabelledImage]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i.label] = out.get(i.label, 0) + 1
    return dict(sorted(out.items()))


# -- train ----------------------------------------------------------------------------------------------
def _incumbent_manifest(incumbent: str | Path | None) -> Manifest | None:
    return load_package(incumbent).manifest if incumbent else None


def choose_kind(incumbent: Manifest | None, class_counts: dict[str, int], min_frames: int) -> str:
    """The incumbent's task; without one: combined when >= 2 defect classes have ``min_frames`` frames."""
    if incumbent is not None:
        return incumbent.task
    rich = [c for c, n in class_counts.items() if c != GOOD and n >= min_frames]
    return "combined" if len(rich) >= 2 else "anomaly"


def classifier_classes(class_counts: dict[str, int], min_frames: int) -> list[str]:
    """``good`` plus every defect class with at least ``min_frames`` training frames, sorted (folder order)."""
    return sorted([GOOD] + [c for c, n in class_counts.items() if c != GOOD and n >= min_frames])


def _recipe(cfg: StationConfig) -> Any:
    from trainer.augment import DomainFacts
    from trainer.recipe import ClassifierRecipe, load_recipe

    size = cfg.jobs.anomaly_image_size
    if cfg.jobs.classifier_recipe is not None:
        return load_recipe(cfg.jobs.classifier_recipe).model_copy(update={"image_size": size})
    return ClassifierRecipe(**RETRAIN_RECIPE_FIELDS, image_size=size,
                            facts=DomainFacts(task="classification", orientation_is_cue=False,
                                              colour_discriminates=False))


def _class_folders(root: Path, items: list[LabelledImage], classes: list[str]) -> Path:
    """Class folders of links to the training images (one per sha256), the layout the classifier run reads."""
    if root.exists():
        shutil.rmtree(root)
    for i in items:
        if i.label not in classes:
            continue
        d = root / i.label
        d.mkdir(parents=True, exist_ok=True)
        target = d / f"{i.sha256}{Path(i.path).suffix.lower()}"
        try:
            os.link(i.path, target)
        except OSError:
            shutil.copyfile(i.path, target)
    return root


def _heldout(items: list[LabelledImage]) -> Any:
    from trainer.evaluate import EvalSet

    return EvalSet(load_images(items), [i.label for i in items], [None] * len(items), "station held-out set")


def train(cfg: StationConfig, stage: str | Path, incumbent: str | Path | None = None,
          say: Say | None = None) -> dict[str, Any]:
    """Fit the candidate (the incumbent's kind), export it, gate INT8; writes ``package/`` and ``work/draft.json``.

    ``incumbent``: the active package's folder (None: the station's first model)."""
    import torch

    from trainer.anomaly import AnomalyConfig
    from trainer.backbone import build_backbone
    from trainer.classifier_run import load_classifier, run_classifier_recipe
    from trainer.network import InspectionNet
    from trainer.package import PackageSpec, prepare_package
    from trainer.pipelines import (
        FUSED_LATENCY_TARGET_MS,
        LATENCY_TARGET_MS,
        MEMORY_BUDGET_MB,
        TARGET_HARDWARE,
        fit_anomaly,
    )
    from trainer.quantize import QuantConfig

    say = _say(say)
    stage = Path(stage)
    t0 = time.perf_counter()
    snap = _read(stage, SNAPSHOT_FILE)
    items = _items(snap["train"])
    inc = _incumbent_manifest(incumbent)
    counts = _count(items)
    kind = choose_kind(inc, counts, cfg.jobs.min_class_frames)
    size = cfg.jobs.anomaly_image_size
    wanted = set(snap["scorer_goods"])  # after a condition change: the new condition's goods only
    scorer_goods = [i for i in items if i.label == GOOD and i.sha256 in wanted]
    name = inc.name if inc is not None else f"station-{kind}"
    console = Console(quiet=True)
    seconds: dict[str, float] = {}
    classes: list[str] | None = None
    info: dict[str, Any] = {"kind": kind, "incumbent_task": inc.task if inc else None, "name": name}
    acfg = AnomalyConfig(image_size=(size, size))
    data: dict[str, Any] = {"train_counts": counts}
    if kind in ("combined", "classification"):
        classes = classifier_classes(counts, cfg.jobs.min_class_frames)
        if len(classes) < 2:
            raise DataError(f"the incumbent is a {kind} model but no defect class has {cfg.jobs.min_class_frames} "
                            f"labelled training frames ({counts})",
                            "label more defects, or lower jobs.min_class_frames")
        recipe = _recipe(cfg)
        left_out = sorted(c for c in counts if c not in classes)
        say(f"train: {kind} classifier on {classes} ({sum(counts[c] for c in classes)} frames, recipe {recipe.name}, "
            f"{recipe.image_size} px){'; left to the anomaly scorer: ' + ', '.join(left_out) if left_out else ''}")
        t = time.perf_counter()
        run_dir = _work(stage) / "classifier-run"
        class_dir = _class_folders(_work(stage) / "classes", items, classes)
        run_classifier_recipe(class_dir, recipe, run_dir, console, log_path=models_dir(cfg) / "experiments.jsonl")
        net, meta = load_classifier(run_dir)
        seconds["classifier"] = round(time.perf_counter() - t, 1)
        say(f"classifier: test accuracy {meta['metrics']['test_accuracy']:.3f} on its own split, temperature "
            f"{meta['temperature']:.2f}, {seconds['classifier']} s")
        prep = meta["preprocess"]
        pre_spec = Preprocess(size=tuple(prep["size"]), resize="stretch", mean=tuple(prep["mean"]),
                              std=tuple(prep["std"]), color="rgb")
        data["classifier"] = {"classes": classes, "left_to_anomaly": left_out, "split": meta["data"]["splits"],
                              **{k: meta["metrics"][k] for k in ("test_accuracy", "ece_before", "ece_after")}}
        architecture = dict(meta["architecture"])
        augmentation = meta["augmentation"]
        temperature = meta["temperature"]
    else:
        backbone, bspec = build_backbone(acfg.backbone, out_indices=acfg.out_indices)
        net = InspectionNet(backbone)
        color = inc.preprocess.color if inc is not None else "gray"
        pre_spec = Preprocess(size=(size, size), resize="stretch", mean=bspec.mean, std=bspec.std, color=color)
        architecture = {"backbone": acfg.backbone, "weights": bspec.weights}
        augmentation = {"policy": "none", "reason": "good-only density model: no augmentation"}
        temperature = None
    anomaly = None
    if kind == "combined":
        from inspector.contracts.config import PolicySection
        from inspector.models.preprocess import Preprocessor
        from trainer.fusion_head import fit_fused_scorer

        acfg = replace(acfg, image_size=tuple(pre_spec.size), backbone=architecture["backbone"])
        defect_items = [i for i in items if i.label != GOOD]  # every labelled defect, any class
        say(f"train: fused defect score (wknn + probe) on {len(scorer_goods)} good frames "
            f"({'base + labelled' if snap['base_goods_used'] else 'the new condition only'}) and "
            f"{len(defect_items)} labelled defects")
        t = time.perf_counter()
        torch.set_num_threads(2)
        scorer, anomaly, fit_info = fit_fused_scorer(net.backbone, Preprocessor(pre_spec), load_images(scorer_goods),
                                                     load_images(defect_items), acfg,
                                                     PolicySection().anomaly_review_margin, say=say)
        net.scorer = scorer
        seconds["anomaly"] = round(time.perf_counter() - t, 1)
        data["anomaly"] = fit_info
        architecture.update({"scorer": "fused-wknn", "scorer_out_indices": list(acfg.out_indices),
                             "fusion_pooled_stages": [2, 3, 4], "classifier_decides": False})
        say(f"fused scorer: probe {'used' if fit_info['uses_probe'] else 'not used (good-only fallback)'}, "
            f"{fit_info['features']} features, {seconds['anomaly']} s {fit_info['seconds']}")
    elif kind == "anomaly":
        from inspector.models.preprocess import Preprocessor

        acfg = replace(acfg, image_size=tuple(pre_spec.size), backbone=architecture["backbone"])
        say(f"train: good-only {acfg.method} scorer on {len(scorer_goods)} good frames "
            f"({'base + labelled' if snap['base_goods_used'] else 'the new condition only'})")
        t = time.perf_counter()
        torch.set_num_threads(2)
        scorer, anomaly, fit_info = fit_anomaly(net.backbone, Preprocessor(pre_spec), load_images(scorer_goods),
                                                acfg, console)
        net.scorer = scorer
        seconds["anomaly"] = round(time.perf_counter() - t, 1)
        data["anomaly"] = fit_info
        architecture.update({"scorer": acfg.method, "scorer_out_indices": list(acfg.out_indices)})
    held = _heldout(_items(snap["heldout"]))
    calib_items = _spaced(items, cfg.jobs.calibration_images)
    calibration = load_images(calib_items) if len(calib_items) >= QuantConfig().min_calibration_images else None
    if calibration is None:
        say(f"INT8 not attempted: {len(calib_items)} training frames, the gate needs 100 (the checklist will say so)")
    spec = PackageSpec(
        name=name, task=kind, preprocess=pre_spec, class_names=classes, good_class=GOOD, temperature=temperature,
        anomaly=anomaly, data=data, augmentation=augmentation, architecture=architecture,
        latency_target_ms=FUSED_LATENCY_TARGET_MS if kind == "combined" else LATENCY_TARGET_MS,
        memory_budget_mb=MEMORY_BUDGET_MB, target_hardware=TARGET_HARDWARE,
    )
    t = time.perf_counter()
    draft = prepare_package(stage / "package", net.eval(), spec, held, calibration, say=say)
    seconds["export_int8_bench"] = round(time.perf_counter() - t, 1)
    if kind == "combined":
        draft = _score_decides(draft, spec, held)
    draft.save(_work(stage) / DRAFT_FILE)
    seconds["total"] = round(time.perf_counter() - t0, 1)
    q = draft.quant
    info.update({"classes": classes, "n_train": len(items), "n_scorer_goods": len(scorer_goods) if anomaly else 0,
                 "parity_passed": bool(draft.parity.get("passed")),
                 "int8": None if q is None else {"kept": q.kept, "reason": q.reason, "metric": q.metric,
                                                 "fp32": q.metric_fp32, "int8": q.metric_int8,
                                                 "speedup": round(q.speedup, 3), "n_calibration": q.n_calibration},
                 "seconds": seconds})
    return info


def _score_decides(draft: Any, spec: Any, held: Any) -> Any:
    """A fused package: ``classifier_decides=False`` and canaries expected by the fused score alone (the
    classifier only names the class, so its confidence must not pick or veto a canary)."""
    from trainer.export import run_onnx
    from trainer.network import OUTPUT_PROBS
    from trainer.package import FP32_FILE, _pre, write_canaries

    outs = run_onnx(draft.stage / FP32_FILE, _pre(spec, held.images))
    outs.pop(OUTPUT_PROBS, None)
    shutil.rmtree(draft.stage / "canary", ignore_errors=True)
    canaries = write_canaries(draft.stage, replace(spec, class_names=None), held, outs)
    m = draft.manifest
    outputs = m.model.outputs.model_copy(update={"classifier_decides": False})
    draft.manifest = m.model_copy(update={"model": m.model.model_copy(update={"outputs": outputs}),
                                          "canaries": canaries})
    return draft


# -- evaluate -------------------------------------------------------------------------------------------
def _draft(stage: Path) -> tuple[Any, ModelPackage]:
    from trainer.package import Draft, draft_package

    draft = Draft.load(_work(stage) / DRAFT_FILE)
    return draft, draft_package(draft.stage, draft.manifest)


def evaluate(cfg: StationConfig, stage: str | Path, incumbent: str | Path | None = None,
             incumbent_version: str | None = None, say: Say | None = None) -> dict[str, Any]:
    """Candidate and incumbent through the station runtime and ``decide()`` on the SAME held-out frames and
    the SAME recent frames; the gate; the drift reference. Writes ``work/evaluation.json``.

    Gate primary set: the fixed held-out set, except after a condition change, where the recent frames of
    the new condition are (when they hold ``jobs.min_gate_frames`` good frames): the held-out set shows the
    old lighting. Drift reference: candidate scores of good frames it never saw: the held-out goods; after
    a condition change the recent gate goods of the new condition."""
    say = _say(say)
    stage = Path(stage)
    snap = _read(stage, SNAPSHOT_FILE)
    _, pkg = _draft(stage)
    sets = {HELDOUT: _items(snap["heldout"]), RECENT: _items(snap["recent"])}
    cand: dict[str, LineMetrics | None] = {}
    inc: dict[str, LineMetrics | None] = {}
    scored: dict[str, Scored] = {}
    for set_name, items in sets.items():
        if not items:
            continue
        images = load_images(items)
        labels = [i.label for i in items]
        scored[set_name] = score_frames(pkg, images, cfg)
        cand[set_name] = line_metrics(scored[set_name].decisions, labels)
        say(f"evaluate: candidate on {set_name} ({len(items)} frames): {_brief_metrics(cand[set_name])}")
        if incumbent is not None:
            inc_scored = score_frames(incumbent, images, cfg)
            inc[set_name] = line_metrics(inc_scored.decisions, labels)
            say(f"evaluate: incumbent on {set_name}: {_brief_metrics(inc[set_name])}")
    recent = cand.get(RECENT)
    primary = RECENT if snap["condition_changed"] and recent is not None and \
        recent.n_good >= cfg.jobs.min_gate_frames else HELDOUT
    gate = evaluate_gates(cand, inc, cfg.jobs, incumbent_version, primary=primary)
    say(f"gate on {primary}: {'PASS' if gate.passed else 'FAIL'}"
        + "".join(f"\n  {r.line()}" for r in gate.failed))
    ref_set = RECENT if snap["condition_changed"] and RECENT in scored and \
        any(i.label == GOOD for i in sets[RECENT]) else HELDOUT
    ref = _reference(scored, sets, ref_set, snap["condition_changed"])
    body = {"line_metrics": {k: v.model_dump(mode="json") for k, v in cand.items() if v is not None},
            "incumbent_line_metrics": {k: v.model_dump(mode="json") for k, v in inc.items() if v is not None},
            "gate": gate.model_dump(mode="json"), "primary": primary, "drift_reference": ref,
            "incumbent": str(incumbent) if incumbent else None, "incumbent_version": incumbent_version}
    _write(stage, EVALUATION_FILE, body)
    return {"primary": primary, "passed": gate.passed, "failed_rows": [r.line() for r in gate.failed],
            "line_metrics": body["line_metrics"], "incumbent_line_metrics": body["incumbent_line_metrics"],
            "drift_reference_frames": ref.get("frames")}


def _brief_metrics(m: LineMetrics) -> str:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    return (f"false-reject {f(m.false_reject_rate)} of {m.n_good} good, recall {f(m.recall_all)} of {m.n_defect} "
            f"defects " + " ".join(f"{c} {r:.2f}" for c, r in m.recall.items()))


def _reference(scored: dict[str, Scored], sets: dict[str, list[LabelledImage]], ref_set: str,
               changed: bool) -> dict[str, Any]:
    if ref_set not in scored:
        raise DataError("no unseen good frames to build the drift reference from",
                        "set jobs.base_data (its test/good is the held-out set) or label more good frames")
    s, items = scored[ref_set], sets[ref_set]
    idx = [k for k, i in enumerate(items) if i.label == GOOD]
    if not idx:
        raise DataError(f"the {ref_set} frames hold no good frame for the drift reference", "label good frames")
    pick = [s.stats[k] for k in idx]
    # The monitor's classifier confidence covers EVERY part on the line, defects included: its reference is
    # every frame of the set (a line with fewer defects than the set is more confident: the harmless
    # direction of that one-sided statistic). From good frames only, the defects the line makes at its normal
    # rate tripped it ~120 frames after a promotion (the demo's drift scenario: a second, needless retraining).
    ref = reference_from_samples(pick, list(s.class_probs), [s.anomaly_scores[k] for k in idx],
                                 [s.decisions[k] for k in idx],
                                 frames=f"{len(idx)} {ref_set} good frames "
                                        f"({'new condition' if changed else 'never trained on'})")
    # The line's class mix is unknown here (the set's is not the line's; good frames alone are 100 % good,
    # against which every defective part is "drift": the scenario alarmed on class_mix during good production,
    # before any change): not monitored, rather than monitored against a mix no line with defects matches.
    ref.pop("class_mix", None)
    return ref


# -- package --------------------------------------------------------------------------------------------
def package(cfg: StationConfig, stage: str | Path, job_id: str, reason: str = "",
            say: Say | None = None) -> dict[str, Any]:
    """Manifest written ONCE (version, line metrics, gate, drift reference, data snapshot, checklist),
    verified by ``load_package``, renamed to ``<data_dir>/models/<version>``; the staging folder goes."""
    from trainer.package import ManifestExtras, finish_package

    say = _say(say)
    stage = Path(stage)
    snap = _read(stage, SNAPSHOT_FILE)
    ev = _read(stage, EVALUATION_FILE)
    draft, _ = _draft(stage)
    short = hash_file(draft.stage / draft.manifest.model.fp32)[:8]
    version = f"{draft.manifest.name}-{time.strftime('%Y%m%d-%H%M%S')}-{short}-{job_id[:6]}"
    data = {"snapshot_sha256": snap["hash"], "dataset_version": snap["dataset_version"],
            "heldout_digest": snap["heldout_digest"], "heldout_source": snap["heldout_source"],
            "dropped_heldout": snap["dropped_heldout"], "counts": snap["counts"], "labels": snap["labels"],
            "condition_changed": snap["condition_changed"], "base_goods_used": snap["base_goods_used"],
            "base_data": snap["base_data"], "job": {"id": job_id, "reason": reason},
            "train_sha256": sorted(i["sha256"] for i in snap["train"])}
    extras = ManifestExtras(
        version=version, line_metrics={k: LineMetrics.model_validate(v) for k, v in ev["line_metrics"].items()},
        gate=GateReport.model_validate(ev["gate"]), drift_reference=ev["drift_reference"], data=data,
        metrics={"incumbent_line_metrics": ev["incumbent_line_metrics"], "gate_primary": ev["primary"]})
    manifest, report = finish_package(draft, _heldout(_items(snap["heldout"])), extras, say=say)
    final = models_dir(cfg) / version
    if final.exists():
        raise InspectorError(f"{final} already exists", "versions are unique; remove the stray folder")
    draft.stage.rename(final)
    pkg = load_package(final)
    shutil.rmtree(stage, ignore_errors=True)
    failed = [k for k, i in report.get("items", {}).items() if not i.get("passed")]
    say(f"package {version}: checklist {'PASS' if not failed else 'FAIL ' + ', '.join(failed)}")
    return {"version": version, "path": str(final), "sha256": pkg.package_sha256, "task": manifest.task,
            "gate_passed": bool(manifest.gate and manifest.gate.passed), "checklist_failed": failed}


def gate_of(path: str | Path) -> GateReport | None:
    """The gate report stored in a package's manifest."""
    return load_package(path).manifest.gate


# -- all steps ------------------------------------------------------------------------------------------
def build_candidate(cfg: StationConfig, store: Any, job_id: str, since: float = 0.0,
                    incumbent: str | Path | None = None, incumbent_version: str | None = None,
                    condition_changed: bool = False, reason: str = "",
                    say: Say | None = None) -> dict[str, Any]:
    """Every step in order (scripts, tests, the first model of a station); the RQ job runs them one by one."""
    stage = staging_dir(cfg, job_id)
    models_dir(cfg).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(stage, ignore_errors=True)
    out: dict[str, Any] = {}
    out["snapshot"] = snapshot(cfg, store, stage, since, condition_changed, say=say)
    out["train"] = train(cfg, stage, incumbent, say=say)
    out["evaluate"] = evaluate(cfg, stage, incumbent, incumbent_version, say=say)
    out["package"] = package(cfg, stage, job_id, reason, say=say)
    return out

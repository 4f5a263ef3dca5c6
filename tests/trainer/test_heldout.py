"""The station's fixed held-out set: frozen once by file hash, never changes, never trained on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from inspector.camera.synthetic import PartFactory
from inspector.contracts.errors import DataError
from trainer.heldout import base_training_items, freeze_heldout, load_heldout_set


def _base(root: Path) -> Path:
    f = PartFactory(seed=3, size=128)
    for sub, kind, n in (("train/good", "good", 12), ("test/good", "good", 10), ("test/spot", "spot", 9)):
        (root / sub).mkdir(parents=True)
        for k in range(n):
            Image.fromarray(f.make(kind)).save(root / sub / f"{k:03d}.png")
    return root


def test_freeze_selects_half_of_every_test_folder_and_never_changes(tmp_path: Path) -> None:
    base = _base(tmp_path / "base")
    held = freeze_heldout(base, tmp_path / "station")
    assert held.counts == {"good": 5, "spot": 5}
    train = base_training_items(base, held)
    assert not {i.sha256 for i in train} & held.hashes
    assert len(train) == 12 + 5 + 4  # train/good, the other halves of test/good and test/spot
    with pytest.raises(DataError, match="already frozen"):
        freeze_heldout(base, tmp_path / "station")
    first = sorted(i.path for i in held.items)[0]
    Image.fromarray(PartFactory(seed=9, size=128).make("good")).save(first)  # a held-out file is replaced
    with pytest.raises(DataError, match="changed since the set was frozen"):
        load_heldout_set(tmp_path / "station")


def test_cli_freeze_and_show(tmp_path: Path) -> None:
    base = _base(tmp_path / "base")
    cfg = tmp_path / "station.yaml"
    cfg.write_text(
        yaml.safe_dump({"station": {"id": "s1", "data_dir": str(tmp_path / "st")}, "jobs": {"base_data": str(base)}})
    )
    run = [sys.executable, "-m", "trainer.cli", "heldout"]
    out = subprocess.run([*run, "freeze", "--config", str(cfg)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    shown = subprocess.run([*run, "show", "--config", str(cfg), "--json"], capture_output=True, text=True, timeout=120)
    assert json.loads(shown.stdout)["counts"] == {"good": 5, "spot": 5}
    again = subprocess.run([*run, "freeze", "--config", str(cfg)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already frozen" in again.stderr

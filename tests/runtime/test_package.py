from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from inspector.contracts.errors import ModelPackageError
from inspector.contracts.manifest import MANIFEST_NAME
from inspector.runtime.package import hash_file, hash_tree, load_package, write_manifest
from tests.runtime.tiny_models import tiny_manifest, write_tiny_package


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    return write_tiny_package(tmp_path / "pkg")


def _edit_manifest(folder: Path, **changes: object) -> None:
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_write_then_load(pkg: Path) -> None:
    loaded = load_package(pkg)
    assert loaded.version == "1.0.0"
    assert loaded.manifest.files == {"model.onnx": hash_file(pkg / "model.onnx")}
    assert len(loaded.package_sha256) == 64
    assert not [p for p in pkg.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_hash_tree_lists_nested_files_but_not_manifest(pkg: Path) -> None:
    (pkg / "canary").mkdir()
    (pkg / "canary" / "a.png").write_bytes(b"x")
    assert set(hash_tree(pkg)) == {"model.onnx", "canary/a.png"}


def test_tampered_file_is_refused(pkg: Path) -> None:
    with open(pkg / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelPackageError, match="model.onnx does not match its sha256"):
        load_package(pkg)


def test_missing_file_is_refused(pkg: Path) -> None:
    (pkg / "model.onnx").unlink()
    with pytest.raises(ModelPackageError, match="model.onnx is listed in the manifest but missing"):
        load_package(pkg)


def test_unlisted_model_file_is_refused(pkg: Path) -> None:
    (pkg / "extra.onnx").write_bytes((pkg / "model.onnx").read_bytes())
    with pytest.raises(ModelPackageError, match="extra.onnx is not listed"):
        load_package(pkg)


def test_bad_manifest_key_is_named(pkg: Path) -> None:
    _edit_manifest(pkg, threshhold=3)
    with pytest.raises(ModelPackageError, match="threshhold: unknown key"):
        load_package(pkg)


def test_bad_nested_value_is_named(pkg: Path) -> None:
    data = json.loads((pkg / MANIFEST_NAME).read_text())
    data["preprocess"]["resize"] = "crop"
    (pkg / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ModelPackageError, match=r"preprocess\.resize"):
        load_package(pkg)


def test_not_json_is_refused(pkg: Path) -> None:
    (pkg / MANIFEST_NAME).write_text("{nope")
    with pytest.raises(ModelPackageError, match="not valid JSON"):
        load_package(pkg)


@pytest.mark.parametrize("bad", ["../outside.bin", "/etc/passwd", "a/../../x", "..\\x"])
def test_escaping_paths_are_refused(pkg: Path, bad: str) -> None:
    data = json.loads((pkg / MANIFEST_NAME).read_text())
    data["files"][bad] = "0" * 64
    (pkg / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ModelPackageError, match="escapes the package folder"):
        load_package(pkg)


def test_symlink_out_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"secret")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    os.symlink(outside, pkg / "link.bin")
    with pytest.raises(ModelPackageError, match="points outside the package"):
        write_tiny_package(pkg)


def test_model_file_not_in_files_is_refused(pkg: Path) -> None:
    _edit_manifest(pkg, files={})
    with pytest.raises(ModelPackageError, match="model.onnx is used by the manifest but has no sha256"):
        load_package(pkg)


def test_invalid_onnx_is_refused(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "model.onnx").write_bytes(b"not a model")
    write_manifest(pkg, tiny_manifest())
    with pytest.raises(ModelPackageError, match="model.onnx is not a valid ONNX model"):
        load_package(pkg)


def test_wrong_output_name_is_refused(tmp_path: Path) -> None:
    over = {"model": {"fp32": "model.onnx", "outputs": {"class_probs": "probs"}}}
    pkg = write_tiny_package(tmp_path / "pkg", **over)
    with pytest.raises(ModelPackageError, match=r"no output 'probs' \(model.outputs.class_probs"):
        load_package(pkg)


def test_missing_folder_and_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelPackageError, match="is not a folder"):
        load_package(tmp_path / "nope")
    with pytest.raises(ModelPackageError, match="has no manifest.json"):
        load_package(tmp_path)

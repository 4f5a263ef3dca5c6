"""Model packages: load, verify and write the folder a station runs.

A package is trusted only after every file listed in ``manifest.json`` matches its sha256, no model file is
present that the manifest does not list, no listed path escapes the folder, and the ONNX graphs load with
the input and output names the manifest promises. Every failure is a :class:`ModelPackageError` naming the
file and saying how to fix it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from inspector.contracts.errors import ModelPackageError
from inspector.contracts.manifest import MANIFEST_NAME, Manifest

CHUNK_BYTES = 1 << 20
MODEL_SUFFIXES = (".onnx", ".engine", ".plan", ".trt")
REPACKAGE_HINT = "rebuild the package with `trainer package` (write_manifest) or restore it from the registry"


@dataclass(frozen=True)
class ModelPackage:
    """A verified package: its folder, manifest, version and the sha256 of its manifest bytes."""

    path: Path
    manifest: Manifest
    version: str
    package_sha256: str

    def file(self, relpath: str) -> Path:
        """Absolute path of a file listed in the manifest."""
        return safe_join(self.path, relpath)


def hash_file(path: str | Path) -> str:
    """sha256 hex of a file, streamed in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def safe_join(root: Path, relpath: str) -> Path:
    """Join a manifest path to the package folder, refusing absolute paths, ``..`` and symlinks out."""
    pure = PurePosixPath(relpath)
    if not relpath or "\\" in relpath or pure.is_absolute() or ".." in pure.parts or Path(relpath).drive:
        raise ModelPackageError(
            f"package {root}: file path {relpath!r} escapes the package folder",
            "manifest paths must be relative POSIX paths inside the package, without '..'; " + REPACKAGE_HINT,
        )
    real_root = root.resolve()
    target = (root / pure).resolve()
    if not target.is_relative_to(real_root):
        raise ModelPackageError(
            f"package {root}: {relpath!r} is a link that points outside the package ({target})",
            "copy the file into the package instead of linking to it; " + REPACKAGE_HINT,
        )
    return root / pure


def hash_tree(folder: str | Path) -> dict[str, str]:
    """{relative POSIX path: sha256} of every regular file under ``folder`` except manifest.json."""
    root = Path(folder)
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST_NAME or path.is_dir():
            continue
        if path.name.startswith(f".{MANIFEST_NAME}."):
            continue  # a temp file of an interrupted write_manifest
        safe_join(root, rel)
        out[rel] = hash_file(path)
    return out


def write_manifest(folder: str | Path, manifest: Manifest) -> Manifest:
    """Fill ``files`` from the folder and write manifest.json atomically (temp file + rename)."""
    root = Path(folder)
    filled = manifest.model_copy(update={"files": hash_tree(root)})
    filled = Manifest.model_validate(filled.model_dump())
    data = json.dumps(filled.model_dump(mode="json"), indent=2, sort_keys=True).encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.", dir=root)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, root / MANIFEST_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return filled


def load_package(path: str | Path) -> ModelPackage:
    """Load and verify a package folder; raise ModelPackageError naming the file and the fix."""
    root = Path(path)
    if not root.is_dir():
        raise ModelPackageError(f"model package {root} is not a folder", "set model.package to a package folder")
    raw = _read_manifest_bytes(root)
    manifest = _parse_manifest(root, raw)
    _check_referenced_files_listed(root, manifest)
    for relpath, expected in manifest.files.items():
        _check_file(root, relpath, expected)
    _check_no_unlisted_models(root, manifest)
    for relpath in _model_files(manifest):
        _check_onnx(root, relpath, manifest)
    return ModelPackage(root, manifest, manifest.version, hashlib.sha256(raw).hexdigest())


def _read_manifest_bytes(root: Path) -> bytes:
    mpath = root / MANIFEST_NAME
    if mpath.is_symlink() or not mpath.is_file():
        raise ModelPackageError(
            f"model package {root} has no {MANIFEST_NAME} (or it is a link)",
            "point model.package at a folder written by the trainer; " + REPACKAGE_HINT,
        )
    return mpath.read_bytes()


def _parse_manifest(root: Path, raw: bytes) -> Manifest:
    where = root / MANIFEST_NAME
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelPackageError(f"{where} is not valid JSON: {err}", REPACKAGE_HINT) from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "(top level)"
            what = "unknown key" if e["type"] == "extra_forbidden" else f"{e['msg']} (got {e.get('input')!r})"
            lines.append(f"{key}: {what}")
        raise ModelPackageError(
            f"{where} is invalid:\n  " + "\n  ".join(lines),
            "fix or remove the named key (see inspector/contracts/manifest.py), then " + REPACKAGE_HINT,
        ) from None


def _model_files(manifest: Manifest) -> list[str]:
    return [f for f in (manifest.model.fp32, manifest.model.int8, manifest.model.bf16) if f]


def _check_referenced_files_listed(root: Path, manifest: Manifest) -> None:
    for relpath in _model_files(manifest) + [c.file for c in manifest.canaries]:
        if relpath not in manifest.files:
            raise ModelPackageError(
                f"package {root}: {relpath} is used by the manifest but has no sha256 in `files`",
                "list every file with its sha256; " + REPACKAGE_HINT,
            )


def _check_file(root: Path, relpath: str, expected: str) -> None:
    target = safe_join(root, relpath)
    if not target.is_file():
        raise ModelPackageError(
            f"package {root}: {relpath} is listed in the manifest but missing",
            "copy the complete package folder again; " + REPACKAGE_HINT,
        )
    actual = hash_file(target)
    if actual != expected.lower():
        raise ModelPackageError(
            f"package {root}: {relpath} does not match its sha256 (manifest {expected[:12]}…, file {actual[:12]}…)",
            "the file was changed or corrupted after packaging; copy it again or " + REPACKAGE_HINT,
        )


def _check_no_unlisted_models(root: Path, manifest: Manifest) -> None:
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.suffix.lower() in MODEL_SUFFIXES and rel not in manifest.files:
            raise ModelPackageError(
                f"package {root}: model file {rel} is not listed in the manifest",
                "remove the stray model file from the package folder, or " + REPACKAGE_HINT,
            )


def _check_onnx(root: Path, relpath: str, manifest: Manifest) -> None:
    import onnx

    target = safe_join(root, relpath)
    try:
        onnx.checker.check_model(str(target))  # path form: checked by the C++ side, external data allowed
        graph = onnx.load(str(target), load_external_data=False).graph
    except Exception as err:  # onnx raises several unrelated types
        raise ModelPackageError(f"package {root}: {relpath} is not a valid ONNX model: {err}", REPACKAGE_HINT) from None
    initialisers = {i.name for i in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initialisers]
    outputs = {o.name for o in graph.output}
    if manifest.model.input_name not in inputs:
        raise ModelPackageError(
            f"package {root}: {relpath} has no input {manifest.model.input_name!r} (inputs: {inputs})",
            "set model.input_name in the manifest to the graph's input, then " + REPACKAGE_HINT,
        )
    for key, name in manifest.model.outputs.model_dump().items():
        if isinstance(name, str) and name not in outputs:
            raise ModelPackageError(
                f"package {root}: {relpath} has no output {name!r} (model.outputs.{key}; outputs: {sorted(outputs)})",
                "set model.outputs in the manifest to the graph's output names, then " + REPACKAGE_HINT,
            )

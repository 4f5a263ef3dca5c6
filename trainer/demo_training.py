"""The demo's first-run training: real models from the demo's own synthetic parts, or from ``--data``.

Synthetic parts (brushed washers: good, scratch, spot, chip) are written as class folders, then one
package is built with a classifier head and a good-only anomaly scorer sharing one backbone pass. A
``--data`` folder in the anomaly layout (train/good, test/<defect>) gets an anomaly package; class folders
with a ``good`` class get a combined package.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from inspector.camera.synthetic import CLASSES, PartFactory
from inspector.contracts.errors import DataError
from inspector.models.decode import encode_image
from trainer.anomaly import AnomalyConfig
from trainer.augment import DomainFacts
from trainer.pipelines import build_anomaly_package, build_combined_package
from trainer.recipe import ClassifierRecipe, SplitSpec

PARTS_PER_CLASS = {"good": 320, "scratch": 90, "spot": 90, "chip": 90}

DEMO_RECIPE = ClassifierRecipe(
    name="demo-parts",
    backbone="tf_efficientnet_lite0",
    head="linear",
    train_blocks=0,
    image_size=192,
    epochs=30,
    finetune_epochs=0,
    patience=5,
    views=1,
    policy="safe-default",
    facts=DomainFacts(task="classification", orientation_is_cue=False, colour_discriminates=False),
    split=SplitSpec(seed=0, train=0.6, val=0.2, test=0.2),
    threads=2,
)
# The classifier head catches the demo's defects, so the anomaly threshold is set for a 0.5 % false-reject
# target (2 % put 5 % of good parts in the REVIEW band of policy.anomaly_margin around it).
DEMO_ANOMALY = AnomalyConfig(target_false_reject=0.005)


def write_synthetic_parts(folder: Path, seed: int = 2024, quality: int = 90) -> Path:
    """Class folders of synthetic parts, encoded exactly as the demo camera sends them (JPEG at the camera's
    quality): the models learn the frames the line will show them. An existing complete set is reused."""
    factory = PartFactory(seed=seed)
    for kind in CLASSES:
        d = folder / kind
        if d.is_dir() and len(list(d.glob("*.jpg"))) == PARTS_PER_CLASS[kind]:
            continue
        d.mkdir(parents=True, exist_ok=True)
        for i in range(PARTS_PER_CLASS[kind]):
            (d / f"{kind}_{i:04d}.jpg").write_bytes(encode_image(factory.make(kind), "jpeg", quality))
    return folder


def train_demo_package(target: Path, data: Path | None, console: Console) -> Path:
    t0 = time.perf_counter()
    console.rule("first run: training the demo's models (reused on later runs)")
    if data is not None and (data / "train" / "good").is_dir():
        result = build_anomaly_package(data, target, DEMO_ANOMALY, name="demo-anomaly", console=console)
    else:
        class_dir = data if data is not None else write_synthetic_parts(target.parent / "demo-parts")
        if not (class_dir / "good").is_dir():
            raise DataError(
                f"{class_dir} has no 'good' folder",
                "give --data a folder with train/good (anomaly layout) or class folders including good/",
            )
        result = build_combined_package(class_dir, target, DEMO_RECIPE, DEMO_ANOMALY, "demo-parts", console)
    console.print(f"[green]demo package {result.manifest.version} ready in {time.perf_counter() - t0:.0f} s[/green]")
    return result.path

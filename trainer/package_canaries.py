"""The canaries of a model package (``trainer.package``): held-out frames the fp32 model decides with a wide
margin, half good, half defective, with the verdict every runtime of the package must reproduce.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inspector.contracts.labels import GOOD_LABEL
from inspector.contracts.manifest import Canary
from trainer.evaluate import EvalSet
from trainer.network import OUTPUT_PROBS, OUTPUT_SCORE
from trainer.package_spec import PackageSpec

CANARY_SURE_PASS = 0.5  # normalised anomaly score at most this: a sure PASS
CANARY_SURE_FAIL = 2.0  # at least this: a sure FAIL
CANARY_SURE_PROB = 0.97


def _expected(spec: PackageSpec, outs: dict[str, np.ndarray], i: int, label: str) -> str | None:
    """PASS / FAIL when the fp32 model is right with a wide margin on frame ``i``, else None."""
    good_label = label == (spec.good_class or GOOD_LABEL)
    verdicts = []
    if OUTPUT_SCORE in outs and spec.anomaly is not None:
        s = spec.anomaly.normalise(float(outs[OUTPUT_SCORE][i]))
        verdicts.append("PASS" if s <= CANARY_SURE_PASS else "FAIL" if s >= CANARY_SURE_FAIL else None)
    if OUTPUT_PROBS in outs and spec.class_names:
        p = outs[OUTPUT_PROBS][i]
        k = int(p.argmax())
        sure = p[k] >= CANARY_SURE_PROB and spec.class_names[k] == label
        is_good_cls = spec.class_names[k] == spec.good_class
        verdicts.append(None if not sure else "PASS" if is_good_cls else "FAIL")
    want = "PASS" if good_label else "FAIL"
    return want if verdicts and all(v == want for v in verdicts) else None


def write_canaries(
    folder: Path, spec: PackageSpec, held: EvalSet, outs: dict[str, np.ndarray], n: int = 4
) -> list[Canary]:
    """Up to ``n`` held-out frames the model decides with a wide margin, half good, half defective."""
    from inspector.models.decode import encode_image

    sure = [(i, _expected(spec, outs, i, name)) for i, name in enumerate(held.label_names)]
    passes = [(i, e) for i, e in sure if e == "PASS"]
    fails = [(i, e) for i, e in sure if e == "FAIL"]
    half = n // 2
    picked = passes[:half] + fails[: n - half]
    picked += (passes[half:] + fails[n - half :])[: n - len(picked)]
    if not picked:  # nothing decided with margin: keep frames as smoke tests only
        picked = [(i, "ANY") for i in range(min(n, len(held.images)))]
    (folder / "canary").mkdir(exist_ok=True)
    canaries = []
    for k, (i, expected) in enumerate(picked):
        rel = f"canary/{k:02d}_{held.label_names[i]}.png"
        (folder / rel).write_bytes(encode_image(held.images[i], "png"))
        canaries.append(Canary(file=rel, expected=expected))  # type: ignore[arg-type]  # expected is one of the Literal values (a str to mypy)
    return canaries

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from inspector.contracts.errors import ConfigError, InspectorError
from trainer.augment import (
    POLICY_DIR,
    AugmentPolicy,
    DomainFacts,
    build_batch_transform,
    build_transforms,
    check_policy,
    load_policy,
    parse_policy,
)

CLS = DomainFacts(task="classification")


def _policy(*kinds: str) -> AugmentPolicy:
    return parse_policy({"name": "t", "transforms": [{"kind": k} for k in kinds]})


@pytest.mark.parametrize("name", sorted(p.stem for p in POLICY_DIR.glob("*.yaml")))
def test_shipped_policies_load_and_build(name: str) -> None:
    policy = load_policy(name)
    tf = build_transforms(policy, 32, (0.5,) * 3, (0.5,) * 3)
    x = tf(Image.new("RGB", (40, 50), (100, 120, 140)))
    assert x.shape == (3, 32, 32)


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixing_refused_for_anomaly(kind: str) -> None:
    with pytest.raises(InspectorError, match=kind) as err:
        check_policy(_policy("hflip", kind), DomainFacts(task="anomaly"))
    assert err.value.hint and kind in err.value.hint


def test_rotation_refused_when_orientation_is_a_cue() -> None:
    with pytest.raises(InspectorError, match="'rotation' refused"):
        check_policy(_policy("rotation"), DomainFacts(orientation_is_cue=True))
    assert check_policy(_policy("rotation"), CLS) == []


@pytest.mark.parametrize("kind", ["color_jitter", "channel_shuffle"])
def test_colour_transforms_refused_when_colour_discriminates(kind: str) -> None:
    with pytest.raises(InspectorError, match=f"'{kind}' refused"):
        check_policy(_policy(kind), DomainFacts(colour_discriminates=True))


def test_careful_transforms_warn() -> None:
    warnings = check_policy(_policy("hflip", "mixup", "invert"), CLS)
    assert len(warnings) == 2 and "mixup" in warnings[0]


def test_shipped_policies_fit_their_domains() -> None:
    steel = DomainFacts(task="classification", orientation_is_cue=True)
    assert check_policy(load_policy("steel-surface"), steel) == []
    assert check_policy(load_policy("tile-anomaly"), DomainFacts(task="anomaly")) == []
    with pytest.raises(InspectorError):
        check_policy(load_policy("heavy-mix"), DomainFacts(task="anomaly"))


def test_unknown_key_is_named(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: bad\ntransforms:\n  - {kind: hflip, probability: 0.5}\n")
    with pytest.raises(ConfigError, match=r"transforms\.0\.hflip\.probability"):
        load_policy(p)
    with pytest.raises(ConfigError, match="colour"):
        parse_policy({"name": "x", "colour": 1})
    with pytest.raises(ConfigError, match="kind"):
        parse_policy({"name": "x", "transforms": [{"kind": "twirl"}]})


def test_policy_hash_tracks_parameters() -> None:
    a = parse_policy({"name": "a", "transforms": [{"kind": "hflip", "p": 0.5}]})
    b = parse_policy({"name": "b", "transforms": [{"kind": "hflip", "p": 0.5}]})
    c = parse_policy({"name": "a", "transforms": [{"kind": "hflip", "p": 0.4}]})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert a.summary()["transforms"] == ["hflip[safe]"]


def test_batch_transform_gives_soft_targets() -> None:
    assert build_batch_transform(_policy("hflip"), 3) is None
    mix = build_batch_transform(parse_policy({"name": "m", "transforms": [{"kind": "mixup", "p": 1.0}]}), 3)
    assert mix is not None
    x, y = mix(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]))
    assert y.shape == (4, 3) and torch.allclose(y.sum(1), torch.ones(4))


def test_eval_pipeline_is_deterministic() -> None:
    tf = build_transforms(None, 16, (0.5,) * 3, (0.5,) * 3)
    img = Image.new("RGB", (20, 20), (10, 200, 30))
    assert torch.equal(tf(img), tf(img))

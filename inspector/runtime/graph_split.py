"""Cut an ONNX graph in two at one tensor: the precision split of OpenVINO's mixed bf16.

bf16 rounds every tensor to 8 significant bits. On the anomaly graphs the score error it causes comes almost
entirely from the backbone's first block (measured on magnetic_tile, Lite0 at 256 px, 60 held-out good parts:
relative score error std 2.1 % with the whole graph in bf16; 2.6 % with only the stem kept f32; 0.42 % with
stem and first block kept f32; the scorer alone in bf16: 0.21 %). ``first_block_output`` names the tensor after
the first block; ``split_at`` writes the graph up to it and the graph from it, which OpenVINO then compiles in
f32 and bf16 (``inspector.runtime.openvino_runner``).
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx.utils import Extractor

FIRST_BLOCK_SCOPE = "/backbone/blocks.0/"


def first_block_output(onnx_path: str | Path, scope: str = FIRST_BLOCK_SCOPE) -> str | None:
    """The tensor the first backbone block hands on (its last node's output), when every path from the input to
    the outputs passes through it; None for a graph without such a block (the split is then not offered)."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    inside = [n for n in graph.node if n.name.startswith(scope)]
    if not inside:
        return None
    cut = str(inside[-1].output[0])
    made_inside = {o for n in inside for o in n.output}
    for node in graph.node:  # a tensor of the block read after it other than the cut: not a single cut
        if not node.name.startswith(scope) and any(i in made_inside and i != cut for i in node.input):
            return None
    return cut


def split_at(onnx_path: str | Path, cut: str, out_dir: str | Path) -> tuple[Path, Path]:
    """(graph from the input to ``cut``, graph from ``cut`` to the outputs) as two ONNX files in ``out_dir``.

    Raises ValueError when the second part still needs the graph's input (``cut`` does not separate them)."""
    model = onnx.load(str(onnx_path))
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    extractor = Extractor(model)
    head, tail = extractor.extract_model(inputs, [cut]), extractor.extract_model([cut], outputs)
    needed = {i for n in tail.graph.node for i in n.input}
    if needed & set(inputs):
        raise ValueError(f"{cut} does not separate the graph: the part after it still reads {inputs}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    head_path, tail_path = out / "f32_head.onnx", out / "bf16_tail.onnx"
    onnx.save(head, str(head_path))
    onnx.save(tail, str(tail_path))
    return head_path, tail_path

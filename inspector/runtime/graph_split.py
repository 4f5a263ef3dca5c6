"""Cut an ONNX graph in two at one tensor: the precision split of OpenVINO's mixed bf16.

bf16 rounds every tensor to 8 significant bits. On the anomaly graphs the score error it causes comes almost
entirely from the backbone's first stages (measured on magnetic_tile: README, issue 14,
``python -m trainer.bf16_diagnose PACKAGE``). ``stage_cuts`` names the tensor that ends each backbone stage where
the graph can be cut there; ``split_at`` writes the graph up to it and the graph from it, which OpenVINO then
compiles in f32 and bf16 (``inspector.runtime.openvino_runner``); the precision gate tries each cut.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx.utils import Extractor

FIRST_BLOCK_SCOPE = "/backbone/blocks.0/"
#: Backbone stages (timm EfficientNet / MobileNet names) after which the f32 head may end, in graph order.
STAGE_SCOPES = ("/backbone/bn1/", *(f"/backbone/blocks.{k}/" for k in range(7)))


def first_block_output(onnx_path: str | Path, scope: str = FIRST_BLOCK_SCOPE) -> str | None:
    """The tensor the block ``scope`` hands on (its last node's output), when every path from the input to the
    outputs passes through it; None for a graph without such a block (the split is then not offered)."""
    return _stage_output(onnx.load(str(onnx_path), load_external_data=False).graph, scope)


def stage_cuts(onnx_path: str | Path) -> dict[str, str]:
    """Stage name (``bn1``, ``blocks.0``, ...) -> the tensor that ends it, for every stage end that separates."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph  # read once for every stage
    cuts = {scope.strip("/").split("/")[-1]: _stage_output(graph, scope) for scope in STAGE_SCOPES}
    return {stage: cut for stage, cut in cuts.items() if cut is not None}


def _stage_output(graph: onnx.GraphProto, scope: str) -> str | None:
    inside = [n for n in graph.node if n.name.startswith(scope)]
    if not inside:
        return None
    cut = str(inside[-1].output[0])
    return cut if separates(graph, cut) else None


def separates(graph: onnx.GraphProto, cut: str) -> bool:
    """True when the outputs can be computed from ``cut`` alone (no path from the graph's inputs bypasses it)."""
    made_by = {o: n for n in graph.node for o in n.output}
    inputs = {i.name for i in graph.input} - {t.name for t in graph.initializer}
    todo, seen = [o.name for o in graph.output], {cut}
    while todo:
        name = todo.pop()
        if name in seen or not name:
            continue
        seen.add(name)
        if name in inputs:
            return False
        node = made_by.get(name)
        if node is not None:
            todo.extend(node.input)
    return True


def split_at(onnx_path: str | Path, cut: str, out_dir: str | Path) -> tuple[Path, Path]:
    """(graph from the input to ``cut``, graph from ``cut`` to the outputs) as two ONNX files in ``out_dir``.

    Raises ValueError when the second part still needs the graph's input (``cut`` does not separate them)."""
    model = onnx.load(str(onnx_path))
    inputs = [i.name for i in model.graph.input]
    if not separates(model.graph, cut):
        raise ValueError(f"{cut} does not separate the graph: the part after it still reads {inputs}")
    extractor = Extractor(model)
    head = extractor.extract_model(inputs, [cut])
    tail = extractor.extract_model([cut], [o.name for o in model.graph.output])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    head_path, tail_path = out / "f32_head.onnx", out / "bf16_tail.onnx"
    onnx.save(head, str(head_path))
    onnx.save(tail, str(tail_path))
    return head_path, tail_path

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from trainer.experiment_log import ExperimentRecord, PolicyFields, append_run, print_runs, read_runs


def _rec(policy: str, acc: float) -> ExperimentRecord:
    return ExperimentRecord(
        task="classification",
        dataset="d",
        dataset_hash="ab" * 32,
        architecture={
            "backbone": "tf_efficientnet_lite0",
            "head": "linear",
            "image_size": 224,
            "epochs": 3,
            "lr": 1e-3,
        },
        policy=PolicyFields(name=policy, hash="0123456789abcdef", transforms=["hflip[safe]"]),
        metrics={"test_accuracy": acc},
    )


def test_append_read_and_print(tmp_path: Path) -> None:
    log = tmp_path / "runs" / "exp.jsonl"
    append_run(_rec("safe-default", 0.9), log)
    append_run(_rec("steel-surface", 0.95), log)
    with log.open("a") as f:
        f.write("{not json\n")
    runs = read_runs(log)
    assert [r.policy.name for r in runs] == ["safe-default", "steel-surface"]
    assert "architecture" in runs[0].model_dump() and "policy" in runs[0].model_dump()
    console = Console(record=True, width=200)
    assert print_runs(log, console) == 2
    text = console.export_text()
    assert "steel-surface" in text and "0.9500" in text

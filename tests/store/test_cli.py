from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml
from sqlalchemy import text
from typer.testing import CliRunner

from inspector.archive import Archive
from inspector.contracts.messages import Decision, ReviewRequest
from inspector.review.cli import review_app
from inspector.store import open_store
from inspector.store import records as rec
from inspector.store.cli import audit_app, trace
from inspector.store.fakes import make_verdict

runner = CliRunner()


def test_cli_trace_review_and_audit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    data = tmp_path / "station"
    cfg_file = tmp_path / "station.yaml"
    cfg_file.write_text(yaml.safe_dump({"station": {"id": "s1", "data_dir": str(data)}}))
    store = open_store(data / "station.db")
    rec.register_model(store, "m1", "/pk/m1", "c" * 64)
    v = make_verdict("s1", 1, Decision.REVIEW, part_id="PART-42")
    rec.record_verdicts(store, [v])
    sha = Archive.for_data_dir(data).put(b"img", "png")
    rec.add_review_item(
        store,
        ReviewRequest(
            station="s1",
            frame_id=v.frame_id,
            part_id=v.part_id,
            camera="cam0",
            reasons=["review_verdict"],
            priority=80,
            image_sha256=sha,
            decision=v.decision,
        ),
        image_ext="png",
    )
    c = ["--config", str(cfg_file)]
    out = runner.invoke(review_app, ["next", *c])
    assert out.exit_code == 0, out.output
    item_id = next(int(w) for w in out.output.split() if w.isdigit())
    assert runner.invoke(review_app, ["label", str(item_id), "scratch", *c]).exit_code == 0
    assert '"labelled": 1' in runner.invoke(review_app, ["stats", *c]).output
    assert runner.invoke(review_app, ["export", str(tmp_path / "ds"), *c]).exit_code == 0
    app = typer.Typer()
    app.command()(trace)
    out = runner.invoke(app, ["PART-42", *c])
    assert out.exit_code == 0 and "cccccccc" in out.output and "scratch" in out.output, out.output
    assert runner.invoke(audit_app, ["verify", *c]).exit_code == 0
    assert "label" in runner.invoke(audit_app, ["show", "--limit", "5", *c]).output
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET new = '\"good\"' WHERE action = 'label'"))
    assert runner.invoke(audit_app, ["verify", *c]).exit_code == 1
    store.close()

"""Products and changeover on a real Redis: under load from a camera, the line changes over between two
products with different packages; every verdict carries the product and the model that judged it, none
crosses a switch, and no frame gets an ERROR. Unknown products are refused and the current one keeps running."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from inspector.bus.streams import StationBus
from inspector.camera.publisher import CameraPublisher
from inspector.camera.sources import SyntheticSource
from inspector.camera.synthetic import PartFactory
from inspector.contracts.config import StationConfig, parse_config
from inspector.contracts.errors import ConfigError
from inspector.contracts.messages import Decision
from inspector.models.tiny_package import build_tiny_package
from inspector.products import ProductError, current_product, switch_product
from inspector.runtime.package import load_package
from inspector.store.db import open_store
from inspector.worker import Worker
from tests.spine_helpers import read_verdicts


def _package(folder: Path, name: str, seed: int) -> Path:
    f = PartFactory(seed=seed)
    good = [f.make("good") for _ in range(40)]
    bad = [f.make(k) for k in ("scratch", "spot") for _ in range(10)]
    return build_tiny_package(folder, good, bad, name=name)


@pytest.fixture
def products_config(station_config: StationConfig, tmp_path: Path) -> StationConfig:
    doc = station_config.model_dump(mode="json", exclude_none=True)
    doc["products"] = {
        "bracket": {"package": str(_package(tmp_path / "a", "bracket-model", 1))},
        "housing": {"package": str(_package(tmp_path / "b", "housing-model", 2)), "policy": {"pass_confidence": 0.8}},
    }
    doc["camera"] = {"fps": 60}
    return parse_config(doc, environ={})


def test_changeover_under_load_never_judges_a_frame_with_another_products_model(
    products_config: StationConfig, redis_client
) -> None:
    cfg = products_config
    store = open_store(cfg)
    version = {name: load_package(p.package).version for name, p in cfg.products.items()}
    bus = StationBus(redis_client, cfg)
    workers = [Worker(cfg, redis_client, name=f"w{i}") for i in (1, 2)]
    camera = CameraPublisher(bus, SyntheticSource(seed=4, size=96))
    published: list[tuple[str, str | None]] = []  # (frame id, product) in publish order
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    threads.append(
        threading.Thread(
            target=camera.run,
            kwargs={"max_frames": 600, "on_frame": lambda m, _c: published.append((m.id, m.product))},
            daemon=True,
        )
    )
    for t in threads:
        t.start()
    switches = []
    try:
        assert current_product(redis_client, cfg) == "bracket"  # the first product until a switch
        for product in ("housing", "bracket", "housing", "bracket", "housing"):
            time.sleep(1.2)
            switch_product(cfg, redis_client, store, product, "tester", "maintenance")
            switches.append((len(published), product))
        threads[-1].join(60)
        deadline = time.monotonic() + 60
        while redis_client.xlen(bus.names.verdicts) < len(published) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        camera.stop()
        for w in workers:
            w.stop()
        for t in threads[:-1]:
            t.join(15)
    verdicts = {v.frame_id: v for v in read_verdicts(redis_client, bus)}
    assert len(published) == 600 and len(verdicts) == 600  # one verdict per frame
    # every verdict carries its frame's product and was judged by that product's model; no ERROR
    for frame_id, product in published:
        v = verdicts[frame_id]
        assert v.product == product and v.model_version == version[product], (frame_id, product, v.model_version)
        assert v.decision is not Decision.ERROR, v.reasons
    # no frame crosses a switch: a frame published after a switch returned carries the new product
    for n_before, product in switches:
        if n_before + 1 < len(published):
            assert all(p == product for _fid, p in published[n_before + 1 : n_before + 10]), (n_before, product)
    counts = {p: sum(1 for _f, q in published if q == p) for p in cfg.products}
    assert all(n > 50 for n in counts.values()), counts
    # each switch is an audit row with the old and new product
    switched = [e for e in store.audit.entries(limit=50, action="product.switch")]
    assert len(switched) == len(switches)


def test_an_unknown_product_is_refused_and_the_current_one_keeps_running(
    products_config: StationConfig, redis_client
) -> None:
    store = open_store(products_config)
    switch_product(products_config, redis_client, store, "housing", "tester", "maintenance")
    with pytest.raises(ProductError, match=r"product 'gearbox' is not configured: the station makes bracket, housing"):
        switch_product(products_config, redis_client, store, "gearbox", "tester", "maintenance")
    assert current_product(redis_client, products_config) == "housing"


def test_a_recipe_naming_a_product_without_a_package_is_refused_in_one_line(station_config: StationConfig) -> None:
    doc = station_config.model_dump(mode="json", exclude_none=True)
    doc["products"] = {"bracket": {"policy": {"pass_confidence": 0.8}}}
    with pytest.raises(ConfigError) as err:
        parse_config(doc, environ={})
    assert "products.bracket.package" in str(err.value) and "\n" not in err.value.message
    doc["products"] = {"bracket": {"package": "/nowhere"}}
    doc["product"] = "housing"
    with pytest.raises(ConfigError, match="product 'housing' is not one of products: bracket"):
        parse_config(doc, environ={})

"""The PLC changes the product over MQTT: the line process's listener switches the station (audited, system
role) and answers on the retained state topic; an unknown product is refused there and nothing changes."""

from __future__ import annotations

import json
import time
import uuid

import paho.mqtt.publish as mqtt_publish
import pytest

from inspector.contracts.config import StationConfig, parse_config
from inspector.line.changeover import MqttChangeover
from inspector.products import current_product
from inspector.store.db import open_store
from tests.line.line_peers import MqttListener, mqtt_reachable, mqtt_url


def test_the_plc_switches_the_product_over_mqtt(station_config: StationConfig, redis_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = mqtt_url()
    if not mqtt_reachable(url):
        pytest.skip(f"no MQTT broker at {url} (start mosquitto or set MQTT_URL)")
    prefix = f"itest{uuid.uuid4().hex[:8]}"
    doc = station_config.model_dump(mode="json", exclude_none=True)
    doc["products"] = {"bracket": {"package": str(tmp_path / "a")}, "housing": {"package": str(tmp_path / "b")}}
    doc["line"] = {"mqtt_url": url, "mqtt_topic": prefix}
    cfg = parse_config(doc, environ={})
    store = open_store(cfg)
    base = f"{prefix}/{cfg.station.id}/product"
    listener = MqttListener(url, f"{base}/state")
    changeover = MqttChangeover(cfg, redis_client, store)
    host, port = url.removeprefix("mqtt://").split(":")
    try:
        _t, first, retained = listener.next(lambda t, p: True, timeout=5)
        assert json.loads(first) == {"product": "bracket"}
        changeover.switched.clear()
        mqtt_publish.single(f"{base}/set", "housing", qos=1, hostname=host, port=int(port))
        assert changeover.switched.wait(5)
        assert current_product(redis_client, cfg) == "housing"
        assert json.loads(listener.next(lambda t, p: b"housing" in p)[1]) == {"product": "housing"}
        changeover.switched.clear()
        mqtt_publish.single(f"{base}/set", "gearbox", qos=1, hostname=host, port=int(port))
        assert changeover.switched.wait(5)
        state = json.loads(listener.next(lambda t, p: b"error" in p)[1])
        assert state["product"] == "housing" and "product 'gearbox' is not configured" in state["error"]
        assert current_product(redis_client, cfg) == "housing"  # the current product keeps running
        rows = store.audit.entries(limit=10, action="product.switch")
        assert len(rows) == 1 and rows[0].actor == "plc:mqtt" and rows[0].details["source"] == "mqtt"
    finally:
        changeover.close()
        listener.close()
        time.sleep(0.1)

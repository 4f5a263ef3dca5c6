"""Changeover from the line controller: the PLC names the next product on an MQTT topic.

``<line.mqtt_topic>/<station>/product/set`` with the product name as payload switches the station (system
role, audited as ``product.switch`` with source ``mqtt``); the station answers on the retained
``.../product/state`` topic with the product on the line, or ``error: ...`` for a product it does not make
(the current product keeps running). Started by the line process (``inspector line``) when the station has
``products`` and ``line.mqtt_url``.
"""

from __future__ import annotations

import json
import logging
import threading

import redis

from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.line.outputs import _host_port

log = logging.getLogger(__name__)


class MqttChangeover:
    """Listens for product requests on MQTT and switches the station's product."""

    def __init__(self, cfg: StationConfig, client: redis.Redis, store) -> None:  # type: ignore[no-untyped-def]
        import paho.mqtt.client as mqtt

        self.cfg, self.redis, self.store = cfg, client, store
        host, port, user, password = _host_port(cfg.line.mqtt_url or "", ("mqtt", "tcp"), 1883)
        base = f"{cfg.line.mqtt_topic.rstrip('/')}/{cfg.station.id}/product"
        self.set_topic, self.state_topic = f"{base}/set", f"{base}/state"
        self.switched = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
        if user:
            self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 5)
        self.client.connect_async(host, port, keepalive=5)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if not reason_code.is_failure:
            client.subscribe(self.set_topic, qos=1)
            self._state()

    def _state(self, error: str | None = None) -> None:
        from inspector.products import current_product

        try:
            body = {"product": current_product(self.redis, self.cfg), **({"error": error} if error else {})}
        except redis.RedisError as err:
            body = {"product": None, "error": f"station Redis unavailable: {err}"}
        self.client.publish(self.state_topic, json.dumps(body), qos=1, retain=True)

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        from inspector.products import switch_product

        name = message.payload.decode(errors="replace").strip()
        try:
            previous = switch_product(self.cfg, self.redis, self.store, name, "plc:mqtt", "system", source="mqtt")
            log.warning("changeover from the PLC (MQTT): %s -> %s", previous, name)
            self._state()
        except InspectorError as err:
            log.error("product request %r on %s refused: %s", name, self.set_topic, err.message)
            self._state(err.message)
        except Exception as err:  # noqa: BLE001 - a failed request never stops the line process
            log.exception("product request %r on %s failed", name, self.set_topic)
            self._state(str(err))
        self.switched.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_changeover(cfg: StationConfig) -> MqttChangeover | None:
    """The line process's listener for product requests, when the station has products and an MQTT line."""
    if not cfg.products or not cfg.line.mqtt_url:
        return None
    from inspector.bus.connection import join_station
    from inspector.store.db import open_store

    return MqttChangeover(cfg, join_station(cfg), open_store(cfg, lazy=True))

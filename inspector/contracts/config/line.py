"""Line signals: the deadline, MQTT, Modbus and OPC UA outputs to the line controller."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from inspector.contracts.config.base import Section

# The OPC UA node set of a station's line output (inspector/line/opcua.py): name -> OPC UA built-in type.
OPCUA_NODE_SET: dict[str, str] = {
    "Ready": "Boolean",
    "Reject": "Boolean",
    "LastPartId": "String",
    "LastSeq": "UInt32",
    "LastSignal": "String",
    "LastDecision": "String",
    "LastReason": "String",
    "LastDefectClass": "String",
    "ModelVersion": "String",
    "Parts": "UInt32",
    "Accepts": "UInt32",
    "Rejects": "UInt32",
    "Heartbeat": "UInt32",
}


class LineSection(Section):
    deadline_ms: float = Field(500, gt=0, le=60_000, description="No PASS within this time of capture: reject.")
    mqtt_url: str | None = Field(None, description="mqtt://host:port for line signals (unset: off).")
    mqtt_topic: str = Field("inspector", description="Topic prefix of line signals.")
    modbus_url: str | None = Field(None, description="modbus://host:port for line signals (unset: off).")
    modbus_unit: int = Field(1, ge=0, le=247, description="Modbus device (unit) id of the line controller.")
    modbus_reject_coil: int = Field(0, ge=0, le=65535, description="Coil pulsed high for each rejected part.")
    modbus_ready_coil: int = Field(1, ge=0, le=65535, description="Coil held high while the inspector is healthy.")
    modbus_seq_register: int = Field(
        0, ge=0, le=65535, description="Holding register with the last part's sequence (mod 65536)."
    )
    reject_pulse_ms: float = Field(200, gt=0, le=10_000, description="Length of the reject pulse on the Modbus coil.")
    health_poll_ms: float = Field(
        200, ge=20, le=1000, description="How often the ready signal re-checks worker and camera health."
    )
    require_camera: bool = Field(True, description="Ready also needs a live camera (heartbeat key or a recent frame).")
    opcua_url: str | None = Field(
        None,
        description="opc.tcp://host:port/path: the endpoint the OPC UA server listens on (opcua_mode server) or "
        "the PLC's endpoint the station writes to (opcua_mode client). Unset: OPC UA off.",
    )
    opcua_mode: Literal["server", "client"] = Field(
        "server",
        description="server: the station serves its node set (OPCUA_NODE_SET) under Objects/<station id>; "
        "client: the station writes the same values into the PLC's own nodes (opcua_nodes).",
    )
    opcua_namespace: str = Field(
        "urn:inspector:station", min_length=1, description="Namespace URI of the served node set (server mode)."
    )
    opcua_nodes: dict[str, str] = Field(
        default_factory=dict,
        description="Client mode: node set name -> the PLC's node id (e.g. Reject: 'ns=3;s=Line.Reject'); names "
        "not listed are not written. Names: " + ", ".join(OPCUA_NODE_SET) + ".",
    )
    opcua_timeout_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="Longest wait for the OPC UA endpoint to answer (connect or write) before retrying.",
    )

    @field_validator("opcua_url")
    @classmethod
    def _opcua_scheme(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"^opc\.tcp://[^/:]+(:\d+)?(/.*)?$", url):
            raise ValueError(f"{url!r} is not an OPC UA endpoint: use opc.tcp://host:4840/path")
        return url

    @field_validator("opcua_nodes")
    @classmethod
    def _opcua_nodes(cls, nodes: dict[str, str]) -> dict[str, str]:
        for name, node_id in nodes.items():
            if name not in OPCUA_NODE_SET:
                raise ValueError(f"{name!r} is not in the OPC UA node set ({', '.join(OPCUA_NODE_SET)})")
            if not re.match(r"^((ns=\d+|nsu=[^;]+);)?[isgb]=.+$", node_id):
                raise ValueError(
                    f"{node_id!r} (for {name}) is not an OPC UA node id: write e.g. ns=3;s=Line.{name} or ns=3;i=1001"
                )
        return nodes

    @model_validator(mode="after")
    def _opcua_client_nodes(self) -> LineSection:
        if self.opcua_url and self.opcua_mode == "client" and not self.opcua_nodes:
            raise ValueError(
                "line.opcua_nodes must name at least one PLC node (e.g. {Reject: 'ns=3;s=Line.Reject'}) "
                "when line.opcua_mode is 'client'"
            )
        return self

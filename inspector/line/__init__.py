"""Line signals: one fail-safe ACCEPT/REJECT per part by a deadline, and a ready signal, over MQTT and Modbus TCP."""

from inspector.line.decider import LineDecider, Outcome, Part, Reason, Signal
from inspector.line.health import Health, HealthProbe, evaluate
from inspector.line.outputs import LineOutput, MemoryOutput, ModbusMap, ModbusOutput, MqttOutput, outputs_from_config
from inspector.line.runner import LineRunner, run_line

__all__ = [
    "Health",
    "HealthProbe",
    "LineDecider",
    "LineOutput",
    "LineRunner",
    "MemoryOutput",
    "ModbusMap",
    "ModbusOutput",
    "MqttOutput",
    "Outcome",
    "Part",
    "Reason",
    "Signal",
    "evaluate",
    "outputs_from_config",
    "run_line",
]

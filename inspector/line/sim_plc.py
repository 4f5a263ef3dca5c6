"""A simulated line controller (PLC): a real Modbus TCP server (pymodbus) that counts what the line sent it.

``inspector demo`` starts one so that the reject signal of :class:`inspector.line.outputs.ModbusOutput` goes
over a real socket to a real Modbus server, and the demo's summary reports the parts the controller saw:
every write of the sequence register is one part, every write of the reject coil to high is one reject
(the pulse is re-armed for each rejected part, so counting rising edges would undercount parts that come
closer together than the pulse). Accepts are the parts that were not rejected. Tests read it the same way.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass

from inspector.contracts.errors import InspectorError

# Modbus function codes the line outputs use
_WRITE_COIL, _WRITE_REGISTER, _WRITE_COILS, _WRITE_REGISTERS = 5, 6, 15, 16


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class PlcCounts:
    parts: int = 0
    rejects: int = 0
    ready_writes: int = 0
    ready: bool = False
    last_seq: int | None = None

    @property
    def accepts(self) -> int:
        return max(0, self.parts - self.rejects)


class SimulatedPlc:
    """A pymodbus TCP server on its own event-loop thread, with the coil / register map of ``line.modbus_*``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        reject_coil: int = 0,
        ready_coil: int = 1,
        seq_register: int = 0,
        size: int = 64,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.reject_coil, self.ready_coil, self.seq_register = reject_coil, ready_coil, seq_register
        self.size = max(size, reject_coil + 1, ready_coil + 1, seq_register + 1)
        self.counts = PlcCounts()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: object | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sim-plc", daemon=True)

    @property
    def url(self) -> str:
        return f"modbus://{self.host}:{self.port}"

    def reset(self) -> None:
        """Count afresh from now (the demo: parts left over from a previous run are not this run's)."""
        with self._lock:
            ready = self.counts.ready
            self.counts = PlcCounts(ready=ready)

    def snapshot(self) -> PlcCounts:
        with self._lock:
            return PlcCounts(**vars(self.counts))

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        if not set_values:
            return None
        with self._lock:
            c = self.counts
            if function_code in (_WRITE_REGISTER, _WRITE_REGISTERS) and address <= self.seq_register < address + count:
                c.parts += 1
                c.last_seq = int(set_values[self.seq_register - address])
            elif function_code in (_WRITE_COIL, _WRITE_COILS):
                if address <= self.reject_coil < address + len(set_values) and set_values[self.reject_coil - address]:
                    c.rejects += 1
                if address <= self.ready_coil < address + len(set_values):
                    c.ready_writes += 1
                    c.ready = bool(set_values[self.ready_coil - address])
        return None

    def _run(self) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        def block(kind: DataType, value: object) -> list[SimData]:
            return [SimData(0, count=self.size, values=value, datatype=kind)]

        async def serve() -> None:
            device = SimDevice(
                id=0,
                simdata=(
                    block(DataType.BITS, False),
                    block(DataType.BITS, False),
                    block(DataType.REGISTERS, 0),
                    block(DataType.REGISTERS, 0),
                ),
                action=self._action,
            )
            self._server = ModbusTcpServer(device, address=(self.host, self.port))
            await self._server.serve_forever()  # type: ignore[attr-defined]

        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(serve())
        except BaseException as err:  # noqa: BLE001 - reported by start()
            self._error = err

    def start(self, timeout_s: float = 5.0) -> SimulatedPlc:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._error is None:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise InspectorError(
            f"the simulated PLC did not start on {self.host}:{self.port}{f': {self._error}' if self._error else ''}",
            "is pymodbus installed (pip install '.[line]') and the port free?",
        )

    def stop(self) -> None:
        server = self._server
        if server is not None and self._loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(server.shutdown(), self._loop)  # type: ignore[attr-defined]
            try:
                fut.result(5)
            except Exception:  # noqa: BLE001 - stopping anyway
                pass
        self._thread.join(5)

"""OPC UA line output (asyncua): the station's node set, served by the station or written into the PLC's nodes.

``line.opcua_mode: server`` — an OPC UA server on ``line.opcua_url`` with the object ``Objects/<station id>``
holding the node set :data:`OPCUA_NODE_SET` (string node ids ``ns=<namespace index>;s=<station id>.<Name>`` in
the namespace ``line.opcua_namespace``). The PLC (an OPC UA client) reads or subscribes to it.

``line.opcua_mode: client`` — the station connects to the PLC's own server on ``line.opcua_url`` and writes the
same values into the nodes named in ``line.opcua_nodes`` (each converted to the data type of the PLC's node;
no timestamps, which many PLCs refuse). A PLC that does not answer is named in one log line, the station keeps
inspecting and retries; on reconnect every configured node is written again, so a restarted PLC learns the state.

The fail-safe rules are the line runner's (:class:`inspector.line.decider.LineDecider`), as for MQTT and Modbus:
``Reject`` pulses (``line.reject_pulse_ms``) for every part that has no PASS by its deadline, and ``Ready`` is
False whenever no worker heartbeat is alive (and when the station stops). ``Rejects`` counts the pulses, so a
PLC scanning slower than the pulse still sees every reject. ``Heartbeat`` rises every second while the output
lives: a PLC in client mode learns of a dead station from it standing still.

Like every output, calls never block the runner: they go to an asyncio loop on a thread of its own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from inspector.contracts.config import OPCUA_NODE_SET, StationConfig
from inspector.contracts.errors import ConfigError, InspectorError
from inspector.line.decider import Outcome, Signal

log = logging.getLogger(__name__)

_STOP = object()


def initial_values() -> dict[str, Any]:
    """The node set's values before any part: not ready, no reject, empty strings, zero counters."""
    zero = {"Boolean": False, "String": "", "UInt32": 0}
    return {name: zero[kind] for name, kind in OPCUA_NODE_SET.items()}


def outcome_values(outcome: Outcome) -> dict[str, Any]:
    """What one part's outcome writes (counters and the pulse are the output's own)."""
    return {
        "LastPartId": outcome.part.part_id,
        "LastSeq": outcome.part.seq % 2**32,
        "LastSignal": outcome.signal.value,
        "LastDecision": outcome.decision.value if outcome.decision else "NONE",
        "LastReason": outcome.reason.value,
        "LastDefectClass": outcome.defect_class or "",
        **({"ModelVersion": outcome.model_version} if outcome.model_version else {}),
    }


class OpcuaOutput:
    """An isolated line output: a private asyncio loop thread runs the server (or the client) and every write."""

    def __init__(self, cfg: StationConfig) -> None:
        try:
            import asyncua  # noqa: F401 - fail here, with the install hint, when the line extra is missing
        except ImportError as err:
            raise ConfigError(
                f"line.opcua_url is set but the OPC UA library cannot be imported ({err})",
                "pip install -e '.[line]' (asyncua), or unset line.opcua_url",
            ) from None

        line = cfg.line
        if not line.opcua_url:
            raise InspectorError("OpcuaOutput needs line.opcua_url", "set line.opcua_url: opc.tcp://host:4840/path")
        self.url = line.opcua_url
        self.mode = line.opcua_mode
        self.namespace = line.opcua_namespace
        self.station = cfg.station.id
        self.node_ids = dict(line.opcua_nodes)
        self.timeout_s = line.opcua_timeout_s
        self.pulse_s = line.reject_pulse_ms / 1000
        self.values = initial_values()
        self.errors = 0
        self.connected = False
        self.served_ids: dict[str, str] = {}  # server mode: name -> node id string, once serving
        self._dirty: set[str] = set(self.values)
        self._release_at: float | None = None
        self._repulse = False  # a reject came while the pulse was high: write low, then high again
        self._loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue[object] | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"line-opcua-{self.mode}", daemon=True)
        self._thread.start()
        self._started.wait(5)

    # ------------------------------------------------------------------ public, non-blocking
    def publish(self, outcome: Outcome) -> None:
        self._put(("outcome", outcome))

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self._put(("ready", ready))

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._put(("ready", False))
        self._put(_STOP)
        self._thread.join(timeout=self.timeout_s + 3)

    def _put(self, item: object) -> None:
        if self._queue is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
            except RuntimeError:  # the loop has stopped: the output is closed
                pass

    # ------------------------------------------------------------------ on the loop thread
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except Exception as err:  # noqa: BLE001 - an output never takes the runner down
            log.error("OPC UA output %s stopped: %s", self.url, err)
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._queue = asyncio.Queue()
        self._started.set()
        writer = _Server(self) if self.mode == "server" else _Client(self)
        beat = time.monotonic() + 1.0
        try:
            await writer.flush(self._take_dirty())  # serve (or connect) now, not at the first part
            while True:
                wake = min(beat, self._release_at or beat)
                try:
                    item = await asyncio.wait_for(self._queue.get(), max(0.0, wake - time.monotonic()))
                except TimeoutError:
                    item = None
                if item is _STOP:
                    self._release_at = None
                    self._set("Reject", False)
                    await writer.flush(self._take_dirty())
                    return
                if isinstance(item, tuple):
                    self._apply(*item)
                now = time.monotonic()
                if self._release_at is not None and now >= self._release_at:
                    self._release_at = None
                    self._set("Reject", False)
                if now >= beat:
                    beat = now + 1.0
                    self._set("Heartbeat", (self.values["Heartbeat"] + 1) % 2**32)
                if self._queue.empty():  # coalesce a burst into one round of writes
                    await writer.flush(self._take_dirty())
        finally:
            await writer.close()

    def _apply(self, kind: str, value: Any) -> None:
        if kind == "ready":
            self._set("Ready", bool(value))
            return
        outcome: Outcome = value
        for name, v in outcome_values(outcome).items():
            self._set(name, v)
        self._set("Parts", (self.values["Parts"] + 1) % 2**32)
        if outcome.signal is Signal.REJECT:
            self._set("Rejects", (self.values["Rejects"] + 1) % 2**32)
            if self.values["Reject"]:  # a reject during the pulse: drop and raise it again, one pulse per part
                self._repulse = True
            self._set("Reject", True)
            self._release_at = time.monotonic() + self.pulse_s
        else:
            self._set("Accepts", (self.values["Accepts"] + 1) % 2**32)

    def _set(self, name: str, value: Any) -> None:
        if self.values.get(name) != value or name == "Reject":
            self.values[name] = value
            self._dirty.add(name)

    def _take_dirty(self) -> list[str]:
        dirty, self._dirty = self._dirty, set()
        order = [n for n in OPCUA_NODE_SET if n in dirty and n != "Reject"]
        return order + (["Reject"] if "Reject" in dirty else [])  # the pulse last: the part's values are in place

    def _mark_all_dirty(self) -> None:
        self._dirty |= set(self.values)


def _variant_type(name: str) -> Any:
    from asyncua import ua

    return getattr(ua.VariantType, OPCUA_NODE_SET[name])


class _Server:
    """Serves the node set. A bind failure is one log line; the output then only keeps its values."""

    def __init__(self, out: OpcuaOutput) -> None:
        self.out = out
        self.server: Any = None
        self.nodes: dict[str, Any] = {}
        self.failed = False

    async def _start(self) -> None:
        from asyncua import Server, ua

        logging.getLogger("asyncua").setLevel(logging.CRITICAL)  # its tracebacks would bury our one line
        server = Server()
        await server.init()
        server.set_endpoint(self.out.url)
        server.set_server_name(f"inspector station {self.out.station}")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(self.out.namespace)
        obj = await server.nodes.objects.add_object(
            ua.NodeId(self.out.station, idx), ua.QualifiedName(self.out.station, idx)
        )
        for name, value in self.out.values.items():
            node_id = ua.NodeId(f"{self.out.station}.{name}", idx)
            node = await obj.add_variable(node_id, ua.QualifiedName(name, idx), ua.Variant(value, _variant_type(name)))
            self.nodes[name] = node
            self.out.served_ids[name] = node_id.to_string()
        try:
            await server.start()
        except OSError as err:
            self.failed = True
            self.out.errors += 1
            log.error(
                "OPC UA server cannot listen on %s (%s): inspection and the other line outputs go on; fix "
                "line.opcua_url (a free port on this host) and restart inspector line",
                self.out.url,
                err,
            )
            return
        self.server = server
        self.out.connected = True
        log.info(
            "OPC UA server on %s: node set under Objects/%s, namespace %s",
            self.out.url,
            self.out.station,
            self.out.namespace,
        )

    async def flush(self, names: list[str]) -> None:
        if self.server is None and not self.failed:
            await self._start()
            names = list(OPCUA_NODE_SET)
        if self.server is None:
            return
        for name in names:
            value = self.out.values[name]
            if name == "Reject" and value and self.out._repulse:
                self.out._repulse = False
                await self.nodes[name].write_value(ua_variant(False, name))
            await self.nodes[name].write_value(ua_variant(value, name))

    async def close(self) -> None:
        if self.server is not None:
            try:
                await self.server.stop()
            except Exception as err:  # noqa: BLE001 - stopping anyway
                log.warning("OPC UA server %s did not stop cleanly: %s", self.out.url, err)
            self.server = None
            self.out.connected = False


def ua_variant(value: Any, name: str) -> Any:
    from asyncua import ua

    return ua.Variant(value, _variant_type(name))


class _Client:
    """Writes the node set into the PLC's nodes; reconnects with backoff, one log line per outage."""

    def __init__(self, out: OpcuaOutput) -> None:
        self.out = out
        self.client: Any = None
        self.nodes: dict[str, tuple[Any, Any]] = {}  # name -> (node, the PLC node's VariantType)
        self.next_try = 0.0
        self.backoff = 0.5
        self.down_reported = False

    async def _connect(self) -> bool:
        from asyncua import Client

        logging.getLogger("asyncua").setLevel(logging.CRITICAL)  # its own tracebacks would bury our one line
        client = Client(self.out.url, timeout=self.out.timeout_s)
        try:
            await asyncio.wait_for(client.connect(), self.out.timeout_s + 1)
            nodes = {}
            for name, node_id in self.out.node_ids.items():
                node = client.get_node(node_id)
                nodes[name] = (node, await node.read_data_type_as_variant_type())
        except Exception as err:  # noqa: BLE001 - any failure: report once, retry later
            await self._drop(client)
            self._report(err)
            return False
        self.client, self.nodes = client, nodes
        self.out.connected = True
        self.backoff = 0.5
        if self.down_reported:
            log.warning("OPC UA endpoint %s answers again: writing the node set", self.out.url)
        self.down_reported = False
        self.out._mark_all_dirty()
        return True

    def _report(self, err: BaseException) -> None:
        self.out.errors += 1
        self.next_try = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, 5.0)
        if not self.down_reported:
            self.down_reported = True
            what = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            log.error(
                "OPC UA endpoint %s does not answer (%s): inspection and the other line outputs go on, "
                "retrying; check the PLC's OPC UA server, line.opcua_url and line.opcua_nodes",
                self.out.url,
                what,
            )

    async def _drop(self, client: Any) -> None:
        self.out.connected = False
        try:
            await asyncio.wait_for(client.disconnect(), 1.0)
        except Exception:  # noqa: BLE001 - the connection is gone anyway
            pass

    async def flush(self, names: list[str]) -> None:
        from asyncua import ua

        if self.client is None:
            if time.monotonic() < self.next_try or not await self._connect():
                self.out._dirty |= set(names)  # written once the PLC answers
                return
            names = list(OPCUA_NODE_SET)
            names.remove("Reject")
            names.append("Reject")
            self.out._dirty.clear()
        names = [n for n in names if n in self.nodes]
        try:
            for name in names:
                node, vtype = self.nodes[name]
                value = self.out.values[name]
                if name == "Reject" and value and self.out._repulse:
                    self.out._repulse = False
                    await asyncio.wait_for(node.write_value(ua.DataValue(_cast(False, vtype))), self.out.timeout_s)
                await asyncio.wait_for(node.write_value(ua.DataValue(_cast(value, vtype))), self.out.timeout_s)
        except Exception as err:  # noqa: BLE001 - the PLC went away mid-write
            client, self.client = self.client, None
            await self._drop(client)
            self.out._mark_all_dirty()
            self._report(err)

    async def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            await self._drop(client)


def _cast(value: Any, vtype: Any) -> Any:
    """``value`` as a Variant of the PLC node's own type (Boolean, a string, or an integer of any width)."""
    from asyncua import ua

    if vtype == ua.VariantType.Boolean:
        return ua.Variant(bool(value), vtype)
    if vtype in (ua.VariantType.String, ua.VariantType.LocalizedText):
        return ua.Variant(str(value) if vtype == ua.VariantType.String else ua.LocalizedText(str(value)), vtype)
    if vtype in (ua.VariantType.Float, ua.VariantType.Double):
        return ua.Variant(float(value), vtype)
    if isinstance(value, str):  # a string value into a numeric node: its number if it has one, else 0
        try:
            value = int(value)
        except ValueError:
            value = 0
    bits = _INT_BITS.get(vtype.name, 32)
    return ua.Variant(int(value) % 2**bits, vtype)  # counters wrap at the PLC node's width


_INT_BITS = {"SByte": 7, "Byte": 8, "Int16": 15, "UInt16": 16, "Int32": 31, "UInt32": 32, "Int64": 63, "UInt64": 64}

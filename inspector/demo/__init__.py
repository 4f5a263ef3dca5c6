"""``inspector demo``: the whole station, offline, with no configuration, under the station supervisor.

:func:`start_demo_station` is the demo's station start-up (``inspector demo`` and ``inspector gui --demo`` use it):
the demo's models (trained on the first run, reused afterwards), a simulated PLC (a real Modbus TCP server in
this process, :mod:`inspector.line.sim_plc`), then the station supervisor of ``inspector station run``
(:class:`inspector.station.supervisor.Supervisor`, on a thread of this process: it takes the data folder's
lock and owns the embedded Redis) with every station process as a child: workers (inspection, the verdict
recorder into SQLite and review routing with its samplers), line outputs (to the simulated PLC), the drift
monitor with its retrain trigger, the RQ worker with its scheduler, and the camera (synthetic washers, or a
folder given with ``--data``). The camera publishes only once every worker and the line are up. Ctrl-C stops
it all in order, Redis last; nothing is left running and the lock is released.

Modules: ``start`` (the start-up), ``station`` (the running :class:`DemoStation`), ``tally`` (stream readers),
``console`` (the command: live table, JSON summary, Ctrl-C), ``camera`` (the camera process), ``models`` (the
demo's model package: trained by the trainer's ``demo_models`` provider, else the tiny numpy last resort).
The drift scenario (``inspector demo --scenario drift``) retrains and promotes: it belongs to ``jobs.scenario``.
"""

from inspector.demo.console import run_demo, status_table
from inspector.demo.start import start_demo_station
from inspector.demo.station import DemoStation

__all__ = ["DemoStation", "run_demo", "start_demo_station", "status_table"]

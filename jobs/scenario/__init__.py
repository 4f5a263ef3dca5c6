"""Scenarios of ``inspector demo --scenario NAME`` that run the learning loop (drift alarm, labels, retraining,
gate, promotion, hot swap): they retrain (trainer) and promote (jobs), so they live in the jobs layer and reach
the ``inspector`` command as its ``demo_scenario`` provider (pyproject.toml)."""

from jobs.scenario.drift import run_scenario
from jobs.scenario.parts import SCENARIOS, DriftScenario, ScenarioError, rates, relight, write_base_data

__all__ = ["SCENARIOS", "DriftScenario", "ScenarioError", "rates", "relight", "run_scenario", "write_base_data"]

"""Watching the live verdicts: frames sampled for review (with rate limits) and drift detection."""

from __future__ import annotations

from pydantic import Field

from inspector.contracts.config.base import Section


class RateLimitSection(Section):
    per_minute: int = Field(30, ge=0, description="Most review requests per minute from this sampler.")
    per_hour: int = Field(600, ge=0, description="Most per hour.")
    per_day: int = Field(5000, ge=0, description="Most per day (daily cap).")


class ReviewSection(Section):
    enabled: bool = Field(True, description="Route uncertain frames to the review queue.")
    confidence_band: tuple[float, float] = Field((0.5, 0.9), description="Classifier top-probability band to review.")
    anomaly_band: float = Field(0.2, ge=0, le=1, description="Normalised anomaly scores within 1±band are reviewed.")
    audit_pass_one_in: int = Field(500, ge=0, description="Random audit of 1 in N PASS verdicts (0: off).")
    limits: RateLimitSection = Field(default_factory=RateLimitSection)
    lease_s: float = Field(300, gt=0, le=86_400, description="How long a labeller holds an item.")
    audit_seed: int = Field(0, ge=0, description="Seed of the random PASS audit (same frame id, same choice).")
    queue_size: int = Field(
        2000,
        ge=1,
        le=100_000,
        description="Sampled frames (with their image) waiting in Redis to be archived and queued, e.g. while the database or disk is down; more are dropped and counted.",
    )
    review_maxlen: int = Field(10_000, ge=100, le=1_000_000, description="Bound of the review stream.")


class DriftSection(Section):
    window: int = Field(100, ge=10, le=100_000, description="Frames in the rolling window.")
    psi_threshold: float = Field(0.25, gt=0, description="Population stability index that trips an alarm.")
    p_value: float = Field(0.001, gt=0, lt=1, description="KS-test p-value below which a statistic drifted.")
    hysteresis: int = Field(3, ge=1, le=1000, description="Consecutive tripped windows before an alarm.")
    cooldown_s: float = Field(600, ge=0, description="Quiet time after an alarm.")
    check_every: int = Field(10, ge=1, le=100_000, description="Frames between two drift checks of the full window.")
    mean_shift_sigma: float = Field(
        1.0,
        gt=0,
        description="Window mean this many reference standard deviations away trips a statistic (with the KS test).",
    )
    review_rate_delta: float = Field(
        0.15, gt=0, le=1, description="Absolute change of the REVIEW share that trips (with a binomial test)."
    )
    operator_report_rate: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Share of the window's verdicts an operator reported wrong that trips (statistic operator_reports).",
    )
    operator_report_min: int = Field(
        3, ge=1, le=100_000, description="Fewest operator reports in the window before operator_reports can trip."
    )

"""Station configuration: typed models loaded from YAML with environment overrides.

Every field has a description and bounds; unknown keys are refused (``extra="forbid"``) and every
validation error is reported with its dotted key path and a hint. Environment overrides use the
prefix ``INSPECTOR_`` and ``__`` between levels, e.g. ``INSPECTOR_REDIS__URL=redis://host:6379/0``
or ``INSPECTOR_WORKER__MAX_BATCH=4``. Values from the environment are parsed as YAML scalars.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inspector.contracts.errors import ConfigError
from inspector.contracts.lifecycle import Role
from inspector.contracts.processes import StationProcess

ENV_PREFIX = "INSPECTOR_"
# Variables under ENV_PREFIX that are not station keys (read by tests, the trainer and the CLI). Every other
# INSPECTOR_* variable must name a key (``__`` between levels), or every process refuses to start.
NON_CONFIG_ENV = frozenset({
    "INSPECTOR_SLOW", "INSPECTOR_SHARED_DATA", "INSPECTOR_WEIGHTS_DIR", "INSPECTOR_ROLE", "INSPECTOR_FAULTS_EXTERNAL",
    "INSPECTOR_EXPERIMENT_LOG", "INSPECTOR_SOAK_S",
    "INSPECTOR_AUDIT_KEY", "INSPECTOR_TOKEN", "INSPECTOR_TOKEN_FILE",
})
# The OPC UA node set of a station's line output (inspector/line/opcua.py): name -> OPC UA built-in type.
OPCUA_NODE_SET: dict[str, str] = {
    "Ready": "Boolean", "Reject": "Boolean", "LastPartId": "String", "LastSeq": "UInt32", "LastSignal": "String",
    "LastDecision": "String", "LastReason": "String", "LastDefectClass": "String", "ModelVersion": "String",
    "Parts": "UInt32", "Accepts": "UInt32", "Rejects": "UInt32", "Heartbeat": "UInt32",
}
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")
PRODUCT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
STORE_URL_RE = r"^(sqlite|postgresql)(\+[A-Za-z0-9_]+)?://"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StationSection(Section):
    id: str = Field("demo", description="Station id; part of every stream name.", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    data_dir: Path = Field(Path("station-data"), description="Folder for Redis persistence, database, archive, models.")


class ReconnectSection(Section):
    initial_s: float = Field(0.05, gt=0, le=10, description="First wait before reconnecting to Redis.")
    max_s: float = Field(2.0, gt=0, le=60, description="Longest wait between reconnect attempts.")
    give_up_s: float = Field(120.0, gt=0, le=86400, description="Total time to keep retrying before raising.")


class SentinelSection(Section):
    """Redis Sentinel: the station asks the sentinels which server is the master and follows a failover."""

    hosts: list[str] = Field(
        ..., min_length=1, max_length=16,
        description="Sentinels as host:port, e.g. [10.0.0.5:26379, 10.0.0.6:26379, 10.0.0.7:26379] (three on separate hosts).",
    )
    master: str = Field(
        "inspector", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Name of the master the sentinels monitor (`sentinel monitor NAME ...` in sentinel.conf).",
    )
    username: str | None = Field(None, description="ACL user of the sentinels (their own, not the master's).")
    password: str | None = Field(None, description="Password of the sentinels (sentinel requirepass); the master's is redis.password.")
    socket_timeout_s: float = Field(0.5, gt=0, le=30, description="Timeout of one question to one sentinel.")

    @field_validator("hosts")
    @classmethod
    def _host_port(cls, hosts: list[str]) -> list[str]:
        for i, h in enumerate(hosts):
            host, sep, port = h.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"hosts[{i}] {h!r} is not host:port: write e.g. 10.0.0.5:26379 (26379 is Sentinel's port)")
        if len(set(hosts)) != len(hosts):
            raise ValueError("hosts lists a sentinel twice: list each sentinel once")
        return hosts

    def addresses(self) -> list[tuple[str, int]]:
        return [(h.rpartition(":")[0].strip("[]"), int(h.rpartition(":")[2])) for h in self.hosts]


class RedisSection(Section):
    url: str | None = Field(
        None, description="redis:// or rediss:// URL of an external Redis. Unset: start an embedded redis-server."
    )
    prefix: str = Field("insp", pattern=r"^[A-Za-z0-9_-]{1,32}$", description="Prefix of every key and stream.")
    username: str | None = Field(None, description="ACL user name (external Redis).")
    password: str | None = Field(None, description="Password or ACL password (external Redis).")
    tls: bool = Field(False, description="Use TLS (same as a rediss:// URL).")
    tls_ca_certs: Path | None = Field(None, description="CA bundle to verify the Redis server's certificate.")
    appendfsync: Literal["always", "everysec", "no"] = Field(
        "always", description="fsync policy of the embedded server's append-only file."
    )
    frames_maxlen: int = Field(2000, ge=10, le=1_000_000, description="Bound of the frames stream (entries).")
    verdicts_maxlen: int = Field(100_000, ge=100, le=10_000_000, description="Bound of the verdicts stream.")
    events_maxlen: int = Field(10_000, ge=100, le=1_000_000, description="Bound of the events stream.")
    socket_timeout_s: float = Field(5.0, gt=0, le=120, description="Socket timeout of Redis calls.")
    reconnect: ReconnectSection = Field(default_factory=ReconnectSection)
    sentinel: SentinelSection | None = Field(
        None, description="Redis Sentinel (high availability): every client finds the master through the sentinels. "
                          "Unset: redis.url or the embedded server.",
    )
    wait_replicas: int | None = Field(
        None, ge=0, le=16,
        description="A verdict is acknowledged only once WAIT says this many replicas hold it. Unset: 1 with "
                    "redis.sentinel, 0 (no WAIT) otherwise.",
    )
    wait_timeout_ms: int = Field(
        250, ge=1, le=60_000,
        description="Longest WAIT on a verdict commit; fewer replicas by then: not acknowledged, the frame is retried.",
    )

    @property
    def commit_replicas(self) -> int:
        """Replicas a verdict commit waits for: ``wait_replicas``, or by default 1 with Sentinel, else 0."""
        if self.wait_replicas is not None:
            return self.wait_replicas
        return 1 if self.sentinel is not None else 0

    @model_validator(mode="after")
    def _one_way_to_redis(self) -> RedisSection:
        if self.sentinel is not None and self.url:
            raise ValueError("redis.url and redis.sentinel are both set: with Sentinel the sentinels name the master; "
                             "remove redis.url (keep redis.password for the master)")
        return self

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(REDIS_URL_SCHEMES):
            shown = _shown("url", url)  # never echo a password
            raise ValueError(f"{shown!r} is not a Redis URL: use redis://host:6379/0, rediss://host:6380/0 (TLS) "
                             "or unix:///path/to/redis.sock")
        return url


class GenICamSection(Section):
    """A GenICam camera (kind=genicam): GigE Vision / USB3 Vision through Aravis, or a vendor's GenTL producer."""

    producer: Literal["aravis", "harvesters"] = Field(
        "aravis", description="aravis (open source, GigE Vision and USB3 Vision) or harvesters (a vendor's GenTL .cti).")
    cti: Path | None = Field(None, description="The vendor's GenTL producer file (.cti), for producer harvesters.")
    device_id: str | None = Field(
        None, max_length=256, description="Camera to open: Aravis id (e.g. Aravis-Fake-GV01), serial number or IP "
                                          "address; unset: the first camera found.")
    pixel_format: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_]{1,32}$", description="GenICam PixelFormat (Mono8, RGB8, BayerRG8, Mono16...); "
                                                          "unset: the camera's current format.")
    exposure_us: float | None = Field(None, gt=0, le=1e8, description="ExposureTime in microseconds; unset: keep.")
    gain_db: float | None = Field(None, ge=-100, le=100, description="Gain in dB; unset: keep.")
    frame_rate: float | None = Field(
        None, gt=0, le=1000, description="Free-run acquisition frame rate; unset: camera.fps.")
    trigger: Literal["free_run", "software", "hardware"] = Field(
        "free_run", description="free_run: the camera streams; software: the station fires one trigger per part; "
                                "hardware: the camera waits on trigger_source (one frame per part).")
    trigger_source: str = Field("Line0", pattern=r"^[A-Za-z0-9_]{1,32}$",
                                description="TriggerSource input for trigger hardware (e.g. Line0).")
    buffers: int = Field(8, ge=2, le=256, description="Stream buffers queued at the camera driver.")
    reconnect_after_s: float = Field(
        1.0, gt=0, le=600, description="No frame for this long (free run, software trigger) or no answer (hardware "
                                       "trigger): drop the camera and reopen it.")
    reconnect_s: float = Field(0.5, gt=0, le=60, description="Wait between attempts to reopen a vanished camera.")

    @model_validator(mode="after")
    def _needs_cti(self) -> GenICamSection:
        if self.producer == "harvesters" and self.cti is None:
            raise ValueError("camera.source.genicam.cti is required when producer is 'harvesters': "
                             "set it to your camera vendor's GenTL producer (.cti)")
        return self


class CameraSourceSection(Section):
    kind: Literal["synthetic", "folder", "video", "device", "url", "genicam"] = Field(
        "synthetic", description="synthetic demo parts, image folder replay, video file, OpenCV device index, "
                                 "RTSP/HTTP URL or GStreamer pipeline, GenICam camera (camera.source.genicam)."
    )
    path: Path | None = Field(None, description="Folder (kind=folder) or video file (kind=video).")
    index: int = Field(0, ge=0, le=64, description="OpenCV device index (kind=device).")
    url: str | None = Field(None, description="RTSP/HTTP URL or GStreamer pipeline (kind=url).")
    order: Literal["name", "mtime", "shuffle"] = Field("name", description="Replay order of a folder.")
    loop: bool = Field(True, description="Start again at the end of a folder or video.")
    seed: int = Field(0, ge=0, description="Seed for shuffle order and synthetic parts.")
    defect_rate: float = Field(0.2, ge=0, le=1, description="Share of defective synthetic parts.")
    genicam: GenICamSection = Field(default_factory=GenICamSection)


VIEW_RE = r"^[A-Za-z0-9_.-]{1,64}$"


class CameraSection(Section):
    id: str = Field("cam0", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Camera id within the station.")
    fps: float = Field(20.0, gt=0, le=1000, description="Frames per second to publish.")
    encoding: Literal["jpeg", "png"] = Field("jpeg", description="Image encoding on the frames stream.")
    jpeg_quality: int = Field(90, ge=10, le=100, description="JPEG quality for encoded frames.")
    health_periods: float = Field(2.0, ge=1, le=100, description="A camera silent this many frame periods is unhealthy.")
    source: CameraSourceSection = Field(default_factory=CameraSourceSection)
    view: str | None = Field(
        None, pattern=VIEW_RE, description="The view of the part this camera takes (parts.views; unset: the camera "
                                           "id when parts.views is set).")
    views: list[str] = Field(
        default_factory=list, description="Several trigger positions of this one camera: it takes these views of "
                                          "each part in turn, the part changes after the last (instead of view).")

    def view_of(self, seq: int) -> str:
        """The view of the camera's ``seq``-th frame (with parts.views set)."""
        return self.views[seq % len(self.views)] if self.views else (self.view or self.id)


class PartsSection(Section):
    """Parts seen by several cameras or trigger positions: the line gets one verdict per part, from all views."""

    views: list[str] = Field(
        default_factory=list, description="Views of every part, e.g. [top, side]: a part passes only when every view "
                                          "passed by line.deadline_ms (empty: one frame is one part).")


class WorkerSection(Section):
    group: str = Field("inspector", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Consumer group of inspection workers.")
    max_batch: int = Field(8, ge=1, le=256, description="Largest micro-batch.")
    max_wait_ms: float = Field(5.0, ge=0, le=1000, description="Longest wait to fill a micro-batch.")
    max_deliveries: int = Field(3, ge=1, le=100, description="Deliveries before a frame is dead-lettered.")
    reclaim_idle_ms: int = Field(3000, ge=100, le=3_600_000, description="Pending entries idle this long are reclaimed.")
    heartbeat_ttl_s: float = Field(3.0, gt=0, le=600, description="TTL of the worker heartbeat key.")
    max_image_pixels: int = Field(40_000_000, ge=10_000, description="Frames larger than this are refused (bombs).")
    expire_ms: float = Field(
        5000, ge=0, le=3_600_000, description="Frames older than this when read get an ERROR verdict without inference (0: never)."
    )
    reload_poll_s: float = Field(1.0, gt=0, le=600, description="How often the worker checks for a new active model.")


class RuntimeSection(Section):
    backend: Literal["auto", "onnxruntime", "openvino", "tensorrt"] = Field(
        "auto", description="Inference backend. auto: the one the package's precision gate kept (model.backend) when "
                            "it is installed here, else onnxruntime.")
    providers: list[Literal["tensorrt", "cuda", "cpu"]] = Field(
        default_factory=lambda: ["cpu"], min_length=1, description="ONNX Runtime execution providers, in order."
    )
    threads: int = Field(2, ge=1, le=256, description="Intra-op threads of the CPU provider.")
    precision: Literal["fp32", "fp16", "bf16", "int8", "auto"] = Field(
        "auto", description="auto: the package's recommended precision (INT8/bf16 only if it passed its gate on the "
                            "backend that runs it); bf16 needs the openvino backend, fp16 tensorrt."
    )
    engine_cache_dir: Path | None = Field(None, description="TensorRT engine cache; default <data_dir>/engines.")


class ModelSection(Section):
    package: Path | None = Field(None, description="Model package folder. Unset: the station's active package.")


class PolicySection(Section):
    pass_confidence: float = Field(0.90, ge=0.5, le=1.0, description="Classifier 'good' probability needed to pass.")
    fail_confidence: float = Field(0.90, ge=0.5, le=1.0, description="Defect probability needed for a sure FAIL.")
    anomaly_review_margin: float = Field(
        0.15, ge=0, le=1, description="Normalised anomaly scores within 1±margin of the threshold go to REVIEW."
    )
    on_disagreement: Literal["review", "fail"] = Field("review", description="Verdict when the two models disagree.")
    reject_review: bool = Field(True, description="REVIEW rejects the part on the line (fail safe).")
    reject_error: bool = Field(True, description="ERROR rejects the part on the line (fail safe).")
    good_class: str = Field("good", description="Name of the classifier's defect-free class.")


class StoreSection(Section):
    url: str | None = Field(None, description="SQLAlchemy URL. Unset: SQLite in <data_dir>/station.db.")
    batch_size: int = Field(200, ge=1, le=100_000, description="Verdicts written per transaction.")
    flush_ms: float = Field(200, ge=1, le=60_000, description="Longest wait before a partial batch is written.")
    db_schema: str | None = Field(
        None, pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="PostgreSQL schema holding the tables (unset: the default)."
    )
    reclaim_idle_ms: int = Field(
        30_000, ge=100, le=3_600_000, description="Verdict entries pending this long with a dead recorder are reclaimed."
    )
    connect_timeout_s: int = Field(5, ge=2, le=300, description="Longest wait to open a PostgreSQL connection (libpq connect_timeout).")
    keepalive_idle_s: int = Field(10, ge=1, le=7200, description="TCP keepalive: idle seconds before the first probe of a database connection.")
    keepalive_interval_s: int = Field(3, ge=1, le=600, description="TCP keepalive: seconds between two probes.")
    keepalive_count: int = Field(3, ge=1, le=100, description="TCP keepalive: unanswered probes before the connection counts as dead.")
    statement_timeout_ms: int = Field(10_000, ge=100, le=3_600_000, description="PostgreSQL statement_timeout of station connections.")
    lock_timeout_ms: int = Field(5_000, ge=10, le=3_600_000, description="PostgreSQL lock_timeout of station connections.")
    stall_s: float = Field(
        15, ge=0.5, le=3600,
        description="A database call or a consumer (recorder, review router) without progress this long is reported unhealthy; the stuck call's connection is cut.",
    )
    stop_timeout_s: float = Field(
        10, gt=0, le=600, description="Longest wait at exit for the recorder and review router; what they hold stays pending for the next one."
    )

    @field_validator("url")
    @classmethod
    def _store_scheme(cls, url: str | None) -> str | None:
        import re

        if url is not None and not re.match(STORE_URL_RE, url):
            raise ValueError(f"{url!r} is not a database URL: use sqlite:////abs/path/station.db or "
                             "postgresql+psycopg2://user:password@host:5432/dbname (or leave store.url unset)")
        return url


class RetentionSection(Section):
    """What the station keeps, and for how long. Applied by the verdict recorder (in every `inspector worker`
    that records), at most once per ``interval_s`` across the station (a Redis lock)."""

    interval_s: float = Field(60, ge=1, le=86_400, description="How often retention is applied.")
    stream_max_age_s: int = Field(
        600, ge=60, le=30 * 86_400,
        description="Verdict, event and review stream entries older than this are trimmed (XTRIM MINID, never past an "
                    "entry the recorder or retrain trigger has not yet taken); the exactly-once done-keys expire after "
                    "the same time (Redis memory is then flat: about 1.5 KB per verdict kept).",
    )
    verdict_rows_max_age_s: float = Field(
        90 * 86_400, ge=0, description="Verdict rows captured longer ago than this are deleted (0: keep forever)."
    )
    verdict_rows_max: int = Field(0, ge=0, description="Most verdict rows kept; the oldest go first (0: no limit).")
    archive_max_age_s: float = Field(
        0, ge=0, description="Archived images older than this are deleted (0: keep forever); images of labelled "
                             "frames are kept (they are the training data)."
    )
    archive_max_bytes: int = Field(
        10 * 2**30, ge=0, description="Largest archive size in bytes; the oldest unlabelled images go first (0: no limit)."
    )
    delete_batch: int = Field(5000, ge=100, le=1_000_000, description="Rows deleted per transaction (short database locks).")


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
        2000, ge=1, le=100_000,
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
        1.0, gt=0, description="Window mean this many reference standard deviations away trips a statistic (with the KS test)."
    )
    review_rate_delta: float = Field(0.15, gt=0, le=1, description="Absolute change of the REVIEW share that trips (with a binomial test).")
    operator_report_rate: float = Field(
        0.05, gt=0, le=1, description="Share of the window's verdicts an operator reported wrong that trips (statistic operator_reports)."
    )
    operator_report_min: int = Field(3, ge=1, le=100_000, description="Fewest operator reports in the window before operator_reports can trip.")


class JobsSection(Section):
    queue: str = Field("training", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="RQ queue of retraining jobs.")
    auto_promote: bool = Field(False, description="Promote a candidate that passes every gate without approval.")
    regression_tolerance: float = Field(0.01, ge=0, le=1, description="Allowed drop of the held-out metric.")
    recall_floor: float = Field(0.85, ge=0, le=1, description="Per-defect-class recall floor.")
    false_reject_ceiling: float = Field(0.02, ge=0, le=1, description="Largest false-reject rate on good parts.")
    job_timeout_s: int = Field(3600, ge=10, description="Longest a retraining job may run.")
    recall_floors: dict[str, float] = Field(
        default_factory=dict, description="Per-defect-class recall floors overriding recall_floor (class name -> floor)."
    )
    retries: int = Field(1, ge=0, le=10, description="RQ retries of a job whose worker died or that raised.")
    retrain_dedupe_s: float = Field(60, ge=0, le=86_400, description="Retrain requests within this time of the last one are dropped.")
    base_data: Path | None = Field(
        None, description="Base training data in the anomaly layout (train/good, test/<class>); test/ is the fixed held-out set."
    )
    anomaly_image_size: int = Field(256, ge=64, le=1024, description="Input size (square) of the retrained anomaly model.")
    train_images: int = Field(
        800, ge=4, le=100_000, description="Most base good frames (evenly spaced) the retraining fits on; every 5th sets "
                                           "the anomaly threshold (800: all of magnetic_tile's 759, 152 threshold frames).")
    heldout_limit: int | None = Field(None, ge=4, description="Evenly spaced subset of the held-out set (None: all of it).")
    classifier_recipe: Path | None = Field(
        None, description="Classifier recipe YAML of retrained combined/classification packages (unset: the built-in "
                          "trainer.retrain.RETRAIN_RECIPE); its image_size is replaced by anomaly_image_size."
    )
    min_class_frames: int = Field(
        10, ge=3, le=100_000, description="Fewest labelled training frames of a defect class for the retrained "
                                          "classifier to learn it as a class (rarer classes are left to the anomaly scorer)."
    )
    calibration_images: int = Field(
        128, ge=100, le=10_000, description="Training frames (evenly spaced) that calibrate the INT8 candidate of a retraining."
    )
    min_gate_frames: int = Field(10, ge=1, le=100_000, description="Fewest good and fewest defect frames a gate set needs.")
    validation_interval_s: float = Field(
        3600, ge=0, description="Period of the held-out validation job under `jobs worker --with-scheduler` (0: off)."
    )
    worker_nice: int = Field(
        10, ge=0, le=19, description="CPU niceness of `inspector jobs worker`: retraining must never starve the "
                                     "line's inspection workers on a shared machine (0: same priority)."
    )
    collect_frames: int = Field(50, ge=4, le=10_000, description="Frames collected after a camera or lighting change.")
    validation_window_s: float = Field(
        86_400, gt=0, le=90 * 86_400, description="Periodic validation also scores the frames labelled in this last window."
    )
    validation_min_frames: int = Field(
        20, ge=1, le=100_000, description="Fewest labelled frames in the window for its check to run (else skipped, and said so)."
    )
    alarm_max_age_s: float = Field(
        86_400, gt=0, le=30 * 86_400, description="The retrain trigger acknowledges without acting a DRIFT_ALARM older than this."
    )


class LineSection(Section):
    deadline_ms: float = Field(500, gt=0, le=60_000, description="No PASS within this time of capture: reject.")
    mqtt_url: str | None = Field(None, description="mqtt://host:port for line signals (unset: off).")
    mqtt_topic: str = Field("inspector", description="Topic prefix of line signals.")
    modbus_url: str | None = Field(None, description="modbus://host:port for line signals (unset: off).")
    modbus_unit: int = Field(1, ge=0, le=247, description="Modbus device (unit) id of the line controller.")
    modbus_reject_coil: int = Field(0, ge=0, le=65535, description="Coil pulsed high for each rejected part.")
    modbus_ready_coil: int = Field(1, ge=0, le=65535, description="Coil held high while the inspector is healthy.")
    modbus_seq_register: int = Field(0, ge=0, le=65535, description="Holding register with the last part's sequence (mod 65536).")
    reject_pulse_ms: float = Field(200, gt=0, le=10_000, description="Length of the reject pulse on the Modbus coil.")
    health_poll_ms: float = Field(200, ge=20, le=1000, description="How often the ready signal re-checks worker and camera health.")
    require_camera: bool = Field(True, description="Ready also needs a live camera (heartbeat key or a recent frame).")
    opcua_url: str | None = Field(
        None, description="opc.tcp://host:port/path: the endpoint the OPC UA server listens on (opcua_mode server) or "
                          "the PLC's endpoint the station writes to (opcua_mode client). Unset: OPC UA off.")
    opcua_mode: Literal["server", "client"] = Field(
        "server", description="server: the station serves its node set (OPCUA_NODE_SET) under Objects/<station id>; "
                              "client: the station writes the same values into the PLC's own nodes (opcua_nodes).")
    opcua_namespace: str = Field("urn:inspector:station", min_length=1,
                                 description="Namespace URI of the served node set (server mode).")
    opcua_nodes: dict[str, str] = Field(
        default_factory=dict,
        description="Client mode: node set name -> the PLC's node id (e.g. Reject: 'ns=3;s=Line.Reject'); names "
                    "not listed are not written. Names: " + ", ".join(OPCUA_NODE_SET) + ".")
    opcua_timeout_s: float = Field(2.0, gt=0, le=60, description="Longest wait for the OPC UA endpoint to answer "
                                                                  "(connect or write) before retrying.")

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
                raise ValueError(f"{node_id!r} (for {name}) is not an OPC UA node id: write e.g. ns=3;s=Line.{name} "
                                 "or ns=3;i=1001")
        return nodes

    @model_validator(mode="after")
    def _opcua_client_nodes(self) -> LineSection:
        if self.opcua_url and self.opcua_mode == "client" and not self.opcua_nodes:
            raise ValueError("line.opcua_nodes must name at least one PLC node (e.g. {Reject: 'ns=3;s=Line.Reject'}) "
                             "when line.opcua_mode is 'client'")
        return self


SECRET_HASH_RE = r"^scrypt\$\d+\$\d+\$\d+\$[0-9a-f]{32}\$[0-9a-f]{64}$"


class RoleSection(Section):
    pin_hash: str | None = Field(None, pattern=SECRET_HASH_RE,
                                 description="Salted scrypt hash of the role's PIN (`inspector identity hash-pin`; "
                                             "unset: the role has no PIN).")
    pin_sha256: str | None = Field(None, description="Refused: unsalted sha256 PIN hashes are searched in under a "
                                                     "second; use pin_hash.")

    @field_validator("pin_sha256")
    @classmethod
    def _no_unsalted_pin(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("an unsalted sha256 PIN hash is refused (a 6-digit PIN is found from it in under a "
                             "second): set pin_hash to the output of `inspector identity hash-pin`")
        return value


class TokenEntry(Section):
    roles: list[Role] = Field(min_length=1, description="Roles the token's holder may act in.")
    hash: str = Field(pattern=SECRET_HASH_RE, description="Salted scrypt hash of the token's secret "
                                                          "(`inspector identity new-token NAME`).")


class IdentitySection(Section):
    """Who may act from the command line: the operating-system user (or a personal token) and its roles."""

    users: dict[str, list[Role]] = Field(
        default_factory=dict,
        description="Operating-system user name -> roles. Empty: the user owning station.data_dir (who commissioned "
                    "the station) holds maintenance and quality, and nobody else holds a role.")
    tokens: dict[str, TokenEntry] = Field(
        default_factory=dict, description="Personal tokens for remote use (INSPECTOR_TOKEN=name:secret or "
                                          "INSPECTOR_TOKEN_FILE): name -> roles and salted hash.")
    lockout_failures: int = Field(5, ge=1, le=100, description="Wrong PINs (per role) before the login locks.")
    lockout_s: float = Field(300.0, gt=0, le=86_400, description="How long a locked login stays locked.")


class GuiSection(Section):
    operator: RoleSection = Field(default_factory=RoleSection)
    quality: RoleSection = Field(default_factory=RoleSection)
    maintenance: RoleSection = Field(default_factory=RoleSection)
    defect_classes: list[str] = Field(
        default_factory=list, max_length=9,
        description="Defect classes on labelling keys 1..9, in order (empty: the model's classes from the review items).",
    )
    camera_source: bool = Field(False, description="The GUI streams the configured camera to the frames stream.")


class ProductSection(Section):
    """One product the line makes: the model package that judges its frames and, optionally, its own thresholds."""

    package: Path = Field(description="Model package folder of this product; workers keep it loaded and warm.")
    policy: PolicySection | None = Field(None, description="Decision thresholds of this product (unset: the station's policy).")


class ShadowSection(Section):
    """A candidate judging live frames beside the active model (``inspector shadow run``): stored, never sent to
    the line. Which candidate is set by ``inspector shadow start VERSION`` (audited), not here."""

    max_lag_ms: float = Field(
        2000, gt=0, le=600_000, description="Frames older than this when the shadow reads them are skipped (counted): "
                                            "the shadow runs on spare capacity and never queues behind the line.")
    nice: int = Field(10, ge=0, le=19, description="CPU niceness of the shadow process: the active model's workers go first.")
    idle_priority: bool = Field(
        True, description="Run the shadow process under Linux's SCHED_IDLE policy (CPU only when nothing else wants "
                          "it), beside its niceness; off or not Linux: niceness only.")
    threads: int = Field(1, ge=1, le=256, description="Intra-op threads of the shadow candidate's CPU runtime.")
    max_batch: int = Field(16, ge=1, le=256, description="Largest micro-batch of the shadow candidate.")
    pace: Literal["gaps", "batch"] = Field(
        "gaps", description="gaps: judge one frame at a time right after the line's verdicts, only while the candidate's "
                            "measured time fits before the camera's next frame (a station whose cores the workers "
                            "use); batch: every poll_ms, all that arrived (a machine with cores to spare).")
    poll_ms: float = Field(
        500, ge=10, le=60_000, description="The shadow reads the frames that arrived every poll_ms, in one batch: few "
                                           "Redis and database writes (each one fsynced) beside the line's own.")
    flush_s: float = Field(
        2.0, ge=0, le=600, description="The shadow writes its rows and acknowledges their frames at most this often "
                                       "(one transaction), so its fsynced writes stay few beside the line's.")
    save_differing: int = Field(
        500, ge=0, le=1_000_000, description="Images of the frames where the candidate and the active model differ, "
                                             "archived per shadowed version for the report (0: none).")
    required_frames: int = Field(
        0, ge=0, le=10_000_000, description="Promotion needs at least this many live frames judged by the candidate "
                                            "in shadow and compared with the active verdicts (0: no shadow period needed).")
    min_agreement: float = Field(
        0.95, ge=0, le=1, description="With required_frames set: the least share of compared frames on which the "
                                      "candidate's line outcome (reject or not) matches the active model's.")


class SupervisorSection(Section):
    """What ``inspector station run`` runs and how it restarts and stops them (see inspector/contracts/processes.py)."""

    processes: list[StationProcess] = Field(
        default_factory=lambda: [StationProcess.CAMERA, StationProcess.WORKER, StationProcess.LINE],
        description="Station processes to run: camera, worker, line, drift, jobs (the embedded Redis is always "
                    "started first when redis.url is unset).",
    )
    workers: int = Field(1, ge=1, le=64, description="Inspection worker processes.")
    restart_initial_s: float = Field(0.5, gt=0, le=600, description="First wait before restarting a process that exited.")
    restart_max_s: float = Field(30.0, gt=0, le=3600, description="Longest wait between restarts (doubling backoff).")
    restart_limit: int = Field(
        10, ge=1, le=10_000, description="Most restarts of one process within restart_window_s; then it is left failed."
    )
    restart_window_s: float = Field(300.0, gt=0, le=86_400, description="Window of the restart-rate limit.")
    healthy_after_s: float = Field(30.0, gt=0, le=86_400, description="A process up this long starts its backoff afresh.")
    stop_timeout_s: float = Field(
        10.0, gt=0, le=600, description="SIGTERM of the supervisor: everything is stopped within this time (then SIGKILL)."
    )
    lock_wait_s: float = Field(30.0, ge=0, le=3600, description="How long to wait for the data folder lock held by another process.")


# Metrics port of each process kind: metrics.port_base + this offset (a worker: + METRICS_WORKER_OFFSET + its number).
METRICS_PORT_OFFSETS: dict[str, int] = {"camera": 0, "line": 1, "drift": 2, "jobs": 3, "gui": 4}
METRICS_WORKER_OFFSET = 10


class MetricsSection(Section):
    """Prometheus metrics (inspector/telemetry.py): every long-running process serves /metrics on its own port."""

    enabled: bool = Field(False, description="Serve Prometheus metrics from every station process.")
    host: str = Field("127.0.0.1", min_length=1, description="Address the metrics servers bind (0.0.0.0: every interface).")
    port_base: int = Field(
        9400, ge=1024, le=65_400,
        description="Ports: camera +0, line +1, drift +2, jobs +3, gui +4, worker-N +10+N (worker-1: 9411); a worker "
                    "without a numbered name (started by hand) +10.")
    ports: dict[str, int] = Field(
        default_factory=dict, description="Per-process ports overriding port_base (camera, line, drift, jobs, gui, "
                                          "worker-N -> port; 0: that process serves none).")

    @field_validator("ports")
    @classmethod
    def _process_names(cls, ports: dict[str, int]) -> dict[str, int]:
        for name, port in ports.items():
            if name not in METRICS_PORT_OFFSETS and not re.match(r"^worker(-\d{1,2})?$", name):
                raise ValueError(f"{name!r} is not a station process: use camera, line, drift, jobs, gui or worker-N")
            if not 0 <= port <= 65_535:
                raise ValueError(f"port {port} of {name} is not a TCP port (1..65535, 0: off)")
        return ports


class StationConfig(Section):
    """The whole station file. Every process validates it at start."""

    station: StationSection = Field(default_factory=StationSection)
    redis: RedisSection = Field(default_factory=RedisSection)
    camera: CameraSection = Field(default_factory=CameraSection)
    parts: PartsSection = Field(default_factory=PartsSection)
    worker: WorkerSection = Field(default_factory=WorkerSection)
    runtime: RuntimeSection = Field(default_factory=RuntimeSection)
    model: ModelSection = Field(default_factory=ModelSection)
    policy: PolicySection = Field(default_factory=PolicySection)
    store: StoreSection = Field(default_factory=StoreSection)
    retention: RetentionSection = Field(default_factory=RetentionSection)
    review: ReviewSection = Field(default_factory=ReviewSection)
    drift: DriftSection = Field(default_factory=DriftSection)
    jobs: JobsSection = Field(default_factory=JobsSection)
    line: LineSection = Field(default_factory=LineSection)
    gui: GuiSection = Field(default_factory=GuiSection)
    identity: IdentitySection = Field(default_factory=IdentitySection)
    shadow: ShadowSection = Field(default_factory=ShadowSection)
    products: dict[str, ProductSection] = Field(
        default_factory=dict, description="Products the line makes, by name (`inspector product switch NAME` changes "
                                          "over). Empty: one product, judged by model.package or the registry's active model.")
    product: str | None = Field(None, description="The product on the line when the station first starts (default: "
                                                  "the first of products).")
    supervisor: SupervisorSection = Field(default_factory=SupervisorSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)

    @model_validator(mode="after")
    def _cross_checks(self) -> StationConfig:
        if self.camera.source.kind == "folder" and self.camera.source.path is None:
            raise ValueError("camera.source.path is required when camera.source.kind is 'folder'")
        if self.camera.source.kind == "video" and self.camera.source.path is None:
            raise ValueError("camera.source.path is required when camera.source.kind is 'video'")
        if self.camera.source.kind == "url" and not self.camera.source.url:
            raise ValueError("camera.source.url is required when camera.source.kind is 'url'")
        for name in self.products:
            if not PRODUCT_RE.match(name):
                raise ValueError(f"products: {name!r} is not a product name: use letters, digits, '_', '.' or '-' (at most 64)")
        self._check_views()
        if self.product is not None and self.product not in self.products:
            known = ", ".join(self.products) or "none (products is empty)"
            raise ValueError(f"product {self.product!r} is not one of products: {known}")
        return self

    def _check_views(self) -> None:
        views = self.parts.views
        for name in views:
            if not re.match(VIEW_RE, name):
                raise ValueError(f"parts.views: {name!r} is not a view name: use letters, digits, '_', '.' or '-'")
        if len(set(views)) != len(views):
            raise ValueError(f"parts.views: a view is named twice ({', '.join(views)})")
        if self.camera.view is not None and self.camera.views:
            raise ValueError("camera.view and camera.views are both set: set view (one position) or views (several)")
        if not views:
            if self.camera.view is not None or self.camera.views:
                raise ValueError("camera.view/camera.views need parts.views (the views of every part)")
            return
        taken = self.camera.views or [self.camera.view or self.camera.id]
        key = "camera.views" if self.camera.views else "camera.view" if self.camera.view else "camera.id"
        for name in taken:
            if name not in views:
                raise ValueError(f"{key}: view {name!r} is not one of parts.views ({', '.join(views)}); set camera.view "
                                 f"to one of them")

    @property
    def data_dir(self) -> Path:
        return self.station.data_dir


def _check_env_key(key: str, path: list[str]) -> None:
    """Refuse an INSPECTOR_* variable that names no station key (a typo would be ignored without a word)."""
    model: type[BaseModel] | None = StationConfig
    for depth, part in enumerate(path):
        if model is None:
            return  # below a leaf or a mapping (e.g. jobs.recall_floors): pydantic checks the rest
        field = model.model_fields.get(part)
        if field is None:
            where = ".".join(path[:depth]) or "the station config"
            known = ", ".join(model.model_fields)
            raise ConfigError(f"environment variable {key} matches no station key ({part!r} is not a key of {where})",
                              f"keys there: {known}; write {ENV_PREFIX}SECTION__KEY with two underscores between levels, "
                              f"or unset {key}")
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if model is not None:
        raise ConfigError(f"environment variable {key} names the section {'.'.join(path)}, not a key",
                          f"name one key, e.g. {key}__{next(iter(model.model_fields)).upper()}")


def _single_underscore_hint(key: str) -> str:
    rest = key[len(ENV_PREFIX):].lower()
    for section in StationConfig.model_fields:
        if rest.startswith(section + "_") and rest[len(section) + 1:]:
            return f"did you mean {ENV_PREFIX}{section.upper()}__{rest[len(section) + 1:].upper()}? Levels are " \
                   f"separated by two underscores; or unset {key}"
    return f"write {ENV_PREFIX}SECTION__KEY (two underscores between levels), or unset {key}"


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key in NON_CONFIG_ENV:
            continue
        if "__" not in key:
            raise ConfigError(f"environment variable {key} matches no station key", _single_underscore_hint(key))
        path = key[len(ENV_PREFIX):].lower().split("__")
        _check_env_key(key, path)
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {key} conflicts with another override", "remove one of them")
        node[path[-1]] = yaml.safe_load(raw) if raw != "" else None
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


SECRET_KEYS = ("password", "token", "secret", "pin")


def masked_url(url: str | None) -> str:
    """``url`` with its password (``redis://user:PW@host``) replaced by ``***``: what output may show."""
    return re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", url) if url else str(url)


def _shown(path: str, value: Any) -> Any:
    """A bad value as an error message may show it: secrets masked, passwords in URLs masked."""
    if any(k in path.rsplit(".", 1)[-1].lower() for k in SECRET_KEYS) and value is not None:
        return "***"
    if isinstance(value, dict):  # a section's own check shows the section: mask the secrets inside it
        return {k: _shown(f"{path}.{k}", v) for k, v in value.items()}
    return masked_url(value) if isinstance(value, str) else value


def _explain(err: ValidationError, source: str) -> ConfigError:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key")
        else:
            lines.append(f"{path}: {e['msg'].removeprefix('Value error, ')} (got {_shown(path, e.get('input'))!r})")
    first = err.errors()[0]
    hint = (
        "remove or rename the key; `inspector validate-config --schema` lists every key with its description"
        if first["type"] == "extra_forbidden"
        else "fix the value; `inspector validate-config --schema` lists every key with its bounds"
    )
    return ConfigError(f"invalid station config ({source}): " + "; ".join(lines), hint)


def parse_config(data: dict[str, Any] | None, source: str = "<dict>", environ: dict[str, str] | None = None) -> StationConfig:
    """Validate a config mapping (plus environment overrides) into a StationConfig."""
    merged = _merge(data or {}, _env_overrides(dict(os.environ) if environ is None else environ))
    try:
        return StationConfig.model_validate(merged)
    except ValidationError as err:
        raise _explain(err, source) from None


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> StationConfig:
    """Load a station YAML file (or only defaults and the environment when ``path`` is None)."""
    if path is None:
        return parse_config({}, "defaults", environ)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist", "pass the path of a station YAML, e.g. configs/station.yaml")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte {err.start}: {err.reason})",
                          "save the station file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None
    except OSError as err:
        raise ConfigError(f"config file {p} cannot be read: {err.strerror}",
                          "check the path and that this user may read it") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file {p} is not valid YAML{at}: {problem}", "check indentation and quoting") from None
    if data is None:
        raise ConfigError(f"config file {p} is empty (no keys)",
                          "write at least `station: {id: <station id>}`; configs/ has examples")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at top level", "start the file with `station:`")
    return parse_config(data, str(p), environ)


def schema_table() -> list[tuple[str, str, str]]:
    """(key path, default, description) for every leaf key: the reference users read."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            key = f"{prefix}{name}"
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, key + ".")
            else:
                default = field.get_default(call_default_factory=True)
                rows.append((key, repr(default), field.description or ""))

    walk(StationConfig, "")
    return rows

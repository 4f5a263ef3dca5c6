"""Every Redis stream, consumer group and key name, built in one place.

The station id is wrapped in a hash tag ``{station}`` so that all keys of one station live in the
same Redis Cluster slot (the verdict Lua script touches several of them atomically).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Names:
    prefix: str
    station: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.station}}}"

    # streams
    @property
    def frames(self) -> str:
        return f"{self.base}:frames"

    @property
    def verdicts(self) -> str:
        return f"{self.base}:verdicts"

    @property
    def events(self) -> str:
        return f"{self.base}:events"

    @property
    def review(self) -> str:
        return f"{self.base}:review"

    @property
    def parts(self) -> str:
        """One PartVerdict per part seen by several views (parts.views), written once by the line process."""
        return f"{self.base}:parts"

    @property
    def dead_letter(self) -> str:
        return f"{self.base}:deadletter"

    @property
    def review_inbox(self) -> str:
        """Frames sampled for review, with their image, until the review router has archived and queued them."""
        return f"{self.base}:review:inbox"

    # consumer groups
    inspector_group: str = "inspector"
    store_group: str = "store"
    drift_group: str = "drift"
    line_group: str = "line"
    gui_group: str = "gui"
    retrain_trigger_group: str = "retrain-trigger"  # on the events stream: acts on DRIFT_ALARM events
    review_group: str = "review-router"  # on the review inbox: archive + review item, XACK only after both
    shadow_group: str = "shadow"  # on the frames stream: the shadow candidate judges what the line's workers judge

    # keys
    def done(self, frame_id: str) -> str:
        """Set once a frame has its verdict: makes verdicts idempotent by frame id."""
        return f"{self.base}:done:{frame_id}"

    def part_done(self, part_id: str) -> str:
        """Set once a part has its part verdict: a restarted line process never gives a part a second one."""
        return f"{self.base}:partdone:{part_id}"

    def part_seq(self, view: str) -> str:
        """Counter of the frames taken of a view (INCR): the n-th frame of every view shows part n."""
        return f"{self.base}:partseq:{view}"

    def heartbeat(self, worker: str) -> str:
        return f"{self.base}:hb:{worker}"

    @property
    def heartbeat_pattern(self) -> str:
        return f"{self.base}:hb:*"

    def consumer_heartbeat(self, role: str, consumer: str) -> str:
        """A background consumer's own health (recorder, review router), written by its heartbeat thread."""
        return f"{self.base}:chb:{role}:{consumer}"

    @property
    def consumer_heartbeat_pattern(self) -> str:
        return f"{self.base}:chb:*"

    @property
    def process_registry(self) -> str:
        """Hash ``role:consumer`` -> JSON of that process's last heartbeat (no TTL): ``inspector status`` lists every
        process ever seen, ``down`` once its heartbeat key has expired."""
        return f"{self.base}:processes"

    def camera_heartbeat(self, camera: str) -> str:
        return f"{self.base}:camhb:{camera}"

    @property
    def counters(self) -> str:
        """Hash of station counters: published, verdicts, pass, fail, review, error, dead, not_inspected."""
        return f"{self.base}:counters"

    def worker_stats(self, worker: str) -> str:
        return f"{self.base}:wstats:{worker}"

    def review_limit(self, sampler: str, window: str) -> str:
        """A review sampler's shared rate-limit state: sorted set of picks (``minute``, ``hour``) or the day's
        counter (``day:<UTC day number>``), shared by every worker of the station."""
        return f"{self.base}:review:limit:{sampler}:{window}"

    @property
    def active_model(self) -> str:
        """Hash: version, path, sha256 of the package the workers must serve."""
        return f"{self.base}:model:active"

    @property
    def product(self) -> str:
        """String: the product on the line now; the camera stamps it on every frame it publishes."""
        return f"{self.base}:product"

    @property
    def shadow_model(self) -> str:
        """Hash: version, sha256 of the candidate judged in shadow (never sent to the line); absent: no shadow."""
        return f"{self.base}:model:shadow"

    @property
    def audit_head(self) -> str:
        """String: the signed head (store id, sequence number, hash) of the audit chain, set at every write."""
        return f"{self.base}:audit:head"

    @property
    def retention_lock(self) -> str:
        """Set for about ``retention.interval_s`` by the process running a retention pass: one pass per station."""
        return f"{self.base}:retention:lock"

    @property
    def retrain_lock(self) -> str:
        return f"{self.base}:retrain:lock"

    @property
    def retrain_dedupe(self) -> str:
        """Set for ``jobs.retrain_dedupe_s`` after a retraining request: a burst of alarms starts one job."""
        return f"{self.base}:retrain:dedupe"

    @property
    def retrain_history(self) -> str:
        """List of retraining job ids, newest first."""
        return f"{self.base}:retrain:history"

    @property
    def maintenance_collection(self) -> str:
        """JSON state of the frame collection after a camera or lighting change."""
        return f"{self.base}:maint:collect"

    @property
    def validation_next(self) -> str:
        return f"{self.base}:validate:next"

    @property
    def drift_suppressed(self) -> str:
        """JSON set while drift alarms are suppressed by a planned camera or lighting change."""
        return f"{self.base}:drift:suppressed"


STREAM_FIELD_MESSAGE = b"m"
STREAM_FIELD_IMAGE = b"img"

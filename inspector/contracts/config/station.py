"""The whole station file (StationConfig): its sections, the station's identity and its products."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, model_validator

from inspector.contracts.config.base import Section
from inspector.contracts.config.camera import VIEW_RE, CameraSection, PartsSection
from inspector.contracts.config.identity import GuiSection, IdentitySection
from inspector.contracts.config.inference import (
    ModelSection,
    PolicySection,
    RuntimeSection,
    WorkerSection,
)
from inspector.contracts.config.line import LineSection
from inspector.contracts.config.monitoring import DriftSection, ReviewSection
from inspector.contracts.config.retraining import JobsSection
from inspector.contracts.config.storage import RetentionSection, StoreSection
from inspector.contracts.config.supervision import (
    MetricsSection,
    ShadowSection,
    SupervisorSection,
)
from inspector.contracts.config.transport import RedisSection


class StationSection(Section):
    id: str = Field("demo", description="Station id; part of every stream name.", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    data_dir: Path = Field(Path("station-data"), description="Folder for Redis persistence, database, archive, models.")


PRODUCT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ProductSection(Section):
    """One product the line makes: the model package that judges its frames and, optionally, its own thresholds."""

    package: Path = Field(description="Model package folder of this product; workers keep it loaded and warm.")
    policy: PolicySection | None = Field(
        None, description="Decision thresholds of this product (unset: the station's policy)."
    )


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
        default_factory=dict,
        description="Products the line makes, by name (`inspector product switch NAME` changes "
        "over). Empty: one product, judged by model.package or the registry's active model.",
    )
    product: str | None = Field(
        None, description="The product on the line when the station first starts (default: the first of products)."
    )
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
                raise ValueError(
                    f"products: {name!r} is not a product name: use letters, digits, '_', '.' or '-' (at most 64)"
                )
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
                raise ValueError(
                    f"{key}: view {name!r} is not one of parts.views ({', '.join(views)}); set camera.view "
                    f"to one of them"
                )

    @property
    def data_dir(self) -> Path:
        return self.station.data_dir

"""Products and changeover: which product is on the line, and switching it.

The product on the line is one Redis string (``Names.product``). The camera stamps it on every frame it
publishes (read per frame, so every frame published after a switch returned carries the new product), and
a worker judges each frame with the model of the product stamped on it: the packages of every configured
product are loaded and warmed up when the worker starts, so a changeover costs no reload and no frame is
judged by another product's model. A switch is made by ``inspector product switch NAME`` (maintenance
role) or by the station itself (system role, e.g. a PLC tag), and each one is an audit row.
"""

from __future__ import annotations

import time

import redis

from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.messages import Event, EventType
from inspector.contracts.names import Names


class ProductError(InspectorError):
    """A product the station does not know, or a station that makes no products."""


def default_product(cfg: StationConfig) -> str | None:
    """The product on the line before any switch: ``product``, else the first of ``products``; None without products."""
    if not cfg.products:
        return None
    return cfg.product or next(iter(cfg.products))


def current_product(client: redis.Redis, cfg: StationConfig) -> str | None:
    """The product on the line now (the default one until the first switch); None when the station has no products."""
    if not cfg.products:
        return None
    raw = client.get(Names(cfg.redis.prefix, cfg.station.id).product)
    if raw is None:
        return default_product(cfg)
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def check_product(cfg: StationConfig, product: str) -> None:
    if not cfg.products:
        raise ProductError(
            f"cannot switch to product {product!r}: this station has no products configured",
            "list the products and their packages under `products:` in the station file",
        )
    if product not in cfg.products:
        raise ProductError(
            f"product {product!r} is not configured: the station makes {', '.join(cfg.products)}",
            "add it under `products:` with its package, or switch to a configured one",
        )


def switch_product(
    cfg: StationConfig,
    client: redis.Redis,
    store,
    product: str,
    actor: str,  # type: ignore[no-untyped-def]
    role: str,
    source: str = "cli",
) -> str | None:
    """Change the line over to ``product``; returns the previous one. Refused (and nothing changes) for a product
    the station does not know. Audited as ``product.switch`` and announced on the events stream."""
    check_product(cfg, product)
    names = Names(cfg.redis.prefix, cfg.station.id)
    previous = current_product(client, cfg)
    client.set(names.product, product)
    store.audit.record(
        actor,
        "product.switch",
        product,
        {"product": previous},
        {"product": product},
        {"role": role, "source": source, "at": time.time()},
    )
    try:
        from inspector.bus.streams import StationBus

        StationBus(client, cfg).publish_event(
            Event(
                station=cfg.station.id,
                type=EventType.MAINTENANCE,
                message=f"changeover: {previous} -> {product} ({actor})",
                data={"product": product, "previous": previous},
            )
        )
    except redis.RedisError:  # the switch holds; only its announcement is missing
        pass
    return previous

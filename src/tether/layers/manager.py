"""Building channel layers from the ``CHANNEL_LAYERS`` setting, lazily and once per alias."""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from tether import DEFAULT_CHANNEL_LAYER, metrics, tracing
from tether.exceptions import InvalidChannelLayerError
from tether.layers.base import BaseChannelLayer

__all__ = ["ChannelLayerManager", "channel_layers", "get_channel_layer", "layer_or_default"]


class ChannelLayerManager:
    """Builds each configured layer on first use and keeps it; forgets them all when ``CHANNEL_LAYERS`` changes."""

    def __init__(self) -> None:
        self.backends: dict[str, BaseChannelLayer] = {}
        self._lock = threading.Lock()
        setting_changed.connect(self._reset_backends, dispatch_uid="tether.layers.reset_backends")

    def _reset_backends(self, setting: str, **kwargs: Any) -> None:
        if setting == "CHANNEL_LAYERS":
            self.backends = {}

    @property
    def configs(self) -> dict[str, Any]:
        configs = getattr(settings, "CHANNEL_LAYERS", None) or {}
        if not isinstance(configs, dict):
            raise InvalidChannelLayerError(
                f"CHANNEL_LAYERS must be a dict of alias -> {{'BACKEND': ..., 'CONFIG': {{...}}}}, not {configs!r}."
            )
        return configs

    def make_backend(self, name: str) -> BaseChannelLayer:
        """Build the layer for alias ``name`` from its ``CONFIG``."""
        return self._make_backend(name, "CONFIG")

    def make_test_backend(self, name: str) -> BaseChannelLayer:
        """Build the layer for alias ``name`` from its ``TEST_CONFIG``; ``InvalidChannelLayerError`` without one."""
        config = self.configs[name]
        if isinstance(config, dict) and "TEST_CONFIG" not in config:
            raise InvalidChannelLayerError(
                f"CHANNEL_LAYERS[{name!r}] has no TEST_CONFIG; add one with the options tests should use."
            )
        return self._make_backend(name, "TEST_CONFIG")

    def _make_backend(self, name: str, config_key: str) -> BaseChannelLayer:
        config = self.configs[name]
        if not isinstance(config, dict):
            raise InvalidChannelLayerError(f"CHANNEL_LAYERS[{name!r}] must be a dict, not {config!r}.")
        backend_path = config.get("BACKEND")
        if not backend_path or not isinstance(backend_path, str):
            raise InvalidChannelLayerError(
                f"CHANNEL_LAYERS[{name!r}] needs a BACKEND given as a dotted path such as "
                f"'tether.layers.InMemoryChannelLayer', not {backend_path!r}."
            )
        try:
            backend_class = import_string(backend_path)
        except ImportError as exc:
            raise InvalidChannelLayerError(
                f"Cannot import BACKEND {backend_path!r} of CHANNEL_LAYERS[{name!r}]: {exc}"
            ) from exc
        if not callable(backend_class):
            raise InvalidChannelLayerError(
                f"BACKEND {backend_path!r} of CHANNEL_LAYERS[{name!r}] is a {type(backend_class).__name__}, "
                "not a channel layer class; point it at the class itself."
            )
        options = config.get(config_key)
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise InvalidChannelLayerError(f"CHANNEL_LAYERS[{name!r}][{config_key!r}] must be a dict, not {options!r}.")
        try:
            layer: BaseChannelLayer = backend_class(**options)
            return layer
        except (TypeError, ValueError) as exc:
            raise InvalidChannelLayerError(f"CHANNEL_LAYERS[{name!r}] {config_key} is invalid: {exc}") from exc

    def __getitem__(self, key: str) -> BaseChannelLayer:
        layer = self.backends.get(key)
        if layer is None:
            with self._lock:
                layer = self.backends.get(key)
                if layer is None:
                    layer = self.backends[key] = self.make_backend(key)
                    if metrics.observer is not None:
                        metrics.observer.instrument_layer(key, layer)
                    if tracing.tracer is not None:
                        tracing.tracer.instrument_layer(key, layer)
        return layer

    def __contains__(self, key: object) -> bool:
        return key in self.configs

    def set(self, key: str, layer: BaseChannelLayer | None) -> BaseChannelLayer | None:
        """Put ``layer`` in place of alias ``key`` (tests use this); returns the layer it replaced, if any."""
        old = self.backends.get(key)
        if layer is None:
            self.backends.pop(key, None)
        else:
            self.backends[key] = layer
        return old


channel_layers = ChannelLayerManager()


def get_channel_layer(alias: str = DEFAULT_CHANNEL_LAYER) -> BaseChannelLayer | None:
    """The layer configured under ``alias`` in ``CHANNEL_LAYERS``, or None when there is no such alias.

    Errors raised while building the layer propagate (as ``InvalidChannelLayerError`` for a bad configuration).
    """
    if alias not in channel_layers.backends and alias not in channel_layers:
        return None
    return channel_layers[alias]


def layer_or_default(layer: BaseChannelLayer | None, feature: str) -> BaseChannelLayer:
    """``layer``, or when None the default layer, for ``feature`` (presence, streams) built on one; ``TypeError``
    naming the feature when no default layer is configured."""
    if layer is not None:
        return layer
    default = get_channel_layer()
    if default is None:
        raise TypeError(f"{feature} needs a channel layer: configure CHANNEL_LAYERS['default'].")
    return default

"""One loaded model per settings: the cache behind ``get_encoder`` and ``get_reranker``."""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from localembed.forks import ForkSafeLock

if TYPE_CHECKING:
    from localembed.config import ModelOptions

T = TypeVar("T")
C = TypeVar("C", bound="ModelOptions")


class SharedModels(Generic[T]):
    """Loaded models by resolved settings; equal settings get the same instance.

    Thread-safe: concurrent first calls for one key load the model once, while other keys
    load in parallel. Settings as spelled (plus anything they depend on, such as the working
    directory) are remembered with their resolved key, so repeated calls skip resolving.
    """

    def __init__(self) -> None:
        self._items: dict[Hashable, T] = {}
        self._lock = ForkSafeLock()
        self._loading: dict[Hashable, ForkSafeLock] = {}
        self._resolved: dict[Hashable, Hashable] = {}

    def get(
        self, spelled: Hashable, resolve_key: Callable[[], Hashable], build: Callable[[], T]
    ) -> T:
        """The model for these settings: ``build()`` on first use, then the same instance.

        Args:
            spelled: the settings as given (cheap to compute).
            resolve_key: the settings resolved (model path, device...), the sharing key.
            build: loads the model.
        """
        key = self._resolved.get(spelled)
        if key is None:
            key = resolve_key()
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._resolved[spelled] = key
                return item
            loading = self._loading.setdefault(key, ForkSafeLock())
        with loading:
            with self._lock:
                item = self._items.get(key)
            if item is None:
                item = build()
                with self._lock:
                    self._items[key] = item
                    self._loading.pop(key, None)
        with self._lock:
            self._resolved[spelled] = key
        return item

    def for_settings(self, options: dict[str, Any], build: Callable[[], T]) -> T:
        """The model for these settings (model, device, dtype and the model's own options).

        Settings that resolve alike (a relative and an absolute path, ``device="auto"`` and
        the device it picks) share one model; see :func:`settings_key`.
        """
        # Adapters call this on every call: settings already seen skip re-resolving the
        # model path and device (which depend on the working directory and the machine only).
        spelled = (tuple(options.items()), os.getcwd())
        return self.get(spelled, lambda: settings_key(options), build)

    def for_config(
        self,
        kind: type[C],
        config: C | None,
        options: dict[str, Any],
        build: Callable[[C], T],
    ) -> T:
        """The model for ``config``, keyword ``options``, or both (options override the config).

        ``config`` may be an adapter (a subclass of ``kind`` with fields of its own): the
        model is shared by ``kind``'s settings alone, and ``build`` gets a plain ``kind``.
        """
        if config is None:
            config = kind(**options)
        elif options:
            config = kind(**{**_explicit(config, kind), **options})
        settings = {name: getattr(config, name) for name in kind.model_fields}
        chosen = config

        def load() -> T:
            own = chosen if type(chosen) is kind else kind(**_explicit(chosen, kind))
            return build(own)

        return self.for_settings(settings, load)

    def forget(self, item: T) -> bool:
        """Forget ``item`` (every settings key that gives it); False if it was not here.

        Its memory is freed once nothing else holds it; the next call for its settings
        loads it again.
        """
        with self._lock:
            keys = [key for key, value in self._items.items() if value is item]
            for key in keys:
                del self._items[key]
            spelled = [name for name, key in self._resolved.items() if key in keys]
            for name in spelled:
                del self._resolved[name]
        return bool(keys)

    def clear(self) -> None:
        """Forget every model (its memory is freed once nothing else holds it)."""
        with self._lock:
            self._items.clear()
            self._resolved.clear()


def settings_key(options: dict[str, Any]) -> tuple[Any, ...]:
    """The sharing key of ``options``: the model's identity, the resolved device and dtype."""
    from localembed.loading import model_identity
    from localembed.runtimes import resolve_device, resolve_dtype

    resolved = dict(options)
    resolved["model"] = model_identity(options["model"])
    device = resolve_device(options["device"])
    resolved["device"] = str(device)
    resolved["dtype"] = str(resolve_dtype(options["dtype"], device))
    return tuple(sorted(resolved.items()))


def _explicit(config: ModelOptions, kind: type[ModelOptions]) -> dict[str, Any]:
    """The settings of ``kind`` given explicitly in ``config`` (so "auto" rules still apply)."""
    return {
        name: getattr(config, name)
        for name in sorted(config.model_fields_set)
        if name in kind.model_fields
    }

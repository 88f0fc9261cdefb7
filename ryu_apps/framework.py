"""The OpenFlow framework the app runs on: Ryu or os-ken, chosen once, here.

os-ken is the maintained fork of Ryu: the same modules under the package ``os_ken``
instead of ``ryu``, the application base class named ``OSKenApp`` instead of ``RyuApp``,
and ``osken-manager`` instead of ``ryu-manager``. Everything the app and its tests take
from the framework is imported from this module, so that they run unchanged on either.

The framework is chosen in this order (``ryu_apps.managers.choose``):

1. The manager that is running. ``ryu-manager``, ``osken-manager`` and
   ``pptp-alg-gateway`` (``ryu_apps.command``, which runs either framework's manager in
   its process) import the framework's ``base.app_manager`` before they load the app,
   and a manager only loads application classes derived from its own base class (from
   the other framework's, it silently loads nothing), so the framework already imported
   is the only right one. :data:`ENV` naming the other one then is an error.
2. :data:`ENV` (``PPTP_ALG_FRAMEWORK``), ``ryu`` or ``os-ken``: for a process without a
   manager (the unit tests, tools) in an environment that has both installed, and for
   ``pptp-alg-gateway``, which chooses the manager to run by it.
3. Otherwise Ryu when it is installed, else os-ken.

Example::

    from ryu_apps.framework import App, MAIN_DISPATCHER, ofp_event, on

    class Gateway(App):  # type: ignore[misc]
        @on(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
        def _packet_in(self, ev: Any) -> None: ...
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, Final, TypeVar, cast

from ryu_apps.managers import (
    DEFAULT,
    ENV,
    MANAGERS,
    PACKAGES,
    FrameworkError,
    Name,
    choose,
)

APP_CLASSES: Final[Mapping[Name, str]] = {"ryu": "RyuApp", "os-ken": "OSKenApp"}
"""Framework -> the name of its application base class in ``base.app_manager``."""

F = TypeVar("F", bound=Callable[..., Any])


NAME: Final[Name] = choose()
"""The framework this process runs on."""

PACKAGE: Final[str] = PACKAGES[NAME]
"""Its top-level package: ``ryu`` or ``os_ken``."""


def _module(path: str) -> ModuleType:
    """Import ``path`` (dotted, below the framework's package) from the chosen framework."""
    return importlib.import_module(f"{PACKAGE}.{path}")


cfg: Final = _module("cfg")
"""``ryu.cfg`` / ``os_ken.cfg``: the framework's oslo.config ``CONF`` and option classes."""

app_manager: Final = _module("base.app_manager")
"""``base.app_manager``: the application base class and ``AppManager``."""

ofp_event: Final = _module("controller.ofp_event")
"""``controller.ofp_event``: the ``EventOFP*`` classes and ``EventOFPStateChange``."""

handler: Final = _module("controller.handler")
"""``controller.handler``: the dispatchers and ``set_ev_cls``."""

LOG = logging.getLogger("pptp_alg.gateway")
hub: Final = _module("lib.hub")
"""``lib.hub``: ``spawn``, ``sleep``, ``kill``, ``joinall``, ``Queue``... (eventlet)."""

ofproto_parser: Final = _module("ofproto.ofproto_parser")
"""``ofproto.ofproto_parser``: ``msg()``, which parses any OpenFlow message."""

ofproto_v1_3: Final = _module("ofproto.ofproto_v1_3")
"""``ofproto.ofproto_v1_3``: OpenFlow 1.3 constants."""

ofproto_v1_3_parser: Final = _module("ofproto.ofproto_v1_3_parser")
"""``ofproto.ofproto_v1_3_parser``: OpenFlow 1.3 messages and ``_MSG_PARSERS``."""

App: Final[Any] = getattr(app_manager, APP_CLASSES[NAME])
"""The application base class: ``RyuApp`` or ``OSKenApp``. Typed ``Any``: a subclass
needs ``# type: ignore[misc]`` (mypy's ``disallow_subclassing_any``)."""

CONFIG_DISPATCHER: Final[str] = handler.CONFIG_DISPATCHER
MAIN_DISPATCHER: Final[str] = handler.MAIN_DISPATCHER
DEAD_DISPATCHER: Final[str] = handler.DEAD_DISPATCHER

set_ev_cls: Final[Callable[..., Any]] = handler.set_ev_cls
"""The framework's ``set_ev_cls``, as it is (untyped)."""


def on(event: Any, dispatchers: str | list[str] | None = None) -> Callable[[F], F]:
    """The framework's ``set_ev_cls``, typed: the decorated method keeps its type.

    Args:
        event: An event class, e.g. ``ofp_event.EventOFPPacketIn``.
        dispatchers: The dispatcher (or list of them) in which the handler runs.

    Returns:
        The decorator.
    """
    return cast(Callable[[F], F], set_ev_cls(event, dispatchers))


def every(seconds: float, what: str, work: Callable[[], None]) -> None:
    """A green thread's loop (run it with ``hub.spawn``): ``work`` every ``seconds``; a
    failure is logged, naming ``what``, and the loop goes on."""
    while True:
        hub.sleep(seconds)
        try:
            work()
        except Exception:
            LOG.exception("%s failed", what)


__all__ = [
    "APP_CLASSES",
    "CONFIG_DISPATCHER",
    "DEAD_DISPATCHER",
    "DEFAULT",
    "ENV",
    "MAIN_DISPATCHER",
    "MANAGERS",
    "NAME",
    "PACKAGE",
    "PACKAGES",
    "App",
    "FrameworkError",
    "Name",
    "app_manager",
    "cfg",
    "choose",
    "every",
    "hub",
    "ofp_event",
    "ofproto_parser",
    "ofproto_v1_3",
    "ofproto_v1_3_parser",
    "on",
    "set_ev_cls",
]

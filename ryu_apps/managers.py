"""The OpenFlow frameworks the app runs on, the manager of each, and which one runs.

Standard library only: the lab's tooling imports it where neither Ryu nor os-ken is
installed, and the ``pptp-alg-gateway`` command (``ryu_apps.command``) chooses its
framework with :func:`choose` before it imports one (``ryu_apps.framework`` imports the
framework chosen).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Collection, Mapping
from typing import Final, Literal, cast

ENV: Final = "PPTP_ALG_FRAMEWORK"
"""The environment variable that chooses the framework where no manager runs."""

Name = Literal["ryu", "os-ken"]
"""A framework, as ``PPTP_ALG_FRAMEWORK`` and the lab's ``--framework`` spell it."""

MANAGERS: Final[Mapping[Name, str]] = {"ryu": "ryu-manager", "os-ken": "osken-manager"}
"""Framework -> its manager command (os-ken 4.x ships none)."""

MANAGER_MODULES: Final[Mapping[Name, str]] = {
    "ryu": "ryu.cmd.manager", "os-ken": "os_ken.cmd.manager"}
"""Framework -> the module whose ``main(args, prog)`` is its application manager."""

COMMAND: Final = "pptp-alg-gateway"
"""The command that runs the gateway app under the chosen framework's manager."""

PACKAGES: Final[Mapping[Name, str]] = {"ryu": "ryu", "os-ken": "os_ken"}
"""Framework -> its top-level Python package."""

DEFAULT: Final[Name] = "ryu"
"""The framework chosen when both are installed and nothing else decides."""


class FrameworkError(ImportError):
    """No framework can be chosen: none is installed, or the choices disagree."""


def _installed(package: str) -> bool:
    """Tell whether ``package`` can be imported, without importing it."""
    return importlib.util.find_spec(package) is not None


def choose(
    environ: Mapping[str, str] | None = None,
    loaded: Collection[str] | None = None,
    installed: Callable[[str], bool] = _installed,
) -> Name:
    """Choose the framework.

    In this order: the framework whose ``base.app_manager`` is imported (a manager runs
    and loads only application classes of its own framework), :data:`ENV` naming the
    other one being an error; else :data:`ENV` (``ryu`` or ``os-ken``); else Ryu when it
    is installed, else os-ken.

    Args:
        environ: The environment (default ``os.environ``).
        loaded: The names of the modules imported so far (default ``sys.modules``).
        installed: Tells whether a top-level package can be imported.

    Returns:
        ``"ryu"`` or ``"os-ken"``.

    Raises:
        FrameworkError: :data:`ENV` has a value other than ``ryu`` or ``os-ken``, names a
            framework other than the running manager's or one that is not installed, or
            neither framework is installed.
    """
    environ = os.environ if environ is None else environ
    loaded = sys.modules if loaded is None else loaded
    wanted = environ.get(ENV, "").strip()
    if wanted and wanted not in PACKAGES:
        raise FrameworkError(f"{ENV}={wanted!r}: expected one of {', '.join(PACKAGES)}")
    running = [
        name for name, package in PACKAGES.items() if f"{package}.base.app_manager" in loaded
    ]
    if len(running) == 1:
        if wanted and wanted != running[0]:
            raise FrameworkError(
                f"{ENV}={wanted} but this process runs {running[0]} "
                f"(started by {MANAGERS[running[0]]}?)"
            )
        return running[0]
    if wanted:
        chosen = cast(Name, wanted)
        if not installed(PACKAGES[chosen]):
            raise FrameworkError(f"{ENV}={chosen} but {PACKAGES[chosen]} is not installed")
        return chosen
    for name in (DEFAULT, *(n for n in PACKAGES if n != DEFAULT)):
        if installed(PACKAGES[name]):
            return name
    raise FrameworkError("neither ryu nor os_ken is installed")

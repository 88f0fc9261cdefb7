"""The OpenFlow frameworks the app runs on, and the manager command of each.

Standard library only: the lab's tooling imports it where neither Ryu nor os-ken is
installed (``ryu_apps.framework`` imports a framework).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

ENV: Final = "PPTP_ALG_FRAMEWORK"
"""The environment variable that chooses the framework where no manager runs."""

Name = Literal["ryu", "os-ken"]
"""A framework, as ``PPTP_ALG_FRAMEWORK`` and the lab's ``--framework`` spell it."""

MANAGERS: Final[Mapping[Name, str]] = {"ryu": "ryu-manager", "os-ken": "osken-manager"}
"""Framework -> its manager command."""

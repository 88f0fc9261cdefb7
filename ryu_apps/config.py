"""The ``[nat]`` options on Ryu's oslo.config ``CONF``, from the table in ``alg.config``."""

from __future__ import annotations

from typing import Any

from alg.config import GROUP, OPTIONS


def register(conf: Any) -> None:
    """Register every ``[nat]`` option on an oslo.config ``ConfigOpts`` (Ryu's CONF)."""
    from ryu_apps.framework import cfg

    types = {
        "str": cfg.StrOpt, "list": cfg.ListOpt, "bool": cfg.BoolOpt, "float": cfg.FloatOpt,
        "int": cfg.IntOpt,
    }
    conf.register_opts(
        [types[o.kind](o.name, default=o.default, help=o.help, secret=o.secret)
         for o in OPTIONS], group=GROUP
    )

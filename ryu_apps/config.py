"""The app's options on Ryu's oslo.config ``CONF``, from the table in ``alg.config``:
``[nat]``, and one ``[gateway:NAME]`` group per gateway section of the files read."""

from __future__ import annotations

from typing import Any

from alg.config import GATEWAY_SECTION, GROUP, OPTIONS, PER_PROCESS, Option


def _opts(options: tuple[Option, ...], defaults: bool) -> list[Any]:
    from ryu_apps.framework import cfg

    types = {
        "str": cfg.StrOpt, "list": cfg.ListOpt, "bool": cfg.BoolOpt, "float": cfg.FloatOpt,
        "int": cfg.IntOpt,
    }
    return [types[o.kind](o.name, default=o.default if defaults else None, help=o.help,
                          secret=o.secret) for o in options]


def register(conf: Any) -> None:
    """Register every ``[nat]`` option on an oslo.config ``ConfigOpts`` (Ryu's CONF)."""
    conf.register_opts(_opts(OPTIONS, True), group=GROUP)


def read(conf: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The ``[nat]`` values and each ``[gateway:NAME]`` section's, by option name (a
    section's unset options are None: they take ``[nat]``'s), for
    ``alg.config.load_gateways``.

    The gateway groups are registered here, once the files are read: their names come
    from the files' sections.
    """
    nat = {name: conf.nat[name] for name in conf.nat}
    sections: dict[str, dict[str, Any]] = {}
    list_sections = getattr(conf, "list_all_sections", None)
    names = [s for s in (list_sections() if list_sections else ())
             if s.startswith(GATEWAY_SECTION)]
    for section in names:
        if section not in conf:
            conf.register_opts(_opts(OPTIONS, False), group=section)
        group = conf[section]
        sections[section.removeprefix(GATEWAY_SECTION)] = {
            o.name: group[o.name] for o in OPTIONS if o.name not in PER_PROCESS
            or group[o.name] is not None}
    return nat, sections

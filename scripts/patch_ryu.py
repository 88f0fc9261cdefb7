"""Make ryu 4.34 import with eventlet 0.33.3 on Python 3.11.

eventlet 0.33 removed ``eventlet.wsgi.ALREADY_HANDLED``, which ``ryu/app/wsgi.py``
imports at class-definition time. The unreleased upstream fix reads it with
``getattr``; this script applies the same one-line change to the installed file.
It is idempotent: a second run finds the file already patched and does nothing.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

OLD = (
    "    from eventlet.wsgi import ALREADY_HANDLED\n"
    "    _ALREADY_HANDLED = ALREADY_HANDLED\n"
)
NEW = (
    "    import eventlet.wsgi\n"
    "    _ALREADY_HANDLED = getattr(eventlet.wsgi, 'ALREADY_HANDLED', None)\n"
)


def main() -> int:
    spec = importlib.util.find_spec("ryu")
    if spec is None or spec.origin is None:
        print("patch_ryu: ryu is not installed in this interpreter", file=sys.stderr)
        return 1
    target = pathlib.Path(spec.origin).parent / "app" / "wsgi.py"
    text = target.read_text()
    if NEW in text:
        return 0
    if OLD not in text:
        print(f"patch_ryu: unexpected content in {target}", file=sys.stderr)
        return 1
    target.write_text(text.replace(OLD, NEW))
    print(f"patch_ryu: patched {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

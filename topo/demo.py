"""The main job: until the full demo lands, prove the setup (OVS, Ryu, ryu-manager)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    ovs = subprocess.run(["ovs-vsctl", "--timeout=5", "show"], capture_output=True, text=True)
    print("OVS:", "running" if ovs.returncode == 0 else "NOT running")
    import ryu

    print("ryu imports from", Path(ryu.__file__).parent)
    manager = Path(sys.executable).with_name("ryu-manager")
    proc = subprocess.run([str(manager), "--version"], capture_output=True, text=True)
    print("ryu-manager:", (proc.stdout + proc.stderr).strip())
    ok = ovs.returncode == 0 and proc.returncode == 0
    print("verdict:", "setup OK" if ok else "setup FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

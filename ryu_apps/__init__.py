"""Ryu (OpenFlow 1.3) applications: the thin shim between OVS and the ALG core."""

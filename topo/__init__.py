"""The lab: network namespaces and an OVS bridge on the userspace datapath."""

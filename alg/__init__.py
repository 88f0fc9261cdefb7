"""The PPTP ALG and NAT state of the gateway, sans-IO (RFC 2637).

Bytes and events go in, rewritten bytes and decisions come out; time is an argument.
Nothing here opens a socket, starts a thread, reads a clock or imports Ryu.
"""

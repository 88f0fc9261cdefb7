"""The GRE demultiplexer: a TC BPF program that steers a shared pair's server -> client
GRE to each client by the Call ID in the GRE key, which Open vSwitch cannot match.

``demux.bpf`` is the bpf(2) system call, ``demux.asm`` the eBPF assembler,
``demux.program`` the program (each block with the C it stands for) and its table's
layout, ``demux.table`` the program loaded with its maps, ``demux.link`` the gateway's
side (writing the table, the heartbeat, the counts). None of them needs Ryu; the app
reaches the program through ``demux.link`` alone.
"""

"""LICENSE is the Apache License 2.0, and NOTICE says what the GRE demultiplexer's own
license string is and which kernel helpers the program calls, as the code has them."""

from __future__ import annotations

import inspect
import struct
from pathlib import Path

import pytest

from demux import bpf
from demux.asm import Helper
from demux.program import COUNTERS, COUNTERS_MAP, TABLE, TABLE_KEY, TABLE_VALUE, program
from demux.table import COUNTER_KEY, COUNTER_SIZE
from tests.unit.test_gre_demux import _bpf_works

REPO = Path(__file__).resolve().parents[2]
_INSN = struct.Struct("<BBhi")
_CALL = 0x85  # BPF_JMP | BPF_CALL


def helpers_called() -> set[int]:
    """The helper IDs of the program's call instructions."""
    code = program().assemble({TABLE: 3, COUNTERS_MAP: 4})
    return {imm for op, _regs, _off, imm in _INSN.iter_unpack(code) if op == _CALL}


def test_license_is_the_apache_license_2_0_in_full() -> None:
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License to your work." in text


def test_notice_names_the_license_string_the_program_is_loaded_with() -> None:
    default = inspect.signature(bpf.load_program).parameters["license_"].default
    assert f'passes "{default}"' in (REPO / "NOTICE").read_text()


def test_notice_names_every_helper_the_program_calls() -> None:
    assert helpers_called() == {int(h) for h in Helper}
    notice = (REPO / "NOTICE").read_text()
    for helper in Helper:
        assert f"bpf_{helper.name.lower()}" in notice


@pytest.mark.skipif(_bpf_works() is not None, reason=str(_bpf_works()))
def test_the_kernel_loads_the_program_declared_apache_2_0() -> None:
    table = bpf.Map.create(bpf.MAP_TYPE_HASH, TABLE_KEY.size, TABLE_VALUE.size, 16, "t_lic")
    counters = bpf.Map.create(bpf.MAP_TYPE_PERCPU_ARRAY, COUNTER_KEY.size, COUNTER_SIZE,
                              len(COUNTERS), "t_lic_cnt")
    try:
        code = program().assemble({TABLE: table.fd.fd, COUNTERS_MAP: counters.fd.fd})
        bpf.load_program(code, name="t_license", license_="Apache-2.0").close()
    finally:
        table.fd.close()
        counters.fd.close()

"""experiments/benchmarks/timing.py: the median timer and the machine line of recorded figures."""

from __future__ import annotations

import os
import time

import pytest

from experiments.benchmarks.timing import first_and_median, machine

_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 {avx512}
processor\t: 1
cpu family\t: 99
"""


@pytest.mark.parametrize("flags, want", [
    ("avx512f avx512bw", "AMD EPYC (x86_64 family 26 model 2, AVX-512)"),
    ("", "AMD EPYC (x86_64 family 26 model 2)")])
def test_machine_names_the_cpu_generation_from_the_first_processor(tmp_path, monkeypatch,
                                                                   flags, want):
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    path = tmp_path / "cpuinfo"
    path.write_text(_CPUINFO.format(avx512=flags))
    assert machine(str(path)) == f"{want}, {os.cpu_count()} CPUs"


def test_machine_without_cpuinfo_names_the_platform(tmp_path, monkeypatch):
    monkeypatch.setattr("platform.processor", lambda: "")
    monkeypatch.setattr("platform.machine", lambda: "arm64")
    assert machine(str(tmp_path / "missing")) == f"arm64, {os.cpu_count()} CPUs"


def test_first_and_median_counts_the_first_call_apart():
    calls = []

    def slow_first():
        calls.append(1)
        time.sleep(0.05 if len(calls) == 1 else 0.0)

    first, median = first_and_median(slow_first, calls=3)
    assert len(calls) == 4
    assert first >= 0.05 > median

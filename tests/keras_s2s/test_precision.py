"""`training.mixed_precision: auto` against the machine it runs on (faked here)."""

import pytest

from keras_s2s.config import load_preset
from keras_s2s.training.precision import cpu_flags, resolve


def test_auto_picks_bfloat16_only_where_the_hardware_computes_it_natively():
    assert resolve("auto", gpus=0, flags={"avx2", "fma", "avx512f", "avx512_bf16"})[0] == "bfloat16"
    assert resolve("auto", gpus=0, flags={"amx_bf16", "amx_tile"})[0] == "bfloat16"
    precision, why = resolve("auto", gpus=0, flags={"avx2", "fma", "avx512f", "avx512_vnni"})
    assert precision == "none" and "no native bfloat16" in why
    assert resolve("auto", gpus=0, flags=set())[0] == "none"  # e.g. an ARM board without the flags
    assert resolve("auto", gpus=2, flags=set()) == ("bfloat16", "auto: 2 GPU(s)")


@pytest.mark.parametrize("setting", ["none", "bfloat16", "float16"])
def test_an_explicit_setting_wins(setting):
    assert resolve(setting, gpus=0, flags={"avx512_bf16"}) == (setting, "as configured")
    assert resolve(setting, gpus=1, flags=set())[0] == setting


def test_the_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512_bf16\n\nprocessor\t: 1\nflags : fpu\n")
    assert cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx2", "avx512_bf16"}
    assert cpu_flags(str(tmp_path / "missing")) == set()


def test_the_best_g2p_preset_leaves_the_choice_to_the_machine():
    assert load_preset("g2p_best").training.mixed_precision == "auto"

"""The command line's malloc settings: set on glibc, left alone when the user opts out."""

import platform
import sys

import pytest

from lfpdistill import allocator

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                           reason="glibc only")


@pytest.fixture
def clean_env(monkeypatch):
    for k in ("LFPDISTILL_MALLOC", "GLIBC_TUNABLES", *allocator._ENV_OWN):
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


@glibc
def test_thresholds_are_set_on_glibc(clean_env):
    assert allocator.tune_cpu_allocator() is True


@pytest.mark.parametrize(("key", "value"), [("LFPDISTILL_MALLOC", "default"),
                                            ("LFPDISTILL_MALLOC", " Default "),
                                            ("MALLOC_MMAP_THRESHOLD_", "65536"),
                                            ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")])
def test_the_users_choice_is_left_alone(clean_env, key, value):
    clean_env.setenv(key, value)
    assert allocator.tune_cpu_allocator() is False


@glibc
def test_an_unrelated_tunable_does_not_turn_it_off(clean_env):
    clean_env.setenv("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F")
    assert allocator.tune_cpu_allocator() is True


class _OldGlibc:
    """mallopt of a glibc before 2.35: mmap thresholds above 32 MiB are refused."""

    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return int(not (param == allocator._M_MMAP_THRESHOLD and value > 32 << 20))


@glibc
def test_an_older_glibc_gets_the_largest_mmap_threshold_it_accepts(clean_env):
    libc = _OldGlibc()
    clean_env.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    assert allocator.tune_cpu_allocator() is True
    assert (allocator._M_MMAP_THRESHOLD, 32 << 20) in libc.calls
    assert (allocator._M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD) in libc.calls


def test_nothing_is_set_off_glibc(clean_env):
    clean_env.setattr(allocator.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert allocator.tune_cpu_allocator() is False


def test_the_command_line_applies_the_settings(clean_env, monkeypatch):
    import lfpdistill.cli as cli

    calls = []
    monkeypatch.setattr(cli, "tune_cpu_allocator", lambda: calls.append(1) or True)
    assert cli.main(["--version"]) == 0
    assert calls == [1]

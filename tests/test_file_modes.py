"""Files probekit writes get the mode open() would give them (0644 under umask 022), not mkstemp's private 0600."""
from __future__ import annotations

import os
import stat

import pytest

from probekit._io import atomic_write_bytes


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask: int) -> None:
        os.umask(mask)

    yield set_
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_write_respects_umask(tmp_path, umask, mask, mode):
    umask(mask)
    target = tmp_path / "results.csv"
    atomic_write_bytes(target, b"a,b\n")
    assert stat.S_IMODE(target.stat().st_mode) == mode
    atomic_write_bytes(target, b"a,b\n1,2\n")  # replacing keeps the rule
    assert stat.S_IMODE(target.stat().st_mode) == mode
    (tmp_path / "plain").write_bytes(b"")  # what open() gives, for comparison
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == mode

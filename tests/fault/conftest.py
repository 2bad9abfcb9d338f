"""Fixtures of the fault suite: those of the integration suite (one private
nfs-ganesha for the session, efsfuse mounts of it), loaded from
tests/integration/conftest.py rather than copied, plus a proxy factory.

The efsfuse tests need EFSFUSE_BIN like the integration suite; the tcpproxy
tests need only TCPPROXY_BIN.
"""
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from faultlib import Proxy

_path = Path(__file__).resolve().parents[1] / "integration" / "conftest.py"
_spec = importlib.util.spec_from_file_location("efsfuse_integration", _path)
integration = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = integration
_spec.loader.exec_module(integration)

# Fixtures and hooks taken over as they are. Not pytest_sessionstart: the
# tcpproxy tests run without efsfuse (the tests that mount check for it).
nfs_server = integration.nfs_server
own_server = integration.own_server
mount_efsfuse = integration.mount_efsfuse
pytest_configure = integration.pytest_configure
pytest_runtest_logreport = integration.pytest_runtest_logreport
pytest_sessionfinish = integration.pytest_sessionfinish


@pytest.fixture
def efsfuse_bin():
    assert not integration.LOCAL, "the fault suite runs against efsfuse only"
    assert os.access(integration.EFSFUSE, os.X_OK), \
        f"efsfuse binary {integration.EFSFUSE} not found: run `make` or set EFSFUSE_BIN"
    return integration.EFSFUSE


@pytest.fixture
def fault_proxy(tmp_path):
    """fault_proxy(upstream_port, *args, control=False) -> faultlib.Proxy,
    stopped at the end (it must exit 0)."""
    made = []

    def make(upstream_port, *args, control=False):
        d = tmp_path / f"proxy{len(made)}"
        d.mkdir()
        p = Proxy(d, upstream_port, *args, control=control)
        made.append(p)
        return p
    yield make
    for p in made:
        rc = p.stop()
        p.proc.stdout.close()
        assert rc == 0, f"tcpproxy exited {rc}:\n{p.stderr()}"

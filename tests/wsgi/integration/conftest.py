"""pytest fixtures of the end-to-end WSGI tests (helpers in support.py)."""

import pytest

from support import Launcher


@pytest.fixture
def corgi():
    """corgi(*args, cwd=None, listening=True, with_http=True) -> a started support.Server on
    127.0.0.1:0; every server of the test is killed by PID at teardown."""
    launcher = Launcher()
    try:
        yield launcher.start
    finally:
        launcher.close()


@pytest.fixture(scope="module")
def module_corgi():
    """Like corgi, for servers shared by the tests of one module."""
    launcher = Launcher()
    try:
        yield launcher.start
    finally:
        launcher.close()

"""The test suite's network guard, also loaded by every Python process the tests start (``tests/conftest.py`` puts
this folder first on ``PYTHONPATH``): a socket connection, or a name lookup, for anything but a loopback address
raises :class:`NetworkBlocked` and is recorded in :data:`ATTEMPTS` (the conftest fails the test that made one,
even if the code under test swallowed the error). A Python that already had a ``sitecustomize`` still runs it."""
from __future__ import annotations

import importlib.util
import ipaddress
import os
import socket
import sys

ATTEMPTS: list[str] = []
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", ""}


class NetworkBlocked(RuntimeError):
    """Not an ``OSError``: code that retries or falls back on network errors does not swallow it."""


def _is_local(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).strip("[]")
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(what: str) -> None:
    ATTEMPTS.append(what)
    raise NetworkBlocked(f"the test suite is offline: refused {what}")


def _guard_address(sock, address) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) and not _is_local(address[0]):
        _refuse(f"a connection to {address[0]}:{address[1]}")


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _guarded_connect(self, address):
    _guard_address(self, address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    _guard_address(self, address)
    return _connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _is_local(host):
        _refuse(f"a name lookup of {host}")
    return _getaddrinfo(host, *args, **kwargs)


def install() -> None:
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    socket.getaddrinfo = _guarded_getaddrinfo


install()

# chain to the sitecustomize this one shadows, if any
_here = os.path.dirname(os.path.abspath(__file__))
for _entry in sys.path:
    if os.path.abspath(_entry or ".") == _here:
        continue
    _candidate = os.path.join(_entry or ".", "sitecustomize.py")
    if os.path.isfile(_candidate):
        _spec = importlib.util.spec_from_file_location("_shadowed_sitecustomize", _candidate)
        if _spec and _spec.loader:
            _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
        break

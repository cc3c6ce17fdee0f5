"""Imported by every Python process of the test run (tests put this folder on PYTHONPATH):
any attempt to reach the network raises, so a test that would need it fails loudly."""

import socket

_INET = (socket.AF_INET, socket.AF_INET6)


class NetworkBlocked(RuntimeError):
    pass


def _blocked(*_args, **_kwargs):
    raise NetworkBlocked("network access is blocked during the slm-lsp tests")


_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _guarded_connect(self, address):
    if self.family in _INET:
        _blocked()
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    if self.family in _INET:
        _blocked()
    return _connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = _blocked  # type: ignore[assignment]
socket.create_connection = _blocked  # type: ignore[assignment]

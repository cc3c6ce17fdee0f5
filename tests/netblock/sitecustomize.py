"""Imported by every Python process of the test run (tests put this folder on PYTHONPATH):
any attempt to reach the network raises, so a test that would need it fails loudly.

Loopback stays open: the tests' own HTTP servers (a fake Hugging Face hub on 127.0.0.1) are
not the network. The error is an ``OSError``, as on a machine whose network is down, so the
code under test meets what a user without a network meets."""

import errno
import ipaddress
import socket

_INET = (socket.AF_INET, socket.AF_INET6)


class NetworkBlocked(OSError):
    def __init__(self) -> None:
        super().__init__(errno.ENETUNREACH, "network access is blocked during the slm-lsp tests")


def _is_loopback(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo
_create_connection = socket.create_connection


def _guarded_connect(self, address):
    if self.family in _INET and not _is_loopback(address[0]):
        raise NetworkBlocked()
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    if self.family in _INET and not _is_loopback(address[0]):
        raise NetworkBlocked()
    return _connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _is_loopback(host):
        raise NetworkBlocked()
    return [info for info in _getaddrinfo(host, *args, **kwargs) if _is_loopback(info[4][0])]


def _guarded_create_connection(address, *args, **kwargs):
    if not _is_loopback(address[0]):
        raise NetworkBlocked()
    return _create_connection(address, *args, **kwargs)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]
socket.create_connection = _guarded_create_connection  # type: ignore[assignment]

"""Failures described for people (issue 18): the likely cause of a misleading network failure, and
a bug's whereabouts without its values.

A client's own words for these are "TLS handshake failed", "ReadError" or, from a Go server asked in
plain HTTP on its TLS port, an HTTP 400: the cause is most often a scheme or a CA that does not
match the server. Only the library's error text is looked at; it never reaches a message.
"""

from __future__ import annotations

import os

# What Go's net/http answers (HTTP 400) to plain HTTP on a TLS listener: Vault, OpenBao, etcd.
PLAIN_TO_TLS_BODY = "client sent an http request to an https server"

_NOT_TLS = ("wrong_version_number", "wrong version number", "record layer failure", "packet length too long",
            "unknown protocol", "http_request", "unexpected eof while reading")
_UNTRUSTED = ("certificate_verify_failed", "certificate verify failed")
_WRONG_NAME = ("hostname mismatch", "doesn't match", "ip address mismatch")


def tls_failure(error_text: str, address: str, ca_option: str) -> str:
    """Why a TLS handshake with `address` failed, as far as `error_text` tells."""
    low = error_text.lower()
    if any(word in low for word in _WRONG_NAME):
        return f"TLS handshake with {address} failed: its certificate is not for that host name"
    if any(word in low for word in _UNTRUSTED):
        return (f"TLS handshake with {address} failed: its certificate is not signed by a CA we trust "
                f"(check {ca_option})")
    if any(word in low for word in _NOT_TLS):
        return f"TLS handshake with {address} failed: the server does not speak TLS there (use http://?)"
    return f"TLS handshake with {address} failed"


def plain_to_tls(address: str) -> str:
    return f"{address} speaks TLS (HTTPS) and was asked in plain HTTP: use https:// in the address"


def internal_error(exc: BaseException) -> str:
    """A failure nothing expected: its type and innermost line, enough for a bug report. Never its
    text or a traceback, which may hold a value read from the source."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}" if tb else ""
    return f"internal error ({type(exc).__name__}{where})"

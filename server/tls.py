"""The relay's TLS certificate, reloadable while it serves (SIGHUP; DESIGN §7).

The listening socket keeps the ``SSLContext`` it was made with, so a reload cannot
swap it. Instead that context's SNI callback, which OpenSSL calls on every handshake
(with or without a server name), hands each new connection the context last loaded:
a new certificate is loaded whole into a fresh context first, and only once it loaded
(certificate and key both readable and matching) does it take over. A failed reload
changes nothing: the relay keeps serving the certificate it had. Connections already
open keep theirs.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from pathlib import Path

from server.errors import RelayError

_PEM_CERT = re.compile(
    r"-----BEGIN CERTIFICATE-----\s+.*?-----END CERTIFICATE-----", re.DOTALL)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context serving ``cert`` (a PEM chain) with ``key``; ``RelayError`` says
    what is wrong with the files."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise RelayError(f"cannot load the TLS certificate {cert} and key {key}: "
                         f"{getattr(exc, 'reason', None) or exc.strerror or exc}") from exc
    return ctx


def cert_sha256(cert: Path) -> str:
    """The SHA-256 of the first certificate in a PEM file (hex), as clients see it; ""
    when it cannot be read."""
    try:
        m = _PEM_CERT.search(Path(cert).read_text(encoding="ascii", errors="replace"))
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(m.group(0))).hexdigest() if m else ""
    except (OSError, ValueError):
        return ""


class ServerTls:
    """``--tls-cert``/``--tls-key``: the listener's context and the certificate it serves.

    Give ``context`` to the listener; ``reload()`` loads the files again.
    """

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = Path(cert)
        self.key = Path(key)
        self.context = server_context(self.cert, self.key)
        self._current = self.context
        self.sha256 = cert_sha256(self.cert)
        self.context.sni_callback = self._pick

    def _pick(self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
              ctx: ssl.SSLContext) -> None:
        current = self._current
        if current is not ctx:
            conn.context = current

    def reload(self) -> str:
        """Load the certificate and key files again; new connections get them. The new
        certificate's SHA-256. Raises ``RelayError`` (and changes nothing) when they do
        not load."""
        ctx = server_context(self.cert, self.key)
        self._current = ctx
        self.sha256 = cert_sha256(self.cert)
        return self.sha256

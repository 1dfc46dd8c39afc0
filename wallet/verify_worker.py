"""A signature-checking worker process: ``python -m wallet.verify_worker``.

It reads frames from stdin and answers each on stdout, until stdin closes. A frame is
``count:u32`` then ``count`` × (``length:u32``, entry bytes), big-endian; the answer is
``i64``: the position in the frame of the first entry whose signature fails (see
``wallet.verify_pool.first_bad``), or -1 when all hold. The entries are well-formed
(the parent parsed them); a frame that is not is answered with position 0.
"""

from __future__ import annotations

import struct
import sys
from typing import BinaryIO

from wallet.errors import EncodingError


def _read_exactly(f: BinaryIO, n: int) -> bytes | None:
    data = f.read(n)
    if len(data) < n:
        return None
    return data


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Answer frames until ``inp`` ends."""
    from wallet.verify_pool import first_bad_body

    while True:
        head = _read_exactly(inp, 4)
        if head is None:
            return
        (count,) = struct.unpack(">I", head)
        bodies = []
        for _ in range(count):
            size = _read_exactly(inp, 4)
            body = _read_exactly(inp, struct.unpack(">I", size)[0]) if size else None
            if body is None:
                return  # the parent went away mid-frame
            bodies.append(body)
        try:
            bad = first_bad_body(bodies)
        except EncodingError:
            bad = 0
        out.write(struct.pack(">q", -1 if bad is None else bad))
        out.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)

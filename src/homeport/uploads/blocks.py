"""A request body gathered into blocks for hashing and writing on worker threads."""

from __future__ import annotations

# Blocks handed to a worker thread at a time: large enough that the hand-off is cheap next to
# hashing and writing, small enough that the next block arrives meanwhile.
BLOCK_BYTES = 256 * 1024


def joined(parts: list[bytes]) -> bytes:
    return parts[0] if len(parts) == 1 else b"".join(parts)


class Blocks:
    """Pieces of a body (network reads) gathered into blocks of at least ``size`` bytes, each
    joined once: a growing bytearray copied every byte two or three times, the largest cost of
    an 8 MiB chunk (py-spy, W5)."""

    def __init__(self, size: int = BLOCK_BYTES) -> None:
        self.size = size
        self._pieces: list[bytes] = []
        self._waiting = 0

    def add(self, piece: bytes) -> bytes | None:
        """The next whole block, once ``piece`` completes one."""
        self._pieces.append(piece)
        self._waiting += len(piece)
        return self.rest() if self._waiting >= self.size else None

    def rest(self) -> bytes | None:
        """What is gathered and not yet handed out (the body's last, shorter block)."""
        if not self._pieces:
            return None
        block = joined(self._pieces)
        self._pieces, self._waiting = [], 0
        return block

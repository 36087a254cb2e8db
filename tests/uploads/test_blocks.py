"""Bodies gathered into blocks of pieces, never joined on the way."""

from __future__ import annotations

from homeport.uploads.blocks import Blocks, joined, leading, size_of


def test_blocks_hand_out_pieces_once_enough_arrived() -> None:
    blocks = Blocks(size=10)
    assert blocks.add(b"abcd") is None
    assert blocks.add(b"efg") is None
    first = blocks.add(b"hijk")
    assert first == [b"abcd", b"efg", b"hijk"]  # the pieces themselves, not a copy joined
    assert blocks.add(b"l") is None
    assert blocks.rest() == [b"l"]
    assert blocks.rest() is None


def test_leading_size_and_joined() -> None:
    parts = [b"abc", b"", b"defg", b"h"]
    assert leading(parts, 0) == b""
    assert leading(parts, 2) == b"ab"
    assert leading(parts, 5) == b"abcde"
    assert leading(parts, 100) == b"abcdefgh"
    assert size_of(parts) == 8
    assert joined(parts) == b"abcdefgh"
    single = [b"only"]
    assert joined(single) is single[0]

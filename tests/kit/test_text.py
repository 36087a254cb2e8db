"""The checks for names, addresses and moments a client gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homeport.kit.text import email_address, plain_text, utc, whole_number


@pytest.mark.parametrize(
    ("given_address", "stored"),
    [
        ("Owner@Example.com", "owner@example.com"),
        ("  ops+alerts@sub.example.co ", "ops+alerts@sub.example.co"),
        ("o'brien@corp.local", "o'brien@corp.local"),
        ("José@exämple.com", "josé@exämple.com"),
    ],
)
def test_an_address_is_kept_lower_cased(given_address: str, stored: str) -> None:
    assert email_address(given_address) == stored


@pytest.mark.parametrize(
    "address",
    [
        "no-at-sign.example.com",
        "a@localhost",
        "a@b@example.com",
        "a\n@example.com",
        "a\tb@example.com",
        "a\x00@example.com",
        "a\u200b@example.com",  # zero-width space: looks like another account
        "a b@example.com",
        "a@example..com",
        "a@.example.com",
        "a@example.com.",
        ".a@example.com",
        "a..b@example.com",
        "<script>@example.com",
        '"quoted"@example.com',
        "a@-example.com",
        "a@exa_mple.com",
        "x" * 65 + "@example.com",
        "a@" + "b" * 250 + ".com",
    ],
)
def test_an_implausible_address_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match="not a valid email address"):
        email_address(address)


def test_plain_text_takes_any_script_and_emoji_but_no_control_character() -> None:
    for name in ("Acme GmbH & Co. KG", "東京倉庫", "مستودع", "👩‍🔧 Field team"):
        assert plain_text(name) == name
    for name in ("a\x00b", "line\nbreak", "tab\there", "\x7f", "\ud800"):
        with pytest.raises(ValueError, match="control characters"):
            plain_text(name)


@given(st.text())
def test_plain_text_accepts_exactly_what_has_no_control_or_surrogate(value: str) -> None:
    clean = not any(ord(c) < 32 or 127 <= ord(c) < 160 or 0xD800 <= ord(c) < 0xE000 for c in value)
    try:
        plain_text(value)
    except ValueError:
        assert not clean
    else:
        assert clean


def test_a_moment_is_converted_to_utc_or_refused_when_it_leaves_the_calendar() -> None:
    moment = datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert utc(moment) == datetime(2030, 1, 1, 10, tzinfo=UTC)
    assert utc(moment).tzinfo is UTC
    last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-1)))
    with pytest.raises(ValueError, match="out of range"):
        utc(last)


def test_a_whole_number_is_written_with_the_digits_0_to_9_only() -> None:
    assert whole_number("0042", 4) == 42
    # "³" passes str.isdigit and int() refuses it; other scripts' digits int() would read.
    for text in ("", "-1", "+1", " 1", "1.0", "³", "\u0661\u0662", "\uff11\uff12", "12345"):
        assert whole_number(text, 4) is None, text

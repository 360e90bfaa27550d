"""Sizes: the forms people write, and clear errors for anything else, however large."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from restoredrill.sizes import MAX_BYTES, Size, format_size, parse_size


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("512m", 512 << 20),
        ("1g", 1 << 30),
        ("10GiB", 10 << 30),
        ("1.5g", 3 << 29),
        ("4096", 4096),
        ("64 k", 64 << 10),
        (4096, 4096),
        (2.0, 2),
        ("1p", 1 << 50),
        (MAX_BYTES, MAX_BYTES),
    ],
)
def test_forms(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("512x", '"512x" is not a size (use 512m, 1g, 10GiB)'),
        ("", '"" is not a size (use 512m, 1g, 10GiB)'),
        (True, "True is not a size (use 512m, 1g, 10GiB)"),
        (0, "0 is not a size between 1 byte and 1 EiB (use 512m, 1g, 10GiB)"),
        (-1, "-1 is not a size between 1 byte and 1 EiB (use 512m, 1g, 10GiB)"),
        ("2000p", '"2000p" is not a size between 1 byte and 1 EiB (use 512m, 1g, 10GiB)'),
        (float("inf"), "inf is not a size between 1 byte and 1 EiB (use 512m, 1g, 10GiB)"),
        (float("nan"), "nan is not a size between 1 byte and 1 EiB (use 512m, 1g, 10GiB)"),
        (
            10**400,  # float() of it overflows: an error, not an OverflowError
            "a number of about 401 digits is not a size between 1 byte and 1 EiB "
            "(use 512m, 1g, 10GiB)",
        ),
        (
            "9" * 40_000,
            '"999999999999999999999999999999… (40,000 characters)" is not a size '
            "(use 512m, 1g, 10GiB)",
        ),
    ],
)
def test_errors(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(value)
    assert str(info.value) == message


def test_pydantic_field_reports_validation_errors() -> None:
    class M(BaseModel):
        memory: Size

    assert M(memory="512m").memory == 512 << 20
    for bad in (10**400, "1" * 100_000, "0"):
        with pytest.raises(ValidationError):
            M(memory=bad)
    assert format_size(512 << 20) == "512MiB"

"""Demographics shaped as identity accepts them: printable, whitespace folded, cut to length."""

from __future__ import annotations

from healthbank.contracts.demographics import MAX_DEMOGRAPHIC_LENGTH, matching_text


def test_whitespace_is_folded_and_what_does_not_print_is_dropped() -> None:
    assert matching_text("Quarn\tby") == "Quarn by"
    assert matching_text("  北京市海淀区\r\n学院路12号 ") == "北京市海淀区 学院路12号"
    assert matching_text("Li\u200bora\x00") == "Liora"  # a zero-width space, a NUL
    assert matching_text("\x07 \t") == ""


def test_a_long_value_is_cut_alike_wherever_it_came_from() -> None:
    address = "236 Zulauf Fork, Building 7, " + "Apartment wing B, " * 20
    cut = matching_text(address)
    assert len(cut) <= MAX_DEMOGRAPHIC_LENGTH and address.startswith(cut)
    assert matching_text(address.replace(" ", "\n")) == cut
    assert cut.isprintable() and cut == cut.strip()

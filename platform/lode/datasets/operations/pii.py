"""Finding and masking personal data in text: e-mail addresses, phone numbers, payment card numbers,
IBANs, IP addresses and Chinese resident identity numbers.

Each type is found by a cheap regular expression and then confirmed by its own rule (a checksum, a
numbering plan, an address parser), so that order numbers, prices, years, version strings and
numbers that merely look right are left alone:

- email: a conventional address (local part, @, a domain with a dotted alphabetic top level).
- phone: `phonenumbers` (libphonenumber's metadata) with leniency VALID, tried with the regions
  DEFAULT_PHONE_REGIONS for numbers without a country code; a "+" number is valid anywhere. A
  number written right after "#" or glued to letters ("ORD-...") is taken as an identifier.
- card: 13 to 19 digits, written together or grouped the way cards print them (4-4-4-4, 4-6-5,
  ...) with spaces or dashes, passing the Luhn check and starting with 2 to 6 (the major
  networks' ranges).
- iban: python-stdnum's IBAN validation (country length and mod-97 checksum).
- ip: IPv4 dotted quads and IPv6 addresses, confirmed by the `ipaddress` module (an IPv6 needs
  three groups, or two with a full first one: "fe80::1" yes, "a::b" no).
- cn_id: an 18-character PRC resident identity number: a plausible region code, a real birth date
  from 1900 until today, and the ISO 7064 MOD 11-2 check character.

Chinese text: the expressions bound their matches with `\\w` and `str.isalnum()`, which CJK
characters satisfy, so a number written right against Chinese ("手机号是13812345678") would read as
glued to a word. `pii_find` therefore scans a copy of the text in which every CJK character and
full-width punctuation mark is a space, one character for one, so the spans stay the original
text's (no address, number or identifier of these types contains such a character).

When matches overlap, the longest wins, and among equally long ones the most specific type (the
order of TYPES). Names and postal addresses are not detected: that needs a named-entity model, and
no offline library in our dependencies does it with useful precision; a regex list of first names
would mask ordinary words ("Will", "May") and miss most names."""
from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import re
from dataclasses import dataclass

TYPES = ("cn_id", "iban", "card", "email", "ip", "phone")  # most specific first (overlap ties)
DEFAULT_PHONE_REGIONS = ("US", "GB", "CN", "DE", "FR", "IN")
TAGS = {kind: f"[{kind.upper()}]" for kind in TYPES}


# CJK punctuation, ideographs and full-width punctuation (not full-width digits or letters).
_CJK_AND_FULLWIDTH = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff01-\uff0f\uff1a-\uff20"
                                r"\uff3b-\uff40\uff5b-\uff65]")


@dataclass(frozen=True)
class PiiMatch:
    type: str
    start: int
    end: int
    value: str


_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
_PHONE_CANDIDATE = re.compile(r"(?:\+|\(\s*)?\d(?:[ ().\-/]{0,3}\d){6,}")
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
# How card numbers are printed when grouped: 4-4-4-4 (most), 4-6-5 (Amex), 4-6-4 (Diners),
# 4-4-4-4-3 (19 digits), 4-4-5 / 4-4-4-1 / 4-4-4-3 (13 to 15 digits).
_CARD_GROUPINGS = {(4, 4, 4, 4), (4, 6, 5), (4, 6, 4), (4, 4, 4, 4, 3), (4, 4, 5), (4, 4, 4, 1), (4, 4, 4, 3)}
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")
_CN_ID = re.compile(r"(?<![A-Za-z0-9])[1-9]\d{16}[\dXx](?![A-Za-z0-9])")

_CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CN_ID_CHECK = "10X98765432"
_CN_PROVINCES = {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52, 53,
                 54, 61, 62, 63, 64, 65, 71, 81, 82, 83, 91}


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def cn_id_ok(value: str) -> bool:
    """An 18-character PRC resident identity number with a known province, a real birth date
    (1900 to today) and the right ISO 7064 MOD 11-2 check character."""
    if len(value) != 18 or not value[:17].isdigit() or int(value[:2]) not in _CN_PROVINCES:
        return False
    try:
        born = dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if not dt.date(1900, 1, 1) <= born <= dt.date.today():
        return False
    total = sum(int(char) * weight for char, weight in zip(value[:17], _CN_ID_WEIGHTS))
    return _CN_ID_CHECK[total % 11] == value[17].upper()


def _emails(text: str) -> list[PiiMatch]:
    return [PiiMatch("email", m.start(), m.end(), m.group()) for m in _EMAIL.finditer(text)] if "@" in text else []


@functools.cache
def _phone_tools():
    import phonenumbers

    return phonenumbers.PhoneNumberMatcher, phonenumbers.Leniency.VALID


def _phones(text: str, regions: tuple[str, ...]) -> list[PiiMatch]:
    found: dict[tuple[int, int], PiiMatch] = {}
    for candidate in _PHONE_CANDIDATE.finditer(text):
        offset = candidate.start()
        window = candidate.group()
        before = text[:offset].rstrip(" ")
        if before.endswith("#") or re.search(r"[A-Za-z]-?$", text[max(0, offset - 2):offset]) or (
                offset and (text[offset - 1].isalnum() or text[offset - 1] in "_.")):
            continue
        if candidate.end() < len(text) and (text[candidate.end()].isalnum() or text[candidate.end()] == "_"):
            continue
        for start, end, raw in _window_phones(window, regions):
            span = (offset + start, offset + end)
            found.setdefault(span, PiiMatch("phone", span[0], span[1], raw))
    return list(found.values())


@functools.lru_cache(maxsize=65536)
def _window_phones(window: str, regions: tuple[str, ...]) -> tuple[tuple[int, int, str], ...]:
    """The phone numbers libphonenumber finds in one candidate window (a window depends on nothing
    around it, so the same dates and numbers recurring across rows are parsed once)."""
    matcher, valid = _phone_tools()
    out = []
    # A number with its country code reads the same from every region.
    for region in regions[:1] if window.startswith("+") else regions:
        for match in matcher(window, region, leniency=valid):
            out.append((match.start, match.end, match.raw_string))
    return tuple(out)


def _cards(text: str) -> list[PiiMatch]:
    out = []
    for match in _CARD.finditer(text):
        groups = tuple(len(group) for group in re.split(r"[ -]", match.group()))
        if len(groups) > 1 and groups not in _CARD_GROUPINGS:
            continue
        digits = match.group().replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits):
            out.append(PiiMatch("card", match.start(), match.end(), match.group()))
    return out


def _ibans(text: str) -> list[PiiMatch]:
    from stdnum import iban

    out = []
    for match in _IBAN.finditer(text):
        raw = match.group()
        # The pattern may run on into following capitals or digits: try the longest valid prefix.
        positions = [index for index, char in enumerate(raw) if char != " "]
        for length in range(len(positions), 14, -1):
            end = positions[length - 1] + 1
            if iban.is_valid(raw[:end]):
                out.append(PiiMatch("iban", match.start(), match.start() + end, raw[:end]))
                break
    return out


def _ips(text: str) -> list[PiiMatch]:
    out = []
    if "." in text:
        for match in _IPV4.finditer(text):
            try:
                ipaddress.IPv4Address(match.group())
            except ValueError:
                continue
            out.append(PiiMatch("ip", match.start(), match.end(), match.group()))
    if text.count(":") >= 2:
        for match in _IPV6.finditer(text):
            value = match.group()
            groups = [group for group in value.split(":") if group]
            if len(groups) < 3 and not (len(groups) == 2 and len(groups[0]) == 4):
                continue  # "::1", "a::b" (C++ scopes, ratios): too little to be a real address
            try:
                ipaddress.IPv6Address(value)
            except ValueError:
                continue
            out.append(PiiMatch("ip", match.start(), match.end(), value))
    return out


def _cn_ids(text: str) -> list[PiiMatch]:
    return [PiiMatch("cn_id", m.start(), m.end(), m.group()) for m in _CN_ID.finditer(text) if cn_id_ok(m.group())]


def _resolve(matches: list[PiiMatch]) -> list[PiiMatch]:
    """Non-overlapping matches, longest first and then the most specific type; in text order."""
    rank = {kind: index for index, kind in enumerate(TYPES)}
    chosen: list[PiiMatch] = []
    for match in sorted(matches, key=lambda m: (-(m.end - m.start), rank[m.type], m.start)):
        if all(match.end <= other.start or match.start >= other.end for other in chosen):
            chosen.append(match)
    return sorted(chosen, key=lambda m: m.start)


def _types(types) -> tuple[str, ...]:
    if types is None:
        return TYPES
    unknown = [kind for kind in types if kind not in TYPES]
    if unknown:
        raise ValueError(f"unknown PII type {unknown[0]!r}; one of {', '.join(TYPES)}")
    return tuple(types)


def pii_find(text: str, *, types: list[str] | tuple[str, ...] | set[str] | None = None,
             phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS) -> list[PiiMatch]:
    """The personal data found in the text, in text order, without overlaps."""
    wanted = _types(types)
    if not text:
        return []
    if not text.isascii():
        text = _CJK_AND_FULLWIDTH.sub(" ", text)
    matches: list[PiiMatch] = []
    has_digit = any(char.isdigit() for char in text)
    if "email" in wanted:
        matches += _emails(text)
    if has_digit:
        if "cn_id" in wanted:
            matches += _cn_ids(text)
        if "iban" in wanted:
            matches += _ibans(text)
        if "card" in wanted:
            matches += _cards(text)
        if "phone" in wanted:
            matches += _phones(text, phone_regions)
    if "ip" in wanted and (has_digit or ":" in text):
        matches += _ips(text)
    return _resolve(matches)


def pii_redact(text: str, *, types: list[str] | tuple[str, ...] | set[str] | None = None,
               style: str = "tag") -> tuple[str, dict[str, int]]:
    """The text with each match replaced, and how many of each type were replaced (types with
    none are left out). style "tag" writes "[EMAIL]", "[PHONE]", "[CARD]", "[IBAN]", "[IP]",
    "[CN_ID]"; "mask" writes as many "*" as the match had characters."""
    if style not in ("tag", "mask"):
        raise ValueError("style must be tag or mask")
    matches = pii_find(text, types=types)
    if not matches:
        return text, {}
    parts: list[str] = []
    counts: dict[str, int] = {}
    position = 0
    for match in matches:
        parts.append(text[position: match.start])
        parts.append(TAGS[match.type] if style == "tag" else "*" * (match.end - match.start))
        position = match.end
        counts[match.type] = counts.get(match.type, 0) + 1
    parts.append(text[position:])
    return "".join(parts), counts

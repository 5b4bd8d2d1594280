"""Data augmentation: perturbed copies of texts (synonyms, word swaps, deletions, insertions,
keyboard noise) and of images (flips, crops, colour jitter). Deterministic: the same input, ops,
seed and rate give the same output."""
from __future__ import annotations

import io
import random
import re

import xxhash

TEXT_OPS = ("synonym", "swap", "delete", "insert", "char_noise")
IMAGE_OPS = ("hflip", "vflip", "crop", "color_jitter")

# A small English thesaurus: each group's words can stand for one another in most contexts. Words
# outside it are left alone (no WordNet: it is a large download and its senses are too loose for
# this without part-of-speech tagging).
_SYNONYM_GROUPS = (
    "big large huge enormous", "small little tiny minor", "fast quick rapid swift", "slow sluggish unhurried",
    "happy glad cheerful pleased", "sad unhappy gloomy downcast", "good fine great excellent", "bad poor awful terrible",
    "begin start commence", "end finish conclude", "help assist aid support", "buy purchase acquire",
    "show display present reveal", "make create build produce", "use employ utilize", "get obtain receive",
    "give provide offer supply", "say state mention remark", "ask inquire request", "answer reply respond",
    "look glance gaze", "see notice observe spot", "think believe consider suppose", "know understand realize",
    "want wish desire", "need require", "try attempt endeavor", "choose select pick", "keep retain hold",
    "change alter modify adjust", "fix repair mend", "check verify confirm", "find discover locate",
    "stop halt cease", "leave depart exit", "arrive reach", "go proceed head", "walk stroll stride",
    "run sprint dash", "talk speak converse chat", "tell inform notify", "explain clarify describe",
    "improve enhance boost", "reduce decrease lower cut", "increase raise grow", "allow permit let",
    "prevent avoid stop", "send dispatch forward", "easy simple straightforward", "hard difficult tough",
    "important significant crucial key", "common usual typical ordinary", "rare unusual uncommon",
    "new fresh recent novel", "old ancient aged elderly", "smart clever intelligent bright",
    "strong powerful sturdy", "weak feeble frail", "rich wealthy affluent", "cheap inexpensive affordable",
    "expensive costly pricey", "beautiful pretty lovely attractive", "ugly unattractive unsightly",
    "clean tidy neat", "dirty filthy grimy", "quiet silent calm", "loud noisy", "safe secure protected",
    "dangerous risky hazardous unsafe", "correct right accurate", "wrong incorrect mistaken",
    "clear obvious evident plain", "strange odd weird peculiar", "angry mad furious irate",
    "afraid scared frightened fearful", "tired weary exhausted", "busy occupied engaged",
    "ready prepared set", "sure certain confident", "whole entire complete full", "many numerous several",
    "often frequently regularly", "sometimes occasionally", "quickly rapidly swiftly speedily",
    "slowly gradually", "also too additionally", "however nevertheless nonetheless",
    "maybe perhaps possibly", "very really extremely highly", "about approximately roughly around",
    "problem issue difficulty", "idea notion concept thought", "goal aim objective target",
    "job work task", "car automobile vehicle", "house home residence dwelling", "shop store",
    "road street route", "child kid youngster", "person individual", "friend companion pal",
    "doctor physician", "company business firm enterprise", "customer client buyer",
    "price cost charge fee", "money cash funds", "error mistake fault", "result outcome consequence",
    "reason cause motive", "way method approach manner", "part piece portion section",
    "picture image photo", "story tale account", "gift present", "trip journey voyage",
    "meal dinner", "mistake error blunder", "movie film", "answer response reply",
)
SYNONYMS: dict[str, tuple[str, ...]] = {}
for _group in _SYNONYM_GROUPS:
    _words = _group.split()
    for _word in _words:
        SYNONYMS[_word] = tuple(dict.fromkeys(SYNONYMS.get(_word, ()) + tuple(w for w in _words if w != _word)))

# QWERTY letter rows; a letter's neighbours are the keys left and right of it and the nearest
# keys of the rows above and below (each row sits about half a key right of the one above).
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_KEYBOARD_ROWS):
    for _c, _key in enumerate(_row):
        _near = [_row[i] for i in (_c - 1, _c + 1) if 0 <= i < len(_row)]
        if _r > 0:
            _near += [_KEYBOARD_ROWS[_r - 1][i] for i in (_c, _c + 1) if i < len(_KEYBOARD_ROWS[_r - 1])]
        if _r + 1 < len(_KEYBOARD_ROWS):
            _near += [_KEYBOARD_ROWS[_r + 1][i] for i in (_c - 1, _c) if 0 <= i < len(_KEYBOARD_ROWS[_r + 1])]
        _NEIGHBOURS[_key] = "".join(_near)

_TOKENS = re.compile(r"\s+|\S+")
_WORD = re.compile(r"^(\W*)(\w+(?:['’]\w+)*)(\W*)$")


def _rng(seed: int, content: bytes | str, salt: str) -> random.Random:
    digest = xxhash.xxh3_64_hexdigest(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
    return random.Random(f"{seed}\x00{salt}\x00{digest}")


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _how_many(rate: float, population: int) -> int:
    """At least one when there is anything to change, so an augmented copy always differs."""
    return min(population, max(1, round(rate * population))) if population else 0


class _Words:
    """A text as alternating word and whitespace tokens; word tokens keep the punctuation around
    them apart from the word itself."""

    def __init__(self, text: str):
        self.tokens = _TOKENS.findall(text)

    def word_positions(self) -> list[int]:
        return [i for i, token in enumerate(self.tokens) if not token.isspace()]

    def core(self, position: int) -> tuple[str, str, str] | None:
        match = _WORD.match(self.tokens[position])
        return (match.group(1), match.group(2), match.group(3)) if match else None

    def text(self) -> str:
        return "".join(self.tokens)


def _synonym(text: str, rng: random.Random, rate: float) -> str:
    words = _Words(text)
    eligible = [(p, core) for p in words.word_positions() if (core := words.core(p)) and core[1].lower() in SYNONYMS]
    for position, (before, word, after) in rng.sample(eligible, _how_many(rate, len(eligible))):
        words.tokens[position] = before + _match_case(rng.choice(SYNONYMS[word.lower()]), word) + after
    return words.text()


def _swap(text: str, rng: random.Random, rate: float) -> str:
    words = _Words(text)
    positions = words.word_positions()
    if len(positions) < 2:
        return text
    for _ in range(_how_many(rate, len(positions) - 1)):
        at = rng.randrange(len(positions) - 1)
        a, b = positions[at], positions[at + 1]
        words.tokens[a], words.tokens[b] = words.tokens[b], words.tokens[a]
    return words.text()


def _delete(text: str, rng: random.Random, rate: float) -> str:
    words = _Words(text)
    positions = words.word_positions()
    if len(positions) < 2:
        return text
    for position in sorted(rng.sample(positions, _how_many(rate, len(positions) - 1)), reverse=True):
        del words.tokens[position]
        # Drop the whitespace before the word (or after it, for the first word).
        if position > 0 and words.tokens[position - 1].isspace():
            del words.tokens[position - 1]
        elif position < len(words.tokens) and words.tokens[position].isspace():
            del words.tokens[position]
    return words.text()


def _insert(text: str, rng: random.Random, rate: float) -> str:
    words = _Words(text)
    eligible = [core[1] for p in words.word_positions() if (core := words.core(p)) and core[1].lower() in SYNONYMS]
    if not eligible:
        return text
    for _ in range(_how_many(rate, len(eligible))):
        new = rng.choice(SYNONYMS[rng.choice(eligible).lower()])
        positions = words.word_positions()
        at = rng.choice(positions + [len(words.tokens)])
        words.tokens[at:at] = [new, " "] if at < len(words.tokens) else [" ", new]
    return words.text()


def _char_noise(text: str, rng: random.Random, rate: float) -> str:
    letters = [i for i, char in enumerate(text) if char.lower() in _NEIGHBOURS]
    if not letters:
        return text
    chosen = {i for i in letters if rng.random() < rate} or {rng.choice(letters)}
    out = []
    for index, char in enumerate(text):
        if index not in chosen:
            out.append(char)
        elif rng.random() < 0.8:  # a neighbouring key; otherwise the keystroke is lost
            near = rng.choice(_NEIGHBOURS[char.lower()])
            out.append(near.upper() if char.isupper() else near)
    return "".join(out)


_TEXT_FUNCTIONS = {"synonym": _synonym, "swap": _swap, "delete": _delete, "insert": _insert, "char_noise": _char_noise}


def augment_text(text: str, *, ops: list[str] | tuple[str, ...], seed: int, rate: float = 0.1) -> str:
    """The text with the ops applied in order, each touching about `rate` of its words (for
    char_noise: of its letters), at least one:

    - synonym: words of the bundled thesaurus replaced by a synonym (case kept); others stay.
    - swap: adjacent words exchanged.
    - delete: words removed (never all of them).
    - insert: a synonym of one of the text's thesaurus words inserted at a random place.
    - char_noise: letters replaced by a neighbouring key of a QWERTY keyboard, or dropped.
    """
    unknown = [op for op in ops if op not in _TEXT_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown text augmentation {unknown[0]!r}; one of {', '.join(TEXT_OPS)}")
    if not 0 <= rate <= 1:
        raise ValueError("rate must be between 0 and 1")
    for op in ops:
        text = _TEXT_FUNCTIONS[op](text, _rng(seed, text, op), rate)
    return text


def augment_image(data: bytes, *, ops: list[str] | tuple[str, ...], seed: int) -> bytes:
    """The image with the ops applied in order, as PNG bytes:

    - hflip / vflip: mirrored left-right / upside down.
    - crop: a random window of 80 to 95% of each side, resized back to the original size.
    - color_jitter: brightness, contrast and saturation each scaled by a factor in [0.8, 1.2].

    The EXIF orientation is applied first; transparency is kept."""
    from PIL import Image, ImageEnhance, ImageOps

    unknown = [op for op in ops if op not in IMAGE_OPS]
    if unknown:
        raise ValueError(f"unknown image augmentation {unknown[0]!r}; one of {', '.join(IMAGE_OPS)}")
    rng = _rng(seed, data, "image")
    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened)
        image.load()
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "transparency" in image.info or image.mode in ("PA", "P") else "RGB")
    for op in ops:
        if op == "hflip":
            image = ImageOps.mirror(image)
        elif op == "vflip":
            image = ImageOps.flip(image)
        elif op == "crop":
            width, height = image.size
            scale = rng.uniform(0.80, 0.95)
            crop_w, crop_h = max(1, round(width * scale)), max(1, round(height * scale))
            left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
            image = image.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.Resampling.BICUBIC)
        else:  # color_jitter
            alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
            base = image.convert("RGB") if alpha is not None else image
            for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                base = enhancer(base).enhance(rng.uniform(0.8, 1.2))
            if alpha is not None:
                base = base.convert(image.mode[:-1] + "A") if image.mode == "LA" else base.convert("RGBA")
                base.putalpha(alpha)
            image = base
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()

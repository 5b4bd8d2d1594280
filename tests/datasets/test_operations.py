"""The pure dataset operations (lode.datasets.operations): no database, no storage.

    .venv/bin/python -m pytest tests/datasets/test_operations.py -q -p no:django
"""
from __future__ import annotations

import io
import json
import random
from collections import Counter

import pytest
from PIL import Image

from lode.datasets.operations import augment, dedup, filters, normalise, pii, split, stats
from lode.datasets.schemas import modality_get

# --- near-duplicates --------------------------------------------------------------------------------

_SYLLABLES = ("ka", "lo", "mi", "nu", "re", "sa", "ti", "vo", "ze", "pa", "qui", "bel", "dor", "fen", "gar", "hul", "jas", "wen")


def _vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def _sentence(rng: random.Random, vocabulary: list[str], low: int, high: int) -> str:
    words = [rng.choice(vocabulary) for _ in range(rng.randint(low, high))]
    words[rng.randrange(2, len(words) - 2)] += ","
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def _small_edit(text: str, kind: str, rng: random.Random, vocabulary: list[str]) -> str:
    words = text.split(" ")
    at = rng.randrange(1, len(words) - 1)
    if kind == "punctuation":
        words[at] += rng.choice(";:!")
    elif kind == "word":
        words[at] = rng.choice(vocabulary)
    elif kind == "casing":
        return text.upper() if rng.random() < 0.5 else text.lower()
    else:  # whitespace
        words[at] += "  \t"
        return "  " + " ".join(words) + " \n"
    return " ".join(words)


def _planted_corpus(seed: int, *, rows: int, copies: int, low: int, high: int):
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng)
    texts = [_sentence(rng, vocabulary, low, high) for _ in range(rows)]
    pairs = []
    kinds = ("punctuation", "word", "casing", "whitespace")
    for number in range(copies):
        source = rng.randrange(len(texts))
        texts.append(_small_edit(texts[source], kinds[number % len(kinds)], rng, vocabulary))
        pairs.append((source, len(texts) - 1))
    order = list(range(len(texts)))
    rng.shuffle(order)  # copies scattered among the originals, not all at the end
    position = {old: new for new, old in enumerate(order)}
    return [texts[old] for old in order], [(position[a], position[b]) for a, b in pairs]


def _recall_precision(clusters: list[list[int]], pairs: list[tuple[int, int]]) -> tuple[float, float]:
    cluster_of = {index: number for number, cluster in enumerate(clusters) for index in cluster}
    found = sum(1 for a, b in pairs if a in cluster_of and cluster_of[a] == cluster_of.get(b))
    planted = {frozenset(pair) for pair in pairs}
    linked = {index: {index} for index in cluster_of}
    for a, b in pairs:  # a source copied twice links its copies to each other too
        group = linked.setdefault(a, {a}) | linked.setdefault(b, {b})
        for member in group:
            linked[member] = group
    predicted = [(cluster[0], other) for cluster in clusters for other in cluster[1:]]
    correct = sum(1 for a, b in predicted if frozenset((a, b)) in planted or b in linked.get(a, ()))
    return found / len(pairs), (correct / len(predicted) if predicted else 1.0)


def test_near_duplicates_finds_planted_small_edits_and_keeps_distinct_rows():
    texts, pairs = _planted_corpus(11, rows=2000, copies=100, low=20, high=30)

    clusters = dedup.near_duplicate_clusters(texts)

    recall, precision = _recall_precision(clusters, pairs)
    assert recall >= 0.95
    assert precision >= 0.95
    assert sum(len(cluster) - 1 for cluster in clusters) <= 110  # the 2,000 originals stay apart


def test_near_duplicates_in_short_texts_need_a_lower_threshold():
    # One changed word in a 10-word sentence is a Jaccard similarity of about 0.6-0.75 on
    # character 5-grams: below the default 0.8, found at 0.6.
    texts, pairs = _planted_corpus(12, rows=1000, copies=60, low=8, high=12)

    recall, precision = _recall_precision(dedup.near_duplicate_clusters(texts, threshold=0.6), pairs)

    assert recall >= 0.95
    assert precision >= 0.95


def test_near_duplicates_ignore_case_punctuation_and_whitespace_even_in_tiny_texts():
    texts = ["OK", "ok!", "  Ok. ", "no", "Yes, please.", "yes please", "Thanks", "!!!", "???", "", " "]

    clusters = dedup.near_duplicate_clusters(texts)

    assert clusters == [[0, 1, 2], [4, 5], [9, 10]]


def test_near_duplicates_work_without_spaces_in_chinese():
    base = ("今天北京的天气非常好，我们一起去公园散步，然后在湖边喝茶聊天，晚上回家做饭看电影。"
            "周末我们打算去郊区爬山，顺便看看秋天的红叶，再找一家农家乐吃午饭。")
    edited = base.replace("喝茶", "喝咖啡")
    other = "明天上海可能会下大雨，出门记得带伞，路上开车要注意安全，早点回家休息。"

    assert dedup.near_duplicate_clusters([base, other, edited]) == [[0, 2]]


def test_near_duplicate_clusters_are_sorted_and_the_keep_mask_keeps_each_first_row():
    texts = ["beta one two three four five six", "alpha", "Beta one two three four five six!", "alpha",
             "BETA one two three four five six."]

    clusters = dedup.near_duplicate_clusters(texts)

    assert clusters == [[0, 2, 4], [1, 3]]
    assert dedup.near_duplicate_keep_mask(clusters, len(texts)) == [True, True, False, False, False]


def test_near_duplicates_of_nothing_or_one_row_are_no_clusters():
    assert dedup.near_duplicate_clusters([]) == []
    assert dedup.near_duplicate_clusters(["only one"]) == []
    assert dedup.near_duplicate_keep_mask([], 3) == [True, True, True]


def test_near_duplicates_refuse_a_threshold_outside_zero_to_one():
    with pytest.raises(ValueError):
        dedup.near_duplicate_clusters(["a", "b"], threshold=1.5)


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9, 1.0])
@pytest.mark.parametrize("num_perm", [16, 128, 512])
def test_lsh_bands_fit_in_the_permutations(threshold, num_perm):
    bands, rows = dedup.lsh_bands(threshold, num_perm)
    assert bands >= 1 and rows >= 1 and bands * rows <= num_perm


def test_shingle_hashes_match_the_shingles_of_each_text():
    keys = ["abcdefg", "abc", "", "xyzabcde"]
    hashes, offsets = dedup.shingle_hashes(keys, 5)
    rows = [set(hashes[int(offsets[i]): int(offsets[i + 1])].tolist()) for i in range(len(keys))]
    assert [len(row) for row in rows] == [3, 1, 1, 4]
    assert rows[0] & rows[3] == {hashes[0]}  # "abcde" in both
    assert not rows[1] & rows[2]


def test_content_hash_ignores_key_order_and_sees_content():
    assert dedup.content_hash({"a": 1, "b": "x"}) == dedup.content_hash({"b": "x", "a": 1})
    assert dedup.content_hash({"a": 1, "b": "x"}) != dedup.content_hash({"a": 1, "b": "y"})
    assert len(dedup.content_hash({"text": "hello"})) == 32


# --- PII ----------------------------------------------------------------------------------------------

PLANTED = {
    "email": "jane.doe+news@example.co.uk",
    "phone": "+1 (415) 555-2671",
    "card": "4111 1111 1111 1111",
    "iban": "DE89 3704 0044 0532 0130 00",
    "ip": "192.168.10.20",
    "cn_id": "11010519491231002X",
}


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_pii_redaction_catches_each_planted_type(kind):
    text = f"Please note {PLANTED[kind]} for the file."

    redacted, counts = pii.pii_redact(text)

    assert redacted == f"Please note [{kind.upper()}] for the file."
    assert counts == {kind: 1}


@pytest.mark.parametrize("value,kind", [
    ("2001:db8:85a3::8a2e:370:7334", "ip"),
    ("fe80::1ff:fe23:4567:890a", "ip"),
    ("GB82WEST12345698765432", "iban"),
    ("FR14 2004 1010 0505 0001 3M02 606", "iban"),
    ("5500-0000-0000-0004", "card"),
    ("378282246310005", "card"),
    ("020 7946 0958", "phone"),
    ("13812345678", "phone"),
    ("030 12345678", "phone"),
    ("44052419800101003x", "cn_id"),
])
def test_pii_finds_other_forms_of_each_type(value, kind):
    matches = pii.pii_find(f"see: {value}, thanks")
    assert [(m.type, m.value) for m in matches] == [(kind, value)]


@pytest.mark.parametrize("text", [
    "Order #4155552671 shipped; order ORD-2024-00017 and order 123456789 are pending.",
    "It costs $1,299.99 (or €49.90, ¥8800) in 2024; prices rose 1999-2001.",
    "Meeting on 2024-01-15 at 12:30:45, room 4.12, build 1.2.3, SKU 9780306406157.",
    "Test number 4111 1111 1111 1112 fails Luhn, as does 1234567812345678.",
    "ID 110105194912310021 has a wrong check digit; 110105194913310026 has no 13th month.",
    "IBAN DE89 3704 0044 0532 0130 01 has a bad checksum; 999.168.1.1 is no address.",
    "The ratio was 3:2:1 and std::vector<int> or a::b appear in code.",
])
def test_pii_leaves_numbers_that_are_not_personal_data_alone(text):
    assert pii.pii_find(text) == []
    assert pii.pii_redact(text) == (text, {})


def test_pii_overlaps_keep_the_longest_and_most_specific_match():
    text = "card 4111-1111-1111-1111 id 11010519491231002X"
    assert [m.type for m in pii.pii_find(text)] == ["card", "cn_id"]


def test_pii_types_limit_what_is_found_and_unknown_types_are_refused():
    text = f"{PLANTED['email']} {PLANTED['ip']}"
    assert [m.type for m in pii.pii_find(text, types=["ip"])] == ["ip"]
    with pytest.raises(ValueError):
        pii.pii_find(text, types=["name"])


def test_pii_mask_style_keeps_the_length():
    redacted, counts = pii.pii_redact("mail a.b@example.com now", style="mask")
    assert redacted == "mail " + "*" * len("a.b@example.com") + " now"
    assert counts == {"email": 1}


def test_pii_match_positions_point_at_the_value():
    text = "Reach me at jane@example.org or 192.168.0.1."
    for match in pii.pii_find(text):
        assert text[match.start: match.end] == match.value


def test_pii_written_right_against_chinese_text_is_found_in_place():
    text = "手机号是13812345678，邮箱zhang.wei@example.cn。身份证11010519491231002X，订单号20261105001"
    redacted, counts = pii.pii_redact(text)
    assert redacted == "手机号是[PHONE]，邮箱[EMAIL]。身份证[CN_ID]，订单号20261105001"
    assert counts == {"phone": 1, "email": 1, "cn_id": 1}
    for match in pii.pii_find(text):
        assert text[match.start: match.end] == match.value


# --- split ---------------------------------------------------------------------------------------------


def test_split_is_reproducible_by_seed():
    first = split.split_assign(1000, seed=42)
    assert first == split.split_assign(1000, seed=42)
    assert first != split.split_assign(1000, seed=43)
    assert Counter(first) == {"train": 800, "validation": 100, "test": 100}


def test_split_counts_stay_within_one_row_of_the_ratios():
    for n in (0, 1, 2, 7, 10, 33, 101):
        counts = Counter(split.split_assign(n, ratios=(0.7, 0.2, 0.1), seed=1))
        for name, ratio in zip(split.SPLITS, (0.7, 0.2, 0.1)):
            assert abs(counts[name] - n * ratio) < 1
        assert sum(counts.values()) == n


def test_split_stratification_holds_label_proportions():
    rng = random.Random(3)
    labels = [rng.choice(["spam"] * 7 + ["ham"] * 2 + ["rare"]) for _ in range(997)]
    ratios = (0.6, 0.25, 0.15)

    assignment = split.split_assign(len(labels), ratios=ratios, seed=9, labels=labels)

    for label, total in Counter(labels).items():
        counts = Counter(name for name, lab in zip(assignment, labels) if lab == label)
        for name, ratio in zip(split.SPLITS, ratios):
            assert abs(counts[name] - total * ratio) < 1, (label, name)
    assert assignment == split.split_assign(len(labels), ratios=ratios, seed=9, labels=labels)


@pytest.mark.parametrize("ratios", [(0.5, 0.5, 0.5), (1.2, -0.1, -0.1), (0.8, 0.2), (float("nan"), 0.5, 0.5)])
def test_split_refuses_bad_ratios(ratios):
    with pytest.raises(ValueError):
        split.split_assign(10, ratios=ratios, seed=0)


def test_split_refuses_labels_of_the_wrong_length():
    with pytest.raises(ValueError):
        split.split_assign(3, seed=0, labels=["a", "b"])


# --- normalise ---------------------------------------------------------------------------------------------


def test_normalise_applies_nfkc():
    assert normalise.normalise_text("Ｈｅｌｌｏ ﬁne №5") == "Hello fine No5"
    assert normalise.normalise_text("Ｈｅｌｌｏ", nfkc=False) == "Ｈｅｌｌｏ"


def test_normalise_collapses_whitespace_and_blank_lines_but_keeps_indentation():
    text = "  Hello \t  world  \r\n\r\n\r\n\r\nnext   line  \n    indented  code\n"
    assert normalise.normalise_text(text) == "Hello world\n\nnext line\n    indented code"
    assert normalise.normalise_text("a\n\nb") == "a\n\nb"


def test_normalise_drops_control_characters_except_newline_and_tab():
    text = "a\x07b\x1bc\td\ne\x7f"
    assert normalise.normalise_text(text, whitespace=False) == "abc\td\ne"
    assert normalise.normalise_text(text, control=False, whitespace=False) == text


def test_normalise_converts_between_simplified_and_traditional_chinese():
    assert normalise.normalise_text("汉语简体字", chinese="s2t") == "漢語簡體字"
    assert normalise.normalise_text("漢語繁體字", chinese="t2s") == "汉语繁体字"
    with pytest.raises(ValueError):
        normalise.normalise_text("x", chinese="s2hk")


def test_normalise_row_touches_the_text_fields_and_chat_messages_only():
    chat = {"messages": [{"role": "user", "content": "Ｈｉ  there "}, {"role": "assistant", "content": "ok\x07"}]}
    assert normalise.normalise_row(modality_get("chat"), chat) == {
        "messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "ok"}]}
    row = {"text": " Ｈｉ ", "labels": [" Ｌ "], "extra": 1}
    assert normalise.normalise_row("classification", row) == {"text": "Hi", "labels": [" Ｌ "], "extra": 1}
    assert row["text"] == " Ｈｉ "  # the input row is not changed
    pair = {"prompt": " a  b ", "response": " c ", "system": None}
    assert normalise.normalise_row("instruction", pair, fields=["prompt"]) == {"prompt": "a b", "response": " c ", "system": None}


# --- filters ---------------------------------------------------------------------------------------------


def test_length_filter_bounds_the_total_characters():
    assert filters.length_ok(["abc", "de"], min_chars=5, max_chars=5)
    assert not filters.length_ok(["abc"], min_chars=4)
    assert not filters.length_ok(["abcdef"], max_chars=5)
    assert filters.length_ok([""])


def test_language_of_identifies_languages_with_normalised_confidence():
    code, confidence = filters.language_of("The quick brown fox jumps over the lazy dog near the river bank.")
    assert code == "en" and 0.9 < confidence <= 1.0
    assert filters.language_of("我们明天一起去北京看长城，好不好？")[0] == "zh"
    assert filters.language_of("Le chat dort sur le canapé pendant que nous préparons le dîner.")[0] == "fr"
    assert filters.language_of("12345 67 !!") == ("und", 0.0)


def test_language_filter_keeps_allowed_languages_above_the_confidence():
    english = "This is a perfectly ordinary English sentence about the weather today."
    assert filters.language_ok(english, allowed={"en", "de"})
    assert not filters.language_ok(english, allowed={"fr"})
    assert not filters.language_ok("ok", allowed={"en"}, min_confidence=0.99)


def test_regex_filter_keeps_or_drops_matching_rows():
    assert filters.regex_ok("error: disk full", pattern=r"^error:", mode="keep")
    assert not filters.regex_ok("all fine", pattern=r"^error:", mode="keep")
    assert not filters.regex_ok("error: disk full", pattern=r"^error:", mode="drop")
    assert filters.regex_ok("all fine", pattern=r"^error:", mode="drop")


@pytest.mark.parametrize("pattern,message", [
    ("(unclosed", "not a valid regular expression"),
    ("a" * 501, "at most 500 characters"),
    ("(a+)+$", "exponential"),
    (r"(\w*)*x", "exponential"),
    ("", "non-empty"),
])
def test_regex_filter_refuses_invalid_long_and_catastrophic_patterns(pattern, message):
    with pytest.raises(ValueError, match=message):
        filters.regex_ok("aaaa", pattern=pattern, mode="keep")


# --- augment ---------------------------------------------------------------------------------------------

SENTENCE = "The big dog was very happy to see a new friend at the old house, and it began to run fast."


@pytest.mark.parametrize("op", augment.TEXT_OPS)
def test_augment_text_is_deterministic_and_changes_the_text(op):
    first = augment.augment_text(SENTENCE, ops=[op], seed=5)
    assert first == augment.augment_text(SENTENCE, ops=[op], seed=5)
    assert first != SENTENCE
    assert {augment.augment_text(SENTENCE, ops=[op], seed=seed) for seed in range(6)} != {first}


def test_augment_synonyms_replace_listed_words_only():
    out = augment.augment_text("Big zorblat happy quux", ops=["synonym"], seed=1, rate=1.0)
    words = out.split()
    assert words[1] == "zorblat" and words[3] == "quux"
    assert words[0] in {"Large", "Huge", "Enormous"} and words[2] in augment.SYNONYMS["happy"]


def test_augment_delete_never_empties_and_swap_keeps_the_words():
    assert augment.augment_text("one two", ops=["delete"], seed=3, rate=1.0) in {"one", "two"}
    assert sorted(augment.augment_text(SENTENCE, ops=["swap"], seed=2).split()) == sorted(SENTENCE.split())


def test_augment_refuses_unknown_ops():
    with pytest.raises(ValueError):
        augment.augment_text("x", ops=["translate"], seed=0)
    with pytest.raises(ValueError):
        augment.augment_image(b"", ops=["rotate"], seed=0)


def _png(mode: str = "RGB", size=(40, 24)) -> bytes:
    image = Image.new(mode, size)
    for x in range(size[0]):
        for y in range(size[1]):
            value = (x * 6 % 256, y * 10 % 256, (x + y) * 3 % 256)
            image.putpixel((x, y), value + (200,) if mode == "RGBA" else value)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("op", ["hflip", "vflip"])
def test_augment_image_flips_return_a_png_of_the_same_size(op):
    data = _png()
    out = augment.augment_image(data, ops=[op], seed=1)
    with Image.open(io.BytesIO(out)) as image:
        assert image.format == "PNG" and image.size == (40, 24)
        flipped = image.convert("RGB")
    with Image.open(io.BytesIO(data)) as original:
        x, y = (39, 0) if op == "hflip" else (0, 23)
        assert flipped.getpixel((x, y)) == original.convert("RGB").getpixel((0, 0))
    twice = augment.augment_image(out, ops=[op], seed=1)
    with Image.open(io.BytesIO(twice)) as back, Image.open(io.BytesIO(data)) as original:
        assert back.convert("RGB").tobytes() == original.convert("RGB").tobytes()


def test_augment_image_crop_and_jitter_keep_size_and_alpha_and_are_deterministic():
    data = _png("RGBA")
    out = augment.augment_image(data, ops=["crop", "color_jitter"], seed=4)
    assert out == augment.augment_image(data, ops=["crop", "color_jitter"], seed=4)
    with Image.open(io.BytesIO(out)) as image:
        assert image.format == "PNG" and image.size == (40, 24) and image.mode == "RGBA"
        assert image.getpixel((10, 10))[3] == 200


# --- stats -------------------------------------------------------------------------------------------------


def test_text_stats_accumulate_shard_by_shard():
    rows = [
        {"text": "Contact me at jane@example.com please.", "labels": ["support"]},
        {"text": "The weather is lovely today in the park.", "labels": ["chat", "weather"]},
        {"text": "The weather is lovely today in the park.", "labels": ["chat", "weather"]},
        {"text": "我们明天一起去北京看长城，好不好？", "labels": ["chat"]},
    ]
    whole = stats.TextStats(modality_get("classification"))
    whole.update(rows)
    sharded = stats.TextStats("classification")
    sharded.update(rows[:1])
    sharded.update(rows[1:])
    sharded.update([])

    result = sharded.result()

    assert result == whole.result()
    json.dumps(result)
    assert result["rows"] == 4
    assert sum(bin_["rows"] for bin_ in result["chars"]["histogram"]) == 4
    assert result["chars"]["max"] == len(rows[1]["text"])
    assert result["labels"]["counts"] == {"chat": 3, "weather": 2, "support": 1}
    assert result["languages"]["shares"] == {"en": 0.75, "zh": 0.25}
    assert result["pii"]["row_rates"]["email"] == 0.25 and result["pii"]["matches"]["email"] == 1
    assert result["exact_duplicates"] == {"rows": 1, "rate": 0.25}
    assert result["near_duplicates"] is None


def test_text_stats_sample_only_the_first_rows_for_language_and_pii():
    collector = stats.TextStats("text", sample_rows=2)
    collector.update([{"text": f"Mail me at person{i}@example.com today."} for i in range(5)])
    result = collector.result()
    assert result["rows"] == 5
    assert result["pii"]["sample_rows"] == 2 and result["pii"]["matches"]["email"] == 2
    assert result["labels"] is None

"""Content-safety throughput: Lode's detectors (`lode.safety.detectors`) over mixed English and
Chinese texts, batched, against the same detectors called one text at a time, in the same run.

    .venv/bin/python bench/safety_throughput.py --quick   # 10,000 texts, about a minute on 2 cores
    .venv/bin/python bench/safety_throughput.py           # 100,000 texts, about 4 minutes

Pure Python, numpy, scikit-learn (the profanity model), jieba and torch (MiniLM): no Django, no
services.

Corpus (seeded, `corpus_build`): half English, half Chinese, 20 to 300 characters each (mean
about 140). Texts are put together from templates of customer-service messages, prompts and chat
(filled with products, order numbers, dates, amounts, cities) and sentences of the evaluation set
(platform/lode/safety/evaluation/eval_set.jsonl): of the sentences drawn from it, 8% are labeled
ones (toxic, harmful, PII, injections), 8% hard negatives (medicine, news, idioms, numbers that
are no PII) and the rest benign; the fast path ends up flagging about one text in ten. About
2% of the texts are exact repeats of common messages ("Thanks, that fixed it!"), as in real
traffic. The tenant's rules are the evaluation tenant's (tenant_rules.json) plus 60 more terms,
5 more patterns and 10 more example phrases.

Paths:
- fast (the BENCH line's figure): `detectors_for(rules, full=False)` (profanity model, Chinese and
  English lexicons with the tenant's terms, PII, prompt injection, blocklist terms and regexes),
  `detect_all` over chunks of --chunk texts, as a dataset cleaning job or a batch of prompts would.
- full: the same plus the semantic blocklist (MiniLM embeddings of the English texts; Chinese
  phrases by bigram containment), on the first --full-texts texts; also measured with the opt-in
  int8 MiniLM (`SemanticDetector(quantized=True)`), reported but not judged.
- baselines (the same detectors, no batching): every detector's `detect([text])` for one text after
  another, on the first --baseline-texts (fast) and --full-baseline-texts (full) texts. Their
  results must equal the batched results on the same texts, or the run fails.

Device: MiniLM runs where --device says (default: LODE_SAFETY_DEVICE, else CUDA when torch sees a
GPU, else the CPU), in every worker. The full-path target of 500 texts/s is above what fp32 MiniLM
can do on the 2-core development machine (the run prints that machine's ceiling, measured), so it
is meant for a GPU host: `--device cuda` there.

Processes: --workers worker processes (default: one per core, as Celery's cpu queue runs them),
started with "spawn"; each builds the same corpus from the seed and loads its own models (not
timed), torch with --threads threads each (default: cores / workers). Every path, baselines
included, is spread over the same workers in tasks of --chunk texts; the wall time of the whole
map is measured in the parent. The fast path is also run in one process, for reference.

Figures are texts per second, wall clock; fast-path figures are medians over --rounds rounds. The
BENCH line's texts_per_s and baseline are the fast path's; met=yes needs all three targets (the
full path's figure is printed on the line before it).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT / "platform"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")

from bench.harness import BenchError, log, run_cli  # noqa: E402

SEED = 20261120
TARGET_FAST = 5_000.0
TARGET_FULL = 500.0
TARGET_RATIO = 3.0
TARGET_TEXT = "fast>=5000/s, full>=500/s, >=3x baseline"
EVALUATION = ROOT / "platform" / "lode" / "safety" / "evaluation"

# --- corpus ------------------------------------------------------------------------------------------

_EN_PRODUCTS = ["wireless earbuds", "standing desk", "espresso machine", "running shoes", "smart watch", "air fryer",
                "laptop stand", "yoga mat", "electric kettle", "phone case", "backpack", "desk lamp", "blender",
                "winter jacket", "gaming mouse", "router", "baby stroller", "office chair", "vacuum cleaner"]
_EN_CITIES = ["Berlin", "Austin", "Leeds", "Toronto", "Lyon", "Osaka", "Denver", "Porto", "Melbourne", "Dublin"]
_EN_TEMPLATES = [
    "Hi, my order {order} hasn't arrived yet. It was supposed to be delivered on {date}. Can you check?",
    "Please write a {adj} product description for our {product}.",
    "Summarise this customer review in one sentence: {sentence}",
    "Can you translate \"{sentence}\" into {language}?",
    "I tried to log in {n} times and it keeps failing with error {code}.",
    "The {product} stopped working after {n} days, I'd like a replacement or a refund.",
    "What's the best way to clean a {product}?",
    "Write three taglines for a {product} brand based in {city}.",
    "Is the {product} available in {city}? I need {n} units by {date}.",
    "Classify the sentiment of this review: {sentence}",
    "Our {product} sales grew {n}% in {city} last quarter; draft a short update for the team.",
    "Thanks for the quick reply! The {product} works fine now.",
    "Generate a friendly reminder that invoice {order} for ${amount} is due on {date}.",
    "Explain the difference between our basic and premium {product} in two sentences.",
    "{sentence} {sentence}",
    "Customer note: {sentence}",
]
_EN_ADJ = ["short", "catchy", "professional", "playful", "detailed", "SEO-friendly"]
_EN_LANGUAGES = ["Spanish", "German", "French", "Japanese", "Chinese"]
_ZH_PRODUCTS = ["蓝牙耳机", "升降桌", "咖啡机", "跑步鞋", "智能手表", "空气炸锅", "电热水壶", "手机壳", "双肩包", "台灯",
                "料理机", "羽绒服", "游戏鼠标", "路由器", "婴儿车", "办公椅", "扫地机器人"]
_ZH_CITIES = ["北京", "上海", "深圳", "杭州", "成都", "武汉", "西安", "南京", "广州", "重庆"]
_ZH_TEMPLATES = [
    "你好，我的订单{order}还没到，说好{date}送达的，麻烦查一下。",
    "请帮我为{product}写一段{adj}的商品描述。",
    "用一句话总结这条评论：{sentence}",
    "请把“{sentence}”翻译成英文。",
    "我登录了{n}次都失败了，错误码{code}。",
    "{product}用了{n}天就坏了，想申请换货或者退款。",
    "{product}怎么清洗比较好？",
    "给{city}的{product}品牌写三句广告语。",
    "{city}有{product}现货吗？{date}之前需要{n}台。",
    "判断这条评论的情感：{sentence}",
    "{product}上季度在{city}的销量增长了{n}%，帮我写个简短的周报。",
    "谢谢回复！{product}已经可以正常使用了。",
    "发票{order}金额{amount}元，请在{date}前付款，帮我写个提醒。",
    "{sentence}{sentence}",
    "客户留言：{sentence}",
]
_ZH_ADJ = ["简短", "吸引人", "专业", "活泼", "详细"]
_REPEATS = ["Thanks, that fixed it!", "Hello, is anyone there to help me?", "Can I talk to a human agent please?",
            "谢谢，问题已经解决了，你们的客服很专业！", "你好，请问有人在吗？我有个订单问题想咨询。", "请帮我转人工客服，谢谢，这个问题机器人解决不了。"]
FLAGGED_SHARE = 0.08  # of the evaluation-set sentences put into the corpus: labeled ones
HARD_NEGATIVE_SHARE = 0.08  # hard negatives (medicine, news, idioms, numbers that are no PII...)


def _eval_rows() -> list[dict]:
    with open(EVALUATION / "eval_set.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def corpus_build(n: int, *, seed: int = SEED) -> list[str]:
    """n texts, half English and half Chinese, 20 to 300 characters (see the module's docstring)."""
    rng = random.Random(seed)
    rows = _eval_rows()
    pools = {}
    for lang in ("en", "zh"):
        flagged = [r["text"] for r in rows if r["lang"] == lang and r["labels"]]
        hard = [r["text"] for r in rows if r["lang"] == lang and not r["labels"] and r["kind"] == "hard_negative"]
        benign = [r["text"] for r in rows if r["lang"] == lang and not r["labels"] and r["kind"] != "hard_negative"]
        pools[lang] = (flagged, hard, benign)

    def fill(lang: str) -> str:
        flagged, hard, benign = pools[lang]
        templates = _EN_TEMPLATES if lang == "en" else _ZH_TEMPLATES

        def sentence() -> str:
            draw = rng.random()
            pool = flagged if draw < FLAGGED_SHARE else hard if draw < FLAGGED_SHARE + HARD_NEGATIVE_SHARE else benign
            return rng.choice(pool)

        values = {
            "order": f"{rng.choice(['#', 'ORD-', 'A'])}{rng.randrange(10**5, 10**9)}",
            "date": f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
            "n": rng.randrange(2, 60), "code": f"E{rng.randrange(100, 999)}",
            "amount": f"{rng.randrange(20, 5000)}.{rng.randrange(0, 100):02d}",
            "product": rng.choice(_EN_PRODUCTS if lang == "en" else _ZH_PRODUCTS),
            "city": rng.choice(_EN_CITIES if lang == "en" else _ZH_CITIES),
            "adj": rng.choice(_EN_ADJ if lang == "en" else _ZH_ADJ), "language": rng.choice(_EN_LANGUAGES),
        }
        template = rng.choice(templates)
        text = template
        while "{sentence}" in text:
            text = text.replace("{sentence}", sentence(), 1)
        return text.format(**values)

    texts = []
    for index in range(n):
        if rng.random() < 0.02:
            texts.append(rng.choice(_REPEATS))
            continue
        lang = "en" if index % 2 == 0 else "zh"
        target = min(300, max(20, int(rng.lognormvariate(4.6, 0.6))))  # median about 100 characters
        text = fill(lang)
        separator = " " if lang == "en" else ""
        while len(text) < target:
            text += separator + fill(lang)
        if len(text) > 300:  # cut at the last sentence end that fits, else hard
            cut = max(text.rfind(mark, 20, 300) for mark in (". ", "? ", "! ", "。", "？", "！"))
            text = text[:cut + 1].rstrip() if cut > 0 else text[:300]
        texts.append(text)
    return texts


def tenant_rules():
    from lode.safety.detectors import TenantRules

    config = json.loads((EVALUATION / "tenant_rules.json").read_text(encoding="utf-8"))
    terms = [tuple(item) for item in config["terms"]]
    terms += [("blocklist", f"Brand{index:02d}") for index in range(40)]
    terms += [("blocklist", f"竞品{chr(0x4e00 + 37 * index)}{chr(0x4e00 + 53 * index + 11)}") for index in range(20)]
    patterns = [tuple(item) for item in config["patterns"]]
    patterns += [("blocklist", r"\bREF-\d{8}\b"), ("blocklist", r"(?i)\bcoupon\s+code\s*:\s*\w{6,}"),
                 ("pii", r"\b[A-Z]{2}\d{6}[A-Z]\b"), ("blocklist", r"https?://(?:www\.)?rival-shop\.\w+"),
                 ("blocklist", r"优惠码[:：]\s*\w{6,}")]
    phrases = [tuple(item) for item in config["phrases"]]
    phrases += [("blocklist", text, 0.6) for text in (
        "cancel my subscription and give me all my money back", "your bank is a scam", "how do I get a loan with no credit check",
        "transfer money to my crypto wallet", "which competitor has better interest rates",
        "help me write a fake bank statement", "how do I dispute a charge I actually made")]
    phrases += [("blocklist", text, 0.6) for text in ("帮我伪造银行流水", "怎么套现信用卡", "你们银行就是骗子")]
    return TenantRules(terms=terms, patterns=patterns, phrases=phrases)


# --- measuring ---------------------------------------------------------------------------------------------
# Work runs in a pool of worker processes (default: one per core, as Celery runs the cpu queue), each
# started with "spawn", building the same corpus from the seed and loading its own models; tasks
# name a path, a mode and a range of texts. Wall time is taken in the parent around a whole map.

_WORKER: dict = {}


def batched(detectors, texts: list[str], chunk: int) -> tuple[float, list]:
    from lode.safety.detectors import detect_all

    started = time.perf_counter()
    results = []
    for start in range(0, len(texts), chunk):
        results += detect_all(detectors, texts[start:start + chunk])
    return time.perf_counter() - started, results


def one_at_a_time(detectors, texts: list[str]) -> tuple[float, list]:
    """The baseline: each detector called with one text, text after text (merging included)."""
    from lode.safety.detectors import TextScores

    started = time.perf_counter()
    results = []
    for text in texts:
        merged = TextScores()
        for detector in detectors:
            merged.merge(detector.detect([text])[0])
        results.append(merged)
    return time.perf_counter() - started, results


def digest(result) -> tuple:
    """What must agree between paths: scores (to 1e-3: MiniLM's sums differ slightly between batch
    shapes) and findings."""
    return (tuple(sorted((k, round(v, 3)) for k, v in result.scores.items())),
            tuple(sorted((f.category, f.detector, f.evidence, f.start, f.end) for f in result.findings)))


def _worker_init(n: int, seed: int, torch_threads: int, device: str) -> None:
    import torch

    torch.set_num_threads(torch_threads)
    os.environ["LODE_SAFETY_DEVICE"] = device
    from lode.safety.detectors import detectors_for, warm_up
    from lode.safety.detectors.semantic import SemanticDetector

    warm_up(full=True)
    rules = tenant_rules()
    texts = corpus_build(n, seed=seed)
    fast = detectors_for(rules, full=False)
    _WORKER.update(texts=texts, fast=fast, full=detectors_for(rules, full=True),
                   int8=fast + [SemanticDetector(phrases=rules.phrases, quantized=True)])
    for path in ("full", "int8"):  # first calls: regex caches, jieba's lazy parts, torch kernels
        batched(_WORKER[path], texts[:200], 200)


def _ready(_: int) -> int:
    time.sleep(0.2)
    return os.getpid()


def _task(task: tuple) -> tuple:
    path, mode, start, end, want_digests = task
    texts = _WORKER["texts"][start:end]
    detectors = _WORKER[path]
    if mode == "batched":
        elapsed, results = batched(detectors, texts, len(texts))
    else:
        elapsed, results = one_at_a_time(detectors, texts)
    flags: dict[str, int] = {}
    if path == "fast" and mode == "batched":
        from lode.safety.detectors import predicted_categories

        for result in results:
            found = predicted_categories(result)
            for category in found:
                flags[category] = flags.get(category, 0) + 1
            flags["(any)"] = flags.get("(any)", 0) + bool(found)
    return elapsed, [digest(r) for r in results] if want_digests else None, flags


def _per_detector(task: tuple) -> list[tuple[str, float]]:
    start, end, chunk = task
    texts = _WORKER["texts"][start:end]
    out = []
    for detector in _WORKER["fast"]:
        began = time.perf_counter()
        for position in range(0, len(texts), chunk):
            detector.detect(texts[position:position + chunk])
        out.append((detector.name, (time.perf_counter() - began) * 1e6 / len(texts)))
    return out


class Pool:
    def __init__(self, workers: int, n: int, seed: int, torch_threads: int, device: str):
        import multiprocessing

        self.workers = workers
        self.pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init,
                                                              initargs=(n, seed, torch_threads, device))
        seen: set[int] = set()
        deadline = time.monotonic() + 600
        while len(seen) < workers:  # every worker has finished its initializer
            if time.monotonic() > deadline:
                raise BenchError("the worker processes did not start within 10 minutes")
            seen |= set(self.pool.map(_ready, range(workers * 2), chunksize=1))

    def run(self, path: str, mode: str, start: int, end: int, *, chunk: int, verify_until: int = 0):
        """Wall seconds for texts [start, end) in tasks of `chunk`, the digests of the texts before
        verify_until, and the category counts."""
        tasks = [(path, mode, s, min(s + chunk, end), s < verify_until) for s in range(start, end, chunk)]
        began = time.perf_counter()
        answers = self.pool.map(_task, tasks, chunksize=1)
        wall = time.perf_counter() - began
        digests: list = []
        flags: dict[str, int] = {}
        for (_, found, counts), (_, _, s, e, _) in zip(answers, tasks):
            if found is not None:
                digests += found[: max(0, verify_until - s)]
            for key, value in counts.items():
                flags[key] = flags.get(key, 0) + value
        return wall, digests, flags

    def per_detector(self, end: int, chunk: int):
        return self.pool.apply(_per_detector, ((0, end, chunk),))

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


def check_equal(name: str, batched_digests: list, single_digests: list) -> None:
    differ = [index for index, (a, b) in enumerate(zip(batched_digests, single_digests)) if a != b]
    if differ or len(batched_digests) != len(single_digests):
        raise BenchError(f"{name}: batched and one-at-a-time results differ on {len(differ)} texts "
                         f"(first: {differ[:1]}, lengths {len(batched_digests)}, {len(single_digests)})")


def fp32_ceiling(texts: list[str], threads: int) -> dict:
    """The most texts/s any fp32 MiniLM could give on this machine for these texts: the matrix
    multiplications every embedded text needs (its tokens, truncated as the detector truncates, times
    the encoder's multiply-adds per token, attention scores included) at the rate this machine's
    BLAS reaches on a large fp32 GEMM of the encoder's own shape (measured now, all cores)."""
    import torch

    from lode.safety.detectors.base import is_mostly_chinese
    from lode.safety.detectors.semantic import MAX_SEQ_LENGTH, model_load

    model = model_load(device="cpu")
    config = model[0].auto_model.config
    hidden, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    embedded = list(dict.fromkeys(t for t in texts if t.strip() and not is_mostly_chinese(t)))
    lengths = [len(ids) for ids in model.tokenizer(embedded, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]]
    # per token and layer: Q, K, V and output projections, the two feed-forward matrices, and the
    # attention scores and weighted sum against every other token of the text
    flops = sum(2 * layers * length * (4 * hidden * hidden + 2 * hidden * ffn + 2 * length * hidden) for length in lengths)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(64 * 40, hidden), torch.randn(hidden, ffn)
        for _ in range(3):
            a @ b
        rates = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(20):
                a @ b
            rates.append(20 * 2 * a.shape[0] * hidden * ffn / (time.perf_counter() - started))
    finally:
        torch.set_num_threads(previous)
    gemm = statistics.median(rates)
    return {"embedded": len(embedded), "mean_tokens": statistics.mean(lengths) if lengths else 0.0,
            "gflop": flops / 1e9, "gemm_gflops": gemm / 1e9, "texts_per_s": len(texts) * gemm / flops if flops else 0.0}


def _device_name(device: str) -> str:
    if device == "cpu":
        return "the CPU"
    import torch

    return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"


def run(args: argparse.Namespace) -> None:
    n = args.texts or (10_000 if args.quick else 100_000)
    full_n = min(n, args.full_texts or (2_000 if args.quick else 10_000))
    base_n = min(n, args.baseline_texts or (2_000 if args.quick else 5_000))
    full_base_n = min(full_n, args.full_baseline_texts or (200 if args.quick else 500))
    cores = os.cpu_count() or 1
    workers = args.workers or cores
    torch_threads = args.threads or max(1, cores // workers)
    chunk = args.chunk or min(5_000, max(500, n // (workers * 4)))
    from lode.safety.detectors.semantic import device_resolve

    try:
        device = device_resolve(args.device)
    except ValueError as exc:
        raise BenchError(f"--device: {exc}") from None
    log(f"safety_throughput: {n:,} texts (fast path), {full_n:,} (full path); baselines on {base_n:,} and "
        f"{full_base_n:,}; {workers} worker processes x {torch_threads} torch threads on {cores} cores; MiniLM on "
        f"{_device_name(device)}; "
        f"tasks of {chunk:,} texts; {args.rounds} rounds; load average {os.getloadavg()[0]:.1f} at start")

    started = time.perf_counter()
    texts = corpus_build(n, seed=args.seed)
    english = sum(1 for t in texts if not any("\u4e00" <= c <= "\u9fff" for c in t))
    log(f"corpus built in {time.perf_counter() - started:.1f}s: {english:,} English-only, {n - english:,} with Chinese; "
        f"mean {statistics.mean(map(len, texts)):.0f} characters (min {min(map(len, texts))}, "
        f"max {max(map(len, texts))}); {len(set(texts)):,} distinct")

    started = time.perf_counter()
    pool = Pool(workers, n, args.seed, torch_threads, device)
    try:
        log(f"workers started, models loaded and warmed up in {time.perf_counter() - started:.1f}s")
        fast_rates, flags = [], {}
        fast_digests: list = []
        for index in range(1, args.rounds + 1):
            wall, fast_digests, flags = pool.run("fast", "batched", 0, n, chunk=chunk, verify_until=base_n)
            fast_rates.append(n / wall)
            log(f"round {index}/{args.rounds}: fast path {wall:.2f}s, {n / wall:,.0f} texts/s")
        base_chunk = -(-base_n // workers)
        base_wall, base_digests, _ = pool.run("fast", "single", 0, base_n, chunk=base_chunk, verify_until=base_n)
        check_equal("fast path", fast_digests, base_digests)
        fast_rate = statistics.median(fast_rates)
        base_rate = base_n / base_wall
        log(f"fast baseline (one text at a time): {base_wall:.2f}s for {base_n:,} texts, {base_rate:,.0f} texts/s; "
            "results identical to the batched ones")
        single_n = min(n, 10_000)
        single_wall, _, _ = pool.run("fast", "batched", 0, single_n, chunk=single_n)
        log(f"fast path in one process (for reference): {single_n / single_wall:,.0f} texts/s")
        costs = pool.per_detector(min(n, 10_000), chunk)
        log(f"fast path cost per text, batched, one process (microseconds, on {min(n, 10_000):,} texts): "
            + ", ".join(f"{name} {cost:.0f}" for name, cost in costs))

        full_chunk = min(1_000, max(100, full_n // (workers * 4)))
        full_wall, full_digests, _ = pool.run("full", "batched", 0, full_n, chunk=full_chunk, verify_until=full_base_n)
        full_rate = full_n / full_wall
        log(f"full path (fp32 MiniLM on {device}): {full_wall:.2f}s for {full_n:,} texts, {full_rate:,.0f} texts/s")
        int8_wall, _, _ = pool.run("int8", "batched", 0, full_n, chunk=full_chunk)
        log(f"full path (int8 MiniLM, opt-in, not judged): {int8_wall:.2f}s, {full_n / int8_wall:,.0f} texts/s")
        full_base_wall, full_base_digests, _ = pool.run("full", "single", 0, full_base_n,
                                                        chunk=-(-full_base_n // workers), verify_until=full_base_n)
        check_equal("full path", full_digests, full_base_digests)
        full_base_rate = full_base_n / full_base_wall
        log(f"full baseline (one text at a time): {full_base_wall:.2f}s for {full_base_n:,} texts, "
            f"{full_base_rate:,.0f} texts/s; results identical to the batched ones")
    finally:
        pool.close()
    ceiling = fp32_ceiling(texts[:full_n], cores)
    log(f"fp32 CPU ceiling: the full path embeds {ceiling['embedded']:,} of its {full_n:,} texts (mean "
        f"{ceiling['mean_tokens']:.1f} tokens), {ceiling['gflop']:,.0f} GFLOP of matrix products; this machine's "
        f"fp32 GEMM runs at {ceiling['gemm_gflops']:,.0f} GFLOP/s on {cores} cores, so no fp32 MiniLM on its CPU can "
        f"pass {ceiling['texts_per_s']:,.0f} texts/s"
        + (f"; the full path reached {full_rate / ceiling['texts_per_s']:.0%} of that" if device == "cpu"
           else f"; the full path ran MiniLM on {device} instead"))

    log(f"fast path flags at the default thresholds: {flags.pop('(any)', 0):,} of {n:,} texts; per category: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(flags.items(), key=lambda kv: -kv[1])))
    ratio = fast_rate / base_rate
    full_ratio = full_rate / full_base_rate
    log("")
    log(f"{'path':<46} {'texts/s':>10}")
    log(f"{'fast, batched (median of rounds)':<46} {fast_rate:>10,.0f}")
    log(f"{'fast, one text at a time':<46} {base_rate:>10,.0f}")
    log(f"{'full, batched (fp32 MiniLM on ' + device + ')':<46} {full_rate:>10,.0f}")
    log(f"{'full, batched (int8 MiniLM, opt-in)':<46} {full_n / int8_wall:>10,.0f}")
    log(f"{'full, one text at a time':<46} {full_base_rate:>10,.0f}")
    log(f"fast ratio {ratio:.1f}x, full ratio {full_ratio:.1f}x; fast rounds: " + ", ".join(f"{r:,.0f}" for r in fast_rates))
    log(f"full_path texts_per_s={full_rate:.0f} baseline={full_base_rate:.0f} ratio={full_ratio:.1f} "
        f"device={device} fp32_cpu_ceiling={ceiling['texts_per_s']:.0f}")
    met = fast_rate >= TARGET_FAST and full_rate >= TARGET_FULL and ratio >= TARGET_RATIO
    log(f'BENCH safety_throughput texts_per_s={fast_rate:.0f} baseline={base_rate:.0f} ratio={ratio:.1f} '
        f'target="{TARGET_TEXT}" met={"yes" if met else "no"}')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 texts instead of 100,000 (full path 2,000)")
    parser.add_argument("--texts", type=int, default=None, help="texts for the fast path (overrides --quick)")
    parser.add_argument("--full-texts", type=int, default=None, help="texts for the full path (default 10,000; quick 2,000)")
    parser.add_argument("--baseline-texts", type=int, default=None, help="texts for the fast baseline (5,000; quick 2,000)")
    parser.add_argument("--full-baseline-texts", type=int, default=None, help="texts for the full baseline (500; quick 200)")
    parser.add_argument("--chunk", type=int, default=None,
                        help="texts per task, one detect_all call each (default: n / (4 x workers), 500 to 5,000)")
    parser.add_argument("--rounds", type=int, default=3, help="fast-path rounds; the median is reported (default 3)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: cores / workers)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--device", default=None,
                        help="where MiniLM runs: auto, cpu, cuda, cuda:N (default: LODE_SAFETY_DEVICE, else auto: "
                             "CUDA when torch sees a GPU); the int8 variant always runs on the CPU")
    args = parser.parse_args()
    return run_cli("safety_throughput", run, args)


if __name__ == "__main__":
    sys.exit(main())

"""Prompt-injection and jailbreak heuristics for prompts sent to tenant models (English and Chinese).

Each rule is a regular expression with a weight; a text's score is the noisy-or of the weights of
the rules it matches (1 - prod(1 - w)), so that one strong signal ("ignore all previous
instructions") flags on its own while weak ones (a role-play opener, a long base64 block, "no
restrictions") flag only together. Every hit is a finding with its span and the rule's name.

Each rule names literals one of which any match contains; one scan for all of them decides which
rules run (most texts contain none, so no rule runs)."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .base import Detector, Finding, TextScores

_I = re.IGNORECASE | re.MULTILINE

_OVERRIDE_VERB = r"(?:ignore|disregard|forget|skip|override|bypass|drop|abandon|throw out|set aside)"
_OVERRIDE_NOUN = (r"(?:instructions?|prompts?|rules|directions|directives|guidelines|guardrails|constraints|"
                  r"restrictions|programming|policies|polic(?:y|ies)|filters?|training|ethics|morals|safety)")
_OVERRIDE_MODIFIER = (r"(?:previous|prior|above|earlier|preceding|former|original|initial|system|developer|safety|"
                      r"content|openai|ethical|all|your|any|every|those|these)")


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern
    weight: float
    keys: tuple[str, ...]  # lower-case literals, one of which any match of the pattern contains


def _rule(name: str, pattern: str, weight: float, *, keys: str, flags: int = _I) -> Rule:
    return Rule(name, re.compile(pattern, flags), weight, tuple(keys.split("|")))


_OVERRIDE_KEYS = "ignore|disregard|forget|skip|override|bypass|drop|abandon|throw out|set aside"


RULES: tuple[Rule, ...] = (
    # --- overriding the instructions
    _rule("override_instructions",
          rf"\b{_OVERRIDE_VERB}\s+(?:(?:all|any|of|the|your|my|every|these|those|its|that)\s+)*"
          rf"{_OVERRIDE_MODIFIER}\s+(?:\w+\s+){{0,2}}?{_OVERRIDE_NOUN}\b", 0.85, keys=_OVERRIDE_KEYS),
    _rule("override_bare", rf"\b{_OVERRIDE_VERB}\s+(?:the\s+)?{_OVERRIDE_NOUN}\b", 0.45, keys=_OVERRIDE_KEYS),
    _rule("override_everything", r"\b(?:ignore|disregard|forget)\s+(?:everything|all|anything)\s+(?:(?:that\s+)?you\s+"
          r"(?:were|have\s+been)\s+(?:told|given|taught)|(?:that\s+)?(?:was\s+)?(?:said|written|stated)\s+"
          r"(?:before|above|earlier|previously))", 0.8, keys="ignore|disregard|forget"),
    _rule("new_instructions", r"\b(?:new|updated|real|actual|true)\s+instructions?\s*:|\bfrom now on,?\s+you\s+"
          r"(?:will|are|must|shall|should|can)\b", 0.45, keys="instruction|from now on"),
    _rule("instructions_void", r"\b(?:instructions?|rules|guidelines)\s+(?:above|before|so far)\s+(?:are|is|were)\s+"
          r"(?:void|cancelled|canceled|obsolete|no longer valid|fake|a test)\b", 0.8,
          keys="instruction|rules|guidelines"),
    # --- exfiltrating the system prompt
    _rule("reveal_system_prompt",
          r"\b(?:reveal|show|print|repeat|output|display|tell|leak|give|write|dump|recite|share|what\s+(?:is|are|was|were))"
          r"\s+(?:me\s+|us\s+)?(?:out\s+)?(?:all\s+)?(?:of\s+)?(?:your|the)\s+(?:\w+\s+){0,2}?"
          r"(?:system\s+prompt|system\s+message|initial\s+prompt|hidden\s+prompt|original\s+prompt|pre-?prompt|"
          r"hidden\s+instructions|initial\s+instructions|original\s+instructions|secret\s+instructions|"
          r"instructions\s+you\s+were\s+given)\b", 0.75, keys="prompt|system message|instructions"),
    _rule("repeat_above", r"\brepeat\s+(?:the\s+|all\s+|everything\s+|the\s+words\s+|the\s+text\s+)?(?:above|before this)",
          0.35, keys="repeat"),
    _rule("repeat_verbatim", r"\b(?:repeat|print|output|copy)\b.{0,60}?\b(?:verbatim|word for word|everything above|"
          r"above this line|your instructions)|\bstarting\s+with\s+[\"']you\s+are\b", 0.6,
          keys="verbatim|word for word|everything above|above this line|your instructions|starting with"),
    # --- personas and modes that drop the rules
    _rule("dan", r"(?<![A-Za-z])DAN(?![A-Za-z])", 0.6, flags=re.MULTILINE, keys="dan"),
    _rule("do_anything_now", r"\bdo\s+anything\s+now\b", 0.6, keys="anything now"),
    _rule("jailbreak_mode", r"\b(?:DAN|jailbreak|jailbroken|unrestricted|unfiltered|uncensored|evil|opposite|chaos)\s+mode\b",
          0.7, keys="mode"),
    # "Developer mode" is also an Android and browser setting: weak alone.
    _rule("developer_mode", r"\b(?:developer|dev|god|sudo|admin|debug)\s+mode\b", 0.3, keys="mode"),
    _rule("mode_enable", r"\b(?:enable|activate|enter|switch\s+to|turn\s+on)\s+(?:\w+\s+){0,2}?mode\b", 0.2,
          keys="mode"),
    _rule("jailbreak_word", r"\bjail\s?break(?:ing|s|en)?\b", 0.35, keys="jail"),
    _rule("you_are_now", r"\byou\s+are\s+(?:now|no\s+longer)\b", 0.35, keys="you are"),
    _rule("no_restrictions",
          r"\b(?:no|without(?:\s+any)?|free\s+(?:of|from)|unbound\s+by|not\s+bound\s+by|beyond)\s+(?:\w+\s+){0,2}?"
          r"(?:restrictions|limitations|limits|filters|censorship|guidelines|rules|ethics|morals|moral\s+compass|"
          r"safety\s+measures|content\s+polic(?:y|ies))\b", 0.4,
          keys=("restriction|limitation|limits|filter|censorship|guideline|rules|ethics|morals|moral compass|"
                "safety measures|content polic")),
    _rule("unfiltered", r"\b(?:unfiltered|uncensored|unrestricted|amoral|unethical\s+ai|no\s+morals)\b", 0.35,
          keys="unfiltered|uncensored|unrestricted|amoral|unethical|no morals"),
    _rule("pretend_unrestricted",
          r"\b(?:pretend|imagine|act\s+as\s+if|act\s+like|behave\s+as\s+if|suppose|assume)\s+(?:that\s+)?you\s+"
          r"(?:have|had|are|were|can|could)\s+(?:\w+\s+){0,2}?(?:no|not|free|without|unrestricted|uncensored|"
          r"unfiltered|able\s+to\s+do\s+anything)\b", 0.75,
          keys="pretend|imagine|act as if|act like|behave as if|suppose|assume"),
    _rule("never_refuse",
          r"\b(?:never|must\s+not|cannot|can'?t|do\s+not|don'?t|will\s+not|won'?t)\s+(?:ever\s+)?(?:refuse|decline|say\s+no|"
          r"say\s+you\s+can'?t|apologi[sz]e|warn\s+me|add\s+(?:any\s+)?(?:warnings|disclaimers))\b|"
          r"\bwithout\s+(?:any\s+)?(?:refusing|refusals|warnings|disclaimers)\b", 0.45,
          keys="refuse|decline|say no|say you can|apologi|warn me|warnings|disclaimers|refusing|refusals"),
    _rule("hypothetical_unrestricted",
          r"\b(?:hypothetically|in\s+a\s+hypothetical|in\s+a\s+fictional\s+world|imagine|suppose|what\s+if)\b.{0,40}?"
          r"\b(?:no|without(?:\s+any)?|free\s+of)\s+(?:guidelines|rules|restrictions|filters|limits|ethics|morals)\b", 0.6,
          keys="hypothetical|imagine|suppose|what if|fictional world"),
    # The "grandma exploit": a dead relative who used to recite secrets or recipes, played by the model.
    _rule("grandma_exploit",
          r"\bmy\s+(?:late|dead|deceased)\s+grand(?:ma|mother|father|pa)\b.{0,80}?\b(?:used\s+to|would)\s+"
          r"(?:tell|read|recite|sing|give|say)", 0.6, keys="grandma|grandmother|grandfather|grandpa"),
    _rule("roleplay_opener",
          r"\b(?:let'?s\s+play\s+a\s+game|role-?play|stay\s+in\s+character|you\s+will\s+play\s+the\s+role|"
          r"act\s+as\s+(?:an?\s+)?(?:ai|assistant|chatbot|character|model)\b|pretend\s+to\s+be|"
          r"my\s+(?:late|dead|deceased)\s+grand(?:ma|mother|father|pa))", 0.3,
          keys=("play a game|role-play|roleplay|in character|play the role|act as|pretend to be|grandma|"
                "grandmother|grandfather|grandpa")),
    # --- smuggled payloads and fake delimiters
    _rule("decode_and_follow",
          r"\b(?:decode|decrypt|deobfuscate|base64|rot13|hex)\b.{0,80}?\b(?:follow|execute|run|obey|do\s+what|"
          r"carry\s+out|act\s+on|comply)", 0.6, keys="decode|decrypt|deobfuscate|base64|rot13|hex"),
    _rule("encoded_block", r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{48,}={0,2}(?![A-Za-z0-9+/=])", 0.3, flags=0, keys=""),
    _rule("fake_header",
          r"^\s*(?:#{2,}|\[|<)\s*(?:system|assistant|developer|admin)\s*(?:#{2,}|\]|>|:)|"
          r"<\|(?:im_start|im_end|system|endoftext|start_header_id)\|>|\[/?INST\]|<<\s*/?SYS\s*>>|"
          r"\"role\"\s*:\s*\"system\"|^\s*system\s*:|\bend\s+of\s+(?:user\s+)?(?:input|prompt|instructions)\b", 0.55,
          keys="system|assistant|developer|admin|<|[inst|[/inst|<<|\"role\"|end of"),
    # --- Chinese
    _rule("zh_override",
          r"(?:忽略|无视|忘记|忘掉|不要理会|不要管|不用管|跳过|覆盖|绕过|抛开|放弃|不要遵守|不用遵守|不再遵守|停止遵守)(?:掉|一下)?(?:你)?(?:之前|以上|上面|前面|先前|"
          r"原来|原有|原先|所有|全部|一切|你的|系统|开发者|以前)的?(?:所有|全部|一切|任何)?的?(?:指令|指示|规则|设定|提示词|提示|"
          r"限制|要求|约束|命令|安全策略|安全规则|道德准则)", 0.85, keys="忽略|无视|忘记|忘掉|不要理会|不要管|不用管|跳过|覆盖|绕过|抛开|放弃|不要遵守|不用遵守|不再遵守|停止遵守"),
    _rule("zh_new_identity", r"你现在是|现在你是|你现在扮演|从现在开始[，,]?你|从现在起[，,]?你|你将扮演|假装你是|扮演一个|你的新身份",
          0.35, keys="你现在|现在你|从现在|你将扮演|假装你|扮演|新身份"),
    _rule("zh_grandma_exploit", r"(?:奶奶|外婆|姥姥|祖母|爷爷).{0,30}?(?:激活码|序列号|密钥|秘钥|密码|配方)", 0.6, keys="奶奶|外婆|姥姥|祖母|爷爷"),
    _rule("zh_no_restrictions",
          r"没有任何限制|没有限制|不受(?:任何)?(?:规则|限制|约束|审查)|无限制|没有任何约束|没有道德|没有任何道德|不需要遵守|不用遵守|"
          r"无视规则|可以回答任何问题|不会拒绝|不能拒绝|不得拒绝|不要拒绝|没有审查|不受审查", 0.45, keys="限制|约束|道德|遵守|无视规则|回答任何|拒绝|审查|不受"),
    _rule("zh_jailbreak_mode", r"越狱模式|DAN模式|无限制模式|邪恶模式|无审查模式|越狱的?(?:AI|ai|人工智能|模型|助手)", 0.7, keys="模式|越狱"),
    # 开发者模式 is also a phone setting, 越狱 also a prison break or an iPhone jailbreak: weak alone.
    _rule("zh_weak_mode", r"开发者模式|上帝模式|越狱", 0.3, keys="模式|越狱"),
    _rule("zh_fake_header", r"^\s*(?:#{2,}|【|\[|<)\s*(?:系统|系统指令|管理员|开发者)\s*(?:#{2,}|】|\]|>|：|:)", 0.55,
          keys="系统|管理员|开发者"),
    _rule("zh_reveal_prompt",
          r"(?:输出|显示|告诉我|透露|泄露|打印|重复|说出|展示|给我看)(?:一下)?(?:你的|你)?(?:全部|完整的?|原始的?|初始的?)?"
          r"(?:系统提示词?|系统指令|初始指令|原始指令|隐藏指令|提示词|系统设定|system\s*prompt)", 0.75, keys="提示|指令|设定|system"),
    _rule("zh_decode_and_follow", r"(?:解码|解密|base64|翻译).{0,20}?(?:执行|照做|照着做|按照.{0,10}(?:做|执行)|遵循|服从)",
          0.6, keys="解码|解密|base64|翻译"),
)

# One scan over the lower-cased text for every rule's key literals decides which rules run: most
# texts contain none, and a text that does runs only the rules it holds keys of.
_RULES_BY_KEY: dict[str, list[int]] = {}
_ALWAYS: list[int] = []  # rules without literals (a long base64 run)
for _number, _rule_entry in enumerate(RULES):
    if _rule_entry.keys == ("",):
        _ALWAYS.append(_number)
    for _key in _rule_entry.keys:
        if _key:
            _RULES_BY_KEY.setdefault(_key, []).append(_number)
# The scan finds the longest key at each position; the keys inside it ("instruction" in
# "instructions", "<" in "<<") are in the text too, so a key stands for their rules as well.
_RULES_BY_KEY = {key: sorted({n for other, rules in _RULES_BY_KEY.items() if other in key for n in rules})
                 for key in _RULES_BY_KEY}
_KEYS = re.compile("|".join(re.escape(key) for key in sorted(_RULES_BY_KEY, key=len, reverse=True)))
_LONG_RUN = re.compile(r"[A-Za-z0-9+/]{48}")


def rules_to_run(text: str) -> list[int]:
    lowered = " ".join(text.lower().split())  # the patterns' \s+ match any run of whitespace
    numbers: set[int] = set()
    position = 0
    while True:  # overlapping keys ("mode" inside "developer mode") each count: restart after each start
        match = _KEYS.search(lowered, position)
        if match is None:
            break
        numbers.update(_RULES_BY_KEY[match.group()])
        position = match.start() + 1
    if len(text) >= 48 and _LONG_RUN.search(text):
        numbers.update(_ALWAYS)
    return sorted(numbers)


class InjectionDetector(Detector):
    name = "injection"
    categories = ("prompt_injection",)
    fast = True

    def detect(self, texts: Sequence[str]) -> list[TextScores]:
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> TextScores:
        result = TextScores()
        if not text:
            return result
        keep = 1.0
        for number in rules_to_run(text):
            rule = RULES[number]
            match = rule.pattern.search(text)
            if match is None:
                continue
            keep *= 1.0 - rule.weight
            result.add(Finding("prompt_injection", rule.weight, self.name, rule.name, match.start(), match.end()))
        if result.findings:
            result.scores["prompt_injection"] = round(1.0 - keep, 4)
        return result

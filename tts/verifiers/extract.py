"""Pull the final answer out of a model's output, or say there is none.

Rules, in order:

1. Reasoning models think inside ``<think>...</think>``; only the text after the last
   ``</think>`` is the model's answer, so only that is searched. An answer that appears only
   inside the think block is scratch work and does not count. A ``<think>`` that is never closed
   means the model ran out of tokens mid-thought: nothing it wrote is final, so the result is
   ``None``. Text without any think tag is searched whole.
2. The last ``\\boxed{...}`` (or ``\\fbox{...}``, or ``\\boxed 7`` without braces) decides, and
   its inner content is returned as written. If that last box was never closed (output cut
   off), the result is ``None``: earlier boxes are intermediate values, returning one would be
   a guess. If it is empty, it is an echoed instruction ("put your final answer within
   ``\\boxed{}``"): the answer phrases decide, as in rule 3.
3. Otherwise the last answer phrase decides: "The answer is", "The final answer is",
   "Final Answer:", "**Final Answer**", "Answer:" or GSM8K's "#### 72". A phrase that judges
   ("the answer is correct", "... is not", "... is wrong") is skipped for the one before it.
   When the answer starts with ``$$``, ``\\[``, ``\\(`` (possibly on the next line) or an
   inline ``$...$``, it is that math span. Otherwise it is the rest of that line (or the next
   non-empty line when the phrase ends its line), up to the end of the sentence or the start
   of a clause (", which", " since", " because", ", so"), without markdown bold, surrounding
   ``$`` or a trailing period.
4. Anything else is ``None``. We never fall back to "the last number in the text".

Normalising the answer (``\\text{}``, units, ``\\dfrac``) is `tts.verifiers.equal`'s job, not
this module's.
"""

import re

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# The answer follows the phrase; the last phrase wins. "answer is" alone is too common in
# prose ("my answer is wrong") to count, so a phrase needs "the", "final" or a line of its own.
_PHRASE = re.compile(
    r"\bthe\s+(?:final\s+)?answer\s+is\b"
    r"|\bfinal\s+answer\s*(?:\*\*)?\s*(?:is\b|:|：|$)"
    r"|^[ \t*#]*answer\s*(?:\*\*)?\s*[:：]"
    r"|####",
    re.IGNORECASE | re.MULTILINE,
)
# A sentence ends at a period followed by whitespace; "3.5" and "\ldots" keep theirs.
_SENTENCE_END = re.compile(r"\.(?=\s)")
# Prose after the answer: "12, which is ...", "12 since ...". Lists like "1, 2, 3" survive.
_CLAUSE = re.compile(
    r"(?:,\s*|\s+)(?:which|since|because|as|so|where|meaning|giving|hence|thus|therefore"
    r"|when|if|but|for|that is|i\.e\.)(?![\w-])",
    re.IGNORECASE,
)
# "$x$" as TeX reads it: the content neither starts nor ends with a space, and a "$" followed
# by a digit is no closer, so the price in "$18, which is $2 more" is no math span.
_INLINE_MATH = re.compile(r"\$(?![$\s])((?:[^$\\]|\\.)*?[^\s\\])\$(?!\d)")
# "the answer is correct" judges an answer given earlier; that earlier phrase decides.
_JUDGEMENT = re.compile(r"(?:not|correct|incorrect|wrong|right|indeed)\b", re.IGNORECASE)
_EMPTY_BOX = re.compile(r"\s*\{\s*\}")
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def extract_answer(text: str) -> str | None:
    """The final answer in `text` as a string, or None when the model gave none (see module)."""
    close = text.rfind("</think>")
    if close >= 0:
        text = text[close + len("</think>") :]
    elif "<think>" in text:
        return None
    boxes = list(_BOX.finditer(text))
    if boxes:
        last = boxes[-1]
        if empty := _EMPTY_BOX.match(text, last.end()):  # an echoed "use \\boxed{}" instruction
            return _phrase_answer(text[: last.start()] + text[empty.end() :])
        return _box_content(text, last.end())
    return _phrase_answer(text)


def _box_content(text: str, start: int) -> str | None:
    """Content of the box whose command ends at `start`; None if empty or unclosed."""
    i = start
    while i < len(text) and text[i] in " \t":
        i += 1
    if i == len(text):
        return None
    if text[i] != "{":
        # \boxed 7: TeX takes one token; models write a bare number or word here.
        match = re.match(r"[^\s$]+", text[i:])
        return _clean(match.group(0)) if match else None
    depth = 0
    j = i
    while j < len(text):
        char = text[j]
        if char == "\\":
            j += 2  # \{ and \} are literal braces, not grouping
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return _clean(text[i + 1 : j])
        j += 1
    return None


def _phrase_answer(text: str) -> str | None:
    """What follows the last answer phrase that is not a judgement, or None without one."""
    for match in reversed(list(_PHRASE.finditer(text))):
        body = text[match.end() :].lstrip(" \t\r\n*:：")
        if not _JUDGEMENT.match(body):
            return _answer_at(body)
    return None


def _answer_at(body: str) -> str | None:
    """The answer that `body` starts with: a math span, else its first clause."""
    for left, right in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)")):
        if body.startswith(left):
            end = body.find(right, len(left))
            return _clean(body[len(left) : end]) if end >= 0 else None
    line = body.split("\n", 1)[0].strip()
    if span := _INLINE_MATH.match(line):
        return _clean(span.group(1))
    sentence = _SENTENCE_END.split(line, maxsplit=1)[0]
    return _clean(_CLAUSE.split(sentence, maxsplit=1)[0])


def _clean(answer: str) -> str | None:
    """Strip what carries no value: spaces, bold, surrounding $, a trailing period."""
    previous = None
    while answer != previous:
        previous = answer
        # Bold markers stray to either end: "**Final Answer:** 42", "is **42**."
        answer = answer.strip().strip("*").rstrip(".").strip()
        for left, right in _WRAPPERS:
            if len(answer) >= len(left) + len(right) and answer.startswith(left):
                if answer.endswith(right):
                    answer = answer[len(left) : -len(right)]
                elif left == "$":
                    answer = answer[1:]  # "$5" as a price, or "$5." cut at a sentence end
        if answer.endswith("$") and not answer.endswith("\\$") and "$" not in answer[:-1]:
            answer = answer[:-1]  # "5$" left behind by "is 5$."
    return answer or None

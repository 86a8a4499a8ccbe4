"""Answer equivalence as MATH, AIME and GSM8K graders judge it; never raises, never hangs.

Who does what:

- Our normalisation reads unicode (``−``, ``π``, ``√2``, ``√(x+1)``) as LaTeX and drops what
  graders ignore: ``\\boxed``, ``$``, ``\\left``/``\\right``, spacing commands,
  ``\\dfrac``/``\\tfrac`` and ``\\frac12`` shorthands, units (``\\text{ cm}``,
  ``\\mbox{ inches}^2``, "18 dollars"), degrees, ``\\$``, thousands separators, and ``x =`` in
  front of a value when the other answer has none. A comma is a thousands separator only with
  ``\\!`` or ``{,}`` after it or in the exact ``d,ddd,ddd`` pattern, so ``(1,2)`` stays a tuple.
- Our fast path settles most benchmark answers in microseconds, without sympy: plain numbers
  (integers, decimals, ``1e3`` and ``\\times 10^{}`` notation, repeating decimals, fractions,
  mixed numbers ``1\\frac{4}{5}``) as exact rationals; multiple-choice letters (``B``, ``(B)``,
  ``\\text{(B)}``, ``(B) 12``); words (``\\text{Evelyn}`` = ``evelyn``; a word in ``\\text{}``
  or of 4+ letters is never read as a product of symbols, while ``ab`` = ``ba`` is left to
  sympy); base-b numerals (``52_8``; the bare digits ``52`` count too).
- Our shape rules fix what math-verify misjudges: an inequality ``a < x \\le b`` is the interval
  it describes; a column vector equals the same tuple; a set never equals a tuple or interval.
- math-verify's ``parse`` and ``verify`` (on latex2sympy2_extended) judge everything else:
  radicals, pi, powers, expressions, equations, tuples, intervals and unions, sets, matrices,
  complex numbers (``i`` is the imaginary unit, so ``i^2`` = ``-1``), ``\\pm``.

Percent: ``50\\%`` equals both ``50`` (the question asked "what percent") and ``0.5`` (what 50%
is), while ``50`` and ``0.5`` without a percent sign differ. A number written with a decimal point
matches within 1e-6, relative and absolute (``0.3333333`` is 1/3, ``0.333`` is not); integers
and fractions must match exactly.

Sympy work is bounded in time by `tts.verifiers.sympy_timeout`; verdicts are cached, so
majority voting over many candidates pays for each distinct pair once.
"""

import functools
import re
from fractions import Fraction

from tts.verifiers.sympy_timeout import sympy_equal

TIMEOUT_S = 3.0  # the most one math_equal call spends in sympy, in seconds
_MAX_CHARS = 1000  # longer answers are compared as strings: regex and sympy cost explodes
_TOL = Fraction(1, 10**6)  # relative and absolute, for numbers written with a decimal point

# Spellings with one meaning: unicode, Python's power, the other empty-set glyph.
_REWRITES = {"−": "-", "–": "-", "∞": "\\infty", "°": "^\\circ", "π": "\\pi", "≤": "\\le ",
            "≥": "\\ge ", "×": "\\times ", "\\varnothing": "\\emptyset", "**": "^"}  # fmt: skip
# Unicode root of a number, a letter, a braced or a parenthesised group: √2, √x, √{10}, √(x+1).
_ROOT = re.compile(r"√\s*(?:(\d+(?:\.\d+)?|[A-Za-z])|\{([^{}]*)\}|\(([^()]*)\))")
_TEXT_CMD = r"\\(?:text|textbf|textrm|textnormal|mathrm|mathbf|mbox)\s*"
_WHOLE_TEXT = re.compile(_TEXT_CMD + r"\{([^{}]*)\}")
_SPACING = re.compile(r"\\left(?![A-Za-z])|\\right(?![A-Za-z])|(?<!\\)\\[!,;: ]|\\displaystyle")
_THOUSANDS_MARK = re.compile(r"(\d)(?:,\\!|\{,\})\s*(?=\d{3})")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:(?:,\d{3})+|(?: \d{3})+)(?:\.\d+)?")
_PERCENT = re.compile(r"\s*(?:\\%|%|\\text\{\s*\\?%\s*\}|\s+percent)\s*$")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree")
_TEXT_UNIT = re.compile(r"(.*[\d}])\s*" + _TEXT_CMD + r"\{\s*[A-Za-z][A-Za-z .]*\}(?:\^\{?\d\}?)?")
_WORD_UNIT = re.compile(r"([-+]?[\d.,]*\d)\s+[A-Za-z]{2,}(?:\s+[A-Za-z]+)*(?:\^\{?\d\}?)?")
_LHS = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?\s*=\s*([^=]+)")
_CHOICE = re.compile(r"\(([A-E])\)(?:\s.*)?|\(?([A-E])\)?", re.DOTALL)
_TEXT_OPEN = re.compile(_TEXT_CMD + r"\{")
_WORD = re.compile(r"[A-Za-z]{2,}(?: [A-Za-z]+)*")
_MATH_WORDS = {"sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "sqrt", "pi"}
_BASE = re.compile(r"(\d+)_\{?(\d+)\}?")
_DEC = r"(?:\d+\.?\d*|\.\d+)"
_PLAIN = re.compile(rf"{_DEC}(?:[eE][-+]?\d{{1,3}})?")  # exponent capped: 1e99999999 is huge
_SCI = re.compile(rf"({_DEC})(?:\\times|\\cdot|\*)10\^\{{?([-+]?\d{{1,3}})\}}?")
_REPEATING = re.compile(r"(\d*)\.(\d*)\\overline\{(\d+)\}")
_FRAC = re.compile(rf"\\frac\{{({_DEC})\}}\{{({_DEC})\}}|({_DEC})/({_DEC})")
_MIXED = re.compile(r"(\d+) ?(?:\\frac\{(\d+)\}\{(\d+)\}|(\d+)/(\d+))")
_BOUND = r"(?:<|(?:\\lt|\\leq?|\\leqslant)(?![A-Za-z]))"
_BETWEEN = re.compile(rf"(.+?)({_BOUND})\s*[A-Za-z]\s*({_BOUND})(.+)")
_ABOVE = re.compile(r"[A-Za-z]\s*(>|(?:\\gt|\\geq?|\\geqslant)(?![A-Za-z]))(.+)")
_BELOW = re.compile(rf"[A-Za-z]\s*({_BOUND})(.+)")
_COLUMN = re.compile(r"\\begin\{[pbBvV]?matrix\}([^&]*)\\end\{[pbBvV]?matrix\}", re.DOTALL)


def is_correct(answer: str | None, gold: str) -> bool:
    """Is an extracted final answer right? No answer (None) is wrong; otherwise `math_equal`.
    Every grade in tts (benchmarks, data, rewards, training evals) goes through
    `tts.data.grading.grade_answer`, which uses this one unless a synthetic task has a checker
    of its own."""
    return answer is not None and math_equal(answer, gold)


def math_equal(pred: str, gold: str, timeout_s: float = TIMEOUT_S) -> bool:
    """True when `pred` states the same answer as `gold` (rules in the module docstring).

    Never raises: a grader error counts as "not shown equal" rather than stopping a benchmark.
    """
    try:
        return _equal(pred, gold, timeout_s)
    except Exception:
        return False


@functools.lru_cache(maxsize=1 << 16)
def _equal(pred: str, gold: str, timeout_s: float) -> bool:
    if max(len(pred), len(gold)) > _MAX_CHARS:
        return bool(pred.strip()) and pred.strip() == gold.strip()
    p, p_percent = _normalize(pred)
    g, g_percent = _normalize(gold)
    if not p or not g:
        return False
    p, g = _drop_lhs(p, g), _drop_lhs(g, p)
    if p == g:
        return True
    prose = _TEXT_OPEN.search(pred) is not None or _TEXT_OPEN.search(gold) is not None
    verdict = _fast_verdict(p, p_percent, g, g_percent, prose)
    if verdict is not None:
        return verdict
    pair = _reshape(p, g)
    return pair is not None and sympy_equal(*pair, timeout_s)


def _normalize(answer: str) -> tuple[str, bool]:
    """The answer without what graders ignore, and whether it carried a percent sign."""
    s = answer.strip()
    for old, new in _REWRITES.items():
        s = s.replace(old, new)
    s = _ROOT.sub(lambda m: "\\sqrt{" + "".join(filter(None, m.groups())) + "}", s)
    s = s.replace("\\$", "").replace("$", "").strip()
    for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right):
            s = s[len(left) : -len(right)]
    boxed = re.fullmatch(r"\\(?:boxed|fbox)\s*\{(.*)\}", s, re.DOTALL)
    if boxed:
        s = boxed.group(1)
    s = _THOUSANDS_MARK.sub(r"\1", s)
    s = _SPACING.sub(" ", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*(\d)", r"\\frac\1{\2}", s)
    s = re.sub(r"\\sqrt\s*(\d)", r"\\sqrt{\1}", s)
    s = re.sub(r"\\inf(?:inity)?(?![A-Za-z])|^infinity$", r"\\infty", s)
    s = re.sub(r"(?<![\\A-Za-z])pi(?![A-Za-z])", r"\\pi", s)  # "pi/2" typed without LaTeX
    s = " ".join(s.split()).rstrip(".").strip()
    percent = _PERCENT.search(s)
    if percent:
        s = s[: percent.start()]
    s = _DEGREES.sub("", s).strip()
    while match := _WHOLE_TEXT.fullmatch(s):
        s = match.group(1).strip()
    for unit in (_TEXT_UNIT, _WORD_UNIT):
        if match := unit.fullmatch(s):
            s = match.group(1).strip()
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "").replace(" ", "")
    return s, percent is not None


def _drop_lhs(s: str, other: str) -> str:
    """`x = 3` is the value 3 when the other answer is a bare value."""
    match = _LHS.fullmatch(s)
    return match.group(1).strip() if match and "=" not in other else s


def _fast_verdict(p: str, p_percent: bool, g: str, g_percent: bool, prose: bool) -> bool | None:
    """Settle choices, words, base-b numerals and plain numbers without sympy; None otherwise.

    `prose`: an answer was written in ``\\text{}``, so its letters are a word, not a product.
    """
    p_choice, g_choice = _choice(p), _choice(g)
    if p_choice or g_choice:
        return p_choice == g_choice
    p_word, g_word = _word(p), _word(g)
    if p_word and p_word == g_word:
        return True
    if (p_word or g_word) and (prose or _is_prose(p_word) or _is_prose(g_word)):
        return False
    p_base, g_base = _BASE.fullmatch(p), _BASE.fullmatch(g)
    if p_base and g_base:
        return p_base.groups() == g_base.groups()
    if p_base or g_base:
        numeral, other = (p_base, g) if p_base else (g_base, p)
        return other == numeral.group(1)
    a, b = _number(p), _number(g)
    if a is None or b is None:
        return None
    if p_percent == g_percent:
        return _close(a, b)
    if p_percent:
        return _close(a, b) or _close((a[0] / 100, a[1]), b)
    return _close(a, b) or _close(a, (b[0] / 100, b[1]))


def _choice(s: str) -> str | None:
    """The letter of a multiple-choice answer: B, (B), \\text{(B)}, (B) 12."""
    match = _CHOICE.fullmatch(re.sub(_TEXT_CMD + r"\{([^{}]*)\}", r"\1", s).strip())
    return (match.group(1) or match.group(2)) if match else None


def _word(s: str) -> str | None:
    """A lower-cased word answer ("Evelyn", "even"), which sympy would misread as a product."""
    if not _WORD.fullmatch(s) or _MATH_WORDS & set(s.lower().split()):
        return None
    return s.lower()


def _is_prose(word: str | None) -> bool:
    """A real word or phrase; 2-3 letters may be a product (``ab`` = ``ba``): sympy judges it."""
    return word is not None and (len(word) >= 4 or " " in word)


def _number(s: str) -> tuple[Fraction, bool] | None:
    """The exact value of a plain number and whether it was written with a decimal point."""
    # Spaces around operators carry nothing, but "1 1/2" is a mixed number, not 11/2.
    s = re.sub(r"\s*(\\times|\\cdot|[*/^{}])\s*", r"\1", s)
    sign = -1 if s.startswith("-") else 1
    s = s.lstrip("+-").lstrip()
    inexact = "." in s or re.search(r"\d[eE]", s) is not None
    if _PLAIN.fullmatch(s):
        value = Fraction(s)
    elif match := _SCI.fullmatch(s):
        value = Fraction(match.group(1)) * Fraction(10) ** int(match.group(2))
    elif match := _REPEATING.fullmatch(s):
        whole, fixed, cycle = match.groups()
        scale = 10 ** len(fixed)
        value = int(whole or 0) + Fraction(int(fixed or 0), scale)
        value += Fraction(int(cycle), (10 ** len(cycle) - 1) * scale)
        inexact = False  # 0.\overline{3} is exactly 1/3
    elif match := _FRAC.fullmatch(s):
        num, den = (x for x in match.groups() if x is not None)
        if Fraction(den) == 0:
            return None
        value = Fraction(num) / Fraction(den)
    elif match := _MIXED.fullmatch(s):
        whole, num, den = (int(x) for x in match.groups() if x is not None)
        if num >= den:  # 2\frac{3}{2} is a product, not a mixed number
            return None
        value = whole + Fraction(num, den)
    else:
        return None
    return sign * value, inexact


def _close(a: tuple[Fraction, bool], b: tuple[Fraction, bool]) -> bool:
    if a[0] == b[0]:
        return True
    if not (a[1] or b[1]):
        return False
    diff = abs(a[0] - b[0])
    return diff <= _TOL and diff <= _TOL * max(abs(a[0]), abs(b[0]))


def _reshape(p: str, g: str) -> tuple[str, str] | None:
    """Rewrite shapes math-verify misjudges; None when the shapes alone prove a difference."""
    p_set, g_set = p.startswith("\\{"), g.startswith("\\{")
    if p_set != g_set and (p[0] in "([" or g[0] in "(["):
        return None
    return _as_tuple(_as_interval(p, g), g), _as_tuple(_as_interval(g, p), p)


def _as_interval(s: str, other: str) -> str:
    """`-2 \\le x < 7` as `[-2,7)` when the other answer is an interval."""
    if other[0] not in "([":
        return s
    strict = ("<", ">", "\\lt", "\\gt")
    if match := _BETWEEN.fullmatch(s):
        low, low_op, high_op, high = match.groups()
        left = "(" if low_op in strict else "["
        right = ")" if high_op in strict else "]"
        return f"{left}{low.strip()},{high.strip()}{right}"
    if match := _ABOVE.fullmatch(s):
        op, low = match.groups()
        return ("(" if op in strict else "[") + low.strip() + ",\\infty)"
    if match := _BELOW.fullmatch(s):
        op, high = match.groups()
        return "(-\\infty," + high.strip() + (")" if op in strict else "]")
    return s


def _as_tuple(s: str, other: str) -> str:
    """A column vector as the tuple of its entries when the other answer is a tuple."""
    match = _COLUMN.fullmatch(s)
    if not match or not other.startswith("("):
        return s
    return "(" + ",".join(row.strip() for row in match.group(1).split("\\\\")) + ")"

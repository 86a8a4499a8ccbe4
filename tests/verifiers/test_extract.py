"""extract_answer on short forms and on long outputs shaped like real model responses."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tts.verifiers.extract import extract_answer

CHAIN_OF_THOUGHT = r"""Let me set up the problem. The area of the first square is $s^2$, so
$$s^2 = 49 \implies \boxed{s = 7}.$$

Next, the second square has side $s + 3$, so its area is $(s+3)^2 = \boxed{100}$.

Wait, the question asks for the difference of the areas, not the second area. That is
$100 - 49 = 51$, and we double it for the two faces:

$$2 \cdot 51 = 102.$$

Therefore the final result is $\boxed{102}$.

I hope this helps! Let me know if anything is unclear."""

R1_STYLE = r"""<think>
Okay, so I need the probability. Maybe it is \boxed{\frac{1}{3}}? Let me recount.
There are 6 outcomes and 3 favourable ones... no wait, only 2 are favourable.
Hmm, the answer is 1/3? Let me check once more. Yes, 2 of 6.
</think>

The favourable outcomes are 2 of 6 equally likely ones, so the probability is
$\boxed{\dfrac{1}{3}}$."""

R1_CHANGED_MIND = r"""<think>
First guess: \boxed{12}. But that double counts the corners. Subtract 4: the answer is 8.
</think>
Counting each corner once gives **Final Answer:** $8$"""

GSM8K_STYLE = """Natalia sold 48/2 = <<48/2=24>>24 clips in May.
Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.
#### 72"""

MINERVA_STYLE = r"""The sum telescopes to $1 - \frac{1}{n+1}$, which at $n = 9$ is $\frac{9}{10}$.
Final Answer: The final answer is $\frac{9}{10}$. I hope it is correct."""

CASES = [
    (CHAIN_OF_THOUGHT, "102"),
    (R1_STYLE, r"\dfrac{1}{3}"),
    (R1_CHANGED_MIND, "8"),
    (GSM8K_STYLE, "72"),
    (MINERVA_STYLE, r"\frac{9}{10}"),
    (r"so $\boxed{\frac{1}{\sqrt{2}}}$.", r"\frac{1}{\sqrt{2}}"),
    (r"The choice is $\boxed{\text{(C)}}$", r"\text{(C)}"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
    (r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"),
    (r"\boxed{(1,2]}", "(1,2]"),
    (r"thus \boxed 7.", "7"),
    (r"\fbox{42}", "42"),
    (r"\boxed{x^{2^{3}}}", "x^{2^{3}}"),
    ("The answer is 42.", "42"),
    ("So the answer is $-\\frac{3}{4}$.", "-\\frac{3}{4}"),
    ("Therefore, the answer is 3.5. Done.", "3.5"),
    ("THE ANSWER IS 7", "7"),
    ("The answer is: \\( \\frac{3}{4} \\)", "\\frac{3}{4}"),
    ("The answer is $18.", "18"),
    ("The answer is $\\$18.90$.", "\\$18.90"),
    ("Final Answer: (1,2]", "(1,2]"),
    ("**Final Answer**\n\n$42$", "42"),
    ("**Final Answer:** $\\frac{1}{2}$", "\\frac{1}{2}"),
    ("the answer is **42**.", "42"),
    ("Answer: 5", "5"),
    ("**Answer:** 12", "12"),
    ("#### 1,000", "1,000"),
    ("The answer is 5. Then\nThe answer is 6.", "6"),
    ("no answer here, though 42 is a number", None),
    ("my answer is wrong, let me recheck. 5", None),
    ("Before the final answer, I should check.", None),
    ("", None),
    ("</think>", None),
    (r"\boxed{}", None),
    (r"first \boxed{3}, then it was cut off \boxed{12", None),
    ("<think>I think it is \\boxed{5} but let me", None),
    ("<think>the answer is \\boxed{5}</think>", None),
    ("<think>a</think>b<think>c</think>The answer is 9.", "9"),
    # Display math on the lines after the phrase.
    ("The answer is:\n\n$$\n12\n$$", "12"),
    ("The final answer is:\n\\[\n12\n\\]", "12"),
    ("The answer is:\n\n$$\n12", None),  # cut off inside the display
    # Prose after the answer ends it; lists and tuples keep their commas.
    ("The answer is 12, which is the number of apples.", "12"),
    ("The answer is 12 because 3 \\cdot 4 = 12.", "12"),
    ("The answer is 12, so Tom has 12 apples.", "12"),
    ("The answer is (1, 2), since both work.", "(1, 2)"),
    ("The answer is 1, 2, 3.", "1, 2, 3"),
    ("The answer is $18, which is $2 more than before.", "18"),
    # A math span that opens the answer is the answer.
    ("The answer is \\(\\frac12\\) since the halves match.", "\\frac12"),
    ("The answer is $x = 3$ because the line is vertical.", "x = 3"),
    # "the answer is correct" judges the earlier answer; that one counts.
    ("The answer is 12. Let me verify that the answer is correct: 3 * 4 = 12.", "12"),
    ("The answer is 7.\nChecking: the answer is indeed right.", "7"),
    ("the answer is not 5", None),
    # An empty last box is an echoed instruction; a cut-off last box is still no answer.
    ("The answer is 12.\n\nPlease put your final answer within \\boxed{}.", "12"),
    ("\\boxed{3} and the answer is \\boxed{}", None),
    ("I put my answer in \\boxed{}.\nThe answer is 5.", "5"),
]


@pytest.mark.parametrize("text, expected", CASES, ids=[str(i) for i in range(len(CASES))])
def test_extract(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


PIECES = [*"ab1 \n{}$\\.*#:", "\\boxed", "\\fbox", "<think>", "</think>", "answer is", "the ",
          "Final Answer"]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=60).map("".join))
def test_never_raises(text: str) -> None:
    answer = extract_answer(text)
    assert answer is None or (isinstance(answer, str) and answer)


def test_long_output_does_not_hang() -> None:
    # A guard against quadratic scans of megabyte outputs, not a speed target: it takes ~0.1 s.
    text = CHAIN_OF_THOUGHT * 2000 + "\n" * 100_000 + "the " * 50_000 + "{" * 50_000
    start = time.monotonic()
    extract_answer(text)
    assert time.monotonic() - start < 10.0

"""One grade everywhere: countdown answers by countdown's checker, every other one by
`is_correct`; the RL reward grades the same way."""

from tts.data.grading import grade_answer
from tts.data.problem import Problem
from tts.train.grpo_rewards import RewardConfig, group_rewards

COUNTDOWN = Problem(
    "c",
    "Use 7, 2, 3, 1 to make 11 with +, -, * and /, each number at most once.",
    "11",  # the target, as countdown's problems carry it
    {"task": "countdown", "difficulty": 2},
)


def test_a_countdown_answer_must_reach_the_target_from_the_given_numbers():
    assert grade_answer(COUNTDOWN, "7 + 3 + 1") and grade_answer(COUNTDOWN, "7 * 2 - 3 * 1")
    assert not grade_answer(COUNTDOWN, "(7 - 2) * 2 + 1")  # 2 used twice
    assert not grade_answer(COUNTDOWN, "11")  # math_equal against the gold would take it
    assert not grade_answer(COUNTDOWN, "7 + 4")  # 4 is not given
    assert not grade_answer(COUNTDOWN, "(" * 10_000 + "1" + ")" * 10_000)
    assert not grade_answer(COUNTDOWN, None)


def test_other_problems_are_graded_against_their_gold_answer():
    problem = Problem("p", "What is 1/2 + 1/4?", "\\frac{3}{4}")
    assert grade_answer(problem, "0.75") and not grade_answer(problem, "3/5")
    user_row = Problem("q", "What is 2 + 2?", "4", {"task": {"kind": "unknown"}})
    assert grade_answer(user_row, "4")


def test_the_rl_reward_pays_nothing_for_the_bare_countdown_target():
    texts = ["The answer is \\boxed{7 + 3 + 1}.", "The answer is \\boxed{11}."]
    rewards, _ = group_rewards(texts, [[1], [1]], COUNTDOWN, 100, RewardConfig())
    assert rewards == [1.0, 0.0]

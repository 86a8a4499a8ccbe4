"""Rule-based rewards for RL on verifiable problems (GRPO), as pure functions.

Each function scores one completion (or, for Kimi's length penalty, one group of completions for
the same prompt) and never touches a model. A training recipe adds up the terms it wants: the
long-CoT recipe of Yeo et al. (2025) feeds correctness into `cosine_length_reward` and adds
`repetition_penalty` to wrong answers. Lengths are in tokens throughout.
"""

import math
from collections.abc import Sequence

from tts.verifiers.equal import is_correct
from tts.verifiers.extract import extract_answer

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def accuracy_reward(text: str, gold: str) -> float:
    """1.0 if the answer extracted from `text` equals `gold`, else 0.0.

    The verifiable outcome reward of DeepSeek-R1 (DeepSeek-AI, 2025); equality is
    `math_equal`'s, symbolic or numeric. `extract_answer` reads only what follows the last
    `</think>`, so an answer tried inside the thinking and dropped, or a think block cut off by
    the token budget, earns nothing.
    """
    pred = extract_answer(text)
    return 1.0 if is_correct(pred, gold) else 0.0


def format_reward(text: str) -> float:
    """1.0 if `text` is one `<think>...</think>` block then an answer part with an answer, else 0.0.

    The format reward of DeepSeek-R1 (DeepSeek-AI, 2025), with the answer part checked by
    `extract_answer` rather than by `<answer>` tags. Leading whitespace is allowed; a second
    think block, an unclosed one, or an empty or answerless answer part scores 0.0. Score the
    text as the model wrote it: if the chat template opens `<think>` in the prompt, prepend it.
    """
    body = text.lstrip()
    if not body.startswith(THINK_OPEN):
        return 0.0
    if text.count(THINK_OPEN) != 1 or text.count(THINK_CLOSE) != 1:
        return 0.0
    answer = body.split(THINK_CLOSE, 1)[1]
    return 1.0 if answer.strip() and extract_answer(answer) is not None else 0.0


def cosine_length_reward(
    correct: bool,
    length: int,
    max_length: int,
    *,
    correct_at_zero: float = 2.0,
    correct_at_max: float = 1.0,
    wrong_at_zero: float = -10.0,
    wrong_at_max: float = 0.0,
    exceed_penalty: float = -10.0,
) -> float:
    """The cosine length-scaling reward of Yeo et al. (2025), "Demystifying Long Chain-of-Thought
    Reasoning in LLMs", Sec. 4.2.

        CosFn(t, T, eta_min, eta_max) = eta_min + 0.5 * (eta_max - eta_min) * (1 + cos(t * pi / T))
        R = CosFn(length, max_length, correct_at_max, correct_at_zero)   if correct
            CosFn(length, max_length, wrong_at_max, wrong_at_zero)       if wrong
            exceed_penalty                                               if length >= max_length

    The reward moves along a half cosine from its value at length 0 to its value at max_length:
    a correct answer earns more the shorter it is (2 -> 1) and a wrong one is penalised less
    the longer it is (-10 -> 0), so a short answer is the risky one and thinking longer pays
    when unsure. For wrong answers eta_min > eta_max, which the formula handles as is.

    Defaults (correct 2 -> 1, wrong -10 -> 0, exceeded -10) are those of the paper's runs in the
    official code, eddycmu/demystify-long-cot: openrlhf/scripts/section_4__*/section_4.2__
    active_scaling_of_cot_length__cosine_repetition_penalty.sh and the 4.4 and 4.5 scripts set
    --math_rule_cosine_scale_{min,max}_value_wrong -10/0, ..._{min,max}_value_correct 1/2 and
    --math_rule_common_exceed_length -10. The official reward/cosine.py applies the exceed
    penalty once length + 16 >= max_length (a margin against off-by-one lengths); here it is
    exactly length >= max_length, i.e. the generation hit its token budget.
    """
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    if length < 0:
        raise ValueError(f"length must be non-negative, got {length}")
    if length >= max_length:
        return exceed_penalty
    if correct:
        at_zero, at_max = correct_at_zero, correct_at_max
    else:
        at_zero, at_max = wrong_at_zero, wrong_at_max
    return at_max + 0.5 * (at_zero - at_max) * (1.0 + math.cos(length * math.pi / max_length))


def repetition_penalty(
    token_ids: Sequence[int], ngram_size: int = 40, max_penalty: float = -1.0
) -> float:
    """The n-gram repetition penalty of Yeo et al. (2025), Appendix C.2.

        P = max_penalty * (1 - #unique n-grams / #n-grams)

    0.0 when no n-gram repeats, approaching max_penalty as the text becomes one loop; 0.0 for
    sequences shorter than n. It takes token ids, not words: the paper penalises repeated
    tokens (the official dense form, reward/repetition.py RepetitionDensePenalty, works on
    token ids), and tokens make the penalty independent of language and whitespace. The
    official sequence-level form (get_repetition_penalty in the same file) counts lowercased
    whitespace-split words instead; reward/cosine.py adds it to the reward of wrong answers only.

    Defaults: ngram_size = 40 tokens, the n-gram size of the paper's runs
    (--math_rule_common_repetition_ngram_size 40 in the section 4.2/4.4 scripts); short n-grams
    repeat in ordinary maths ("= 2", "\\frac{"), 40-token ones only in degenerate loops.
    max_penalty = -1.0 follows TRL's get_repetition_penalty_reward and open-r1: the paper's
    runs used the dense per-token form (-0.05 on each token of a repeated n-gram), which has no
    sequence-level equivalent, and the repo's own sequence-level default of 0 disables it.
    """
    if ngram_size <= 0:
        raise ValueError(f"ngram_size must be positive, got {ngram_size}")
    if max_penalty > 0:
        raise ValueError(f"max_penalty must not be positive, got {max_penalty}")
    num_ngrams = len(token_ids) - ngram_size + 1
    if num_ngrams <= 0:
        return 0.0
    ids = list(token_ids)
    unique = {tuple(ids[i : i + ngram_size]) for i in range(num_ngrams)}
    return max_penalty * (1.0 - len(unique) / num_ngrams)


def kimi_length_penalty(lengths: Sequence[int], correct: Sequence[bool]) -> list[float]:
    """The length reward of Kimi k1.5 (Kimi Team, 2025), Sec. 2.3.3, over one group of samples.

        lambda_i = 0.5 - (len_i - min_len) / (max_len - min_len)
        reward_i = lambda_i             if correct_i
                   min(0, lambda_i)     if wrong

    min_len and max_len are taken over the group of responses sampled for the same prompt, so
    the shortest response gets +0.5 and the longest -0.5; a wrong answer is never rewarded for
    being short. A group of equal lengths gets all 0.0 (the formula would divide by zero), as in
    open-r1's len_reward. The paper has no further parameters; it adds this term with a weight
    that it warms up during training, which is the recipe's business, not this function's.
    """
    if len(lengths) != len(correct):
        raise ValueError(f"got {len(lengths)} lengths but {len(correct)} correctness flags")
    if any(n < 0 for n in lengths):
        raise ValueError(f"lengths must be non-negative, got {list(lengths)}")
    if not lengths:
        return []
    min_len, max_len = min(lengths), max(lengths)
    if max_len == min_len:
        return [0.0] * len(lengths)
    rewards = []
    for n, ok in zip(lengths, correct, strict=True):
        lam = 0.5 - (n - min_len) / (max_len - min_len)
        rewards.append(lam if ok else min(0.0, lam))
    return rewards


def dapo_overlong_penalty(length: int, max_length: int, cache_length: int) -> float:
    """DAPO's soft overlong punishment (Yu et al., 2025, "DAPO", eq. 13).

        R = 0                                           if length <= L_max - L_cache
            ((L_max - L_cache) - length) / L_cache      if L_max - L_cache < length <= L_max
            -1                                          if length > L_max

    with L_max = max_length and L_cache = cache_length.

    It is added to the correctness reward, so a response is punished more the deeper it runs
    into the last cache_length tokens of the budget. The paper uses max_length = 20480 and
    cache_length = 4096 (16384 expected tokens plus a 4096-token punish cache); there are no
    defaults here because both depend on the run's generation budget.
    """
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    if not 0 <= cache_length <= max_length:
        raise ValueError(f"cache_length must be in [0, {max_length}], got {cache_length}")
    if length < 0:
        raise ValueError(f"length must be non-negative, got {length}")
    soft_start = max_length - cache_length
    if length <= soft_start:
        return 0.0
    if length <= max_length:
        return (soft_start - length) / cache_length
    return -1.0

import json

import pytest

from tts.data.datasets import SHIPPED, load_dataset
from tts.errors import TTSError

SIZES = {"math500": 500, "aime24": 30, "aime25": 30, "amc23": 40, "gsm8k": 1319}


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_sets_load_offline_by_name(name, monkeypatch, tmp_path):
    monkeypatch.setenv("TTS_DATA_DIR", str(tmp_path))  # nothing but the package's own files
    problems = load_dataset(name)
    assert len(problems) == SIZES[name]
    assert len({p.id for p in problems}) == len(problems)
    assert all(p.problem.strip() and p.answer.strip() for p in problems)


def test_math500_keeps_latex_answers_and_metadata():
    first = load_dataset("math500", limit=1)[0]
    assert first.id == "test/precalculus/807.json"
    assert first.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert first.metadata["subject"] == "Precalculus" and "solution" in first.metadata


def test_limit_takes_the_first_problems():
    assert [p.id for p in load_dataset("gsm8k", limit=3)] == [f"gsm8k-test-{i}" for i in range(3)]


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_path_with_other_field_names_and_gsm8k_answers(tmp_path):
    path = write_lines(
        tmp_path / "mine.jsonl",
        [
            json.dumps({"question": "2+2?", "answer": "He has 2+2=4\n#### 4"}),
            json.dumps({"id": "q7", "problem": "Total?", "answer": 1200, "level": 3}),
        ],
    )
    first, second = load_dataset(str(path))
    assert (first.id, first.problem, first.answer) == ("mine-1", "2+2?", "4")
    assert (second.id, second.answer, second.metadata) == ("q7", "1200", {"level": 3})


def test_data_dir_adds_named_sets(tmp_path, monkeypatch):
    write_lines(tmp_path / "extra.jsonl", [json.dumps({"problem": "p", "answer": "1"})])
    monkeypatch.setenv("TTS_DATA_DIR", str(tmp_path))
    assert load_dataset("extra")[0].answer == "1"


def test_malformed_line_names_file_and_line(tmp_path):
    path = write_lines(
        tmp_path / "bad.jsonl", [json.dumps({"problem": "p", "answer": "1"}), "{oops"]
    )
    with pytest.raises(TTSError, match=r"bad.jsonl, line 2: not valid JSON"):
        load_dataset(str(path))


def test_missing_fields_are_named(tmp_path):
    path = write_lines(tmp_path / "noanswer.jsonl", [json.dumps({"problem": "p"})])
    with pytest.raises(TTSError, match=r"line 1: no answer"):
        load_dataset(str(path))
    path = write_lines(tmp_path / "noproblem.jsonl", [json.dumps({"answer": "3"})])
    with pytest.raises(TTSError, match=r"line 1: no problem text"):
        load_dataset(str(path))


def test_unknown_names_list_the_known_ones():
    with pytest.raises(TTSError, match="unknown dataset 'math5000'.*math500"):
        load_dataset("math5000")
    with pytest.raises(TTSError, match="dataset file not found"):
        load_dataset("missing/file.jsonl")
    with pytest.raises(TTSError, match="limit must be >= 1"):
        load_dataset("math500", limit=0)

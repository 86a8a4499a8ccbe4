import orjson

from tts.data.jsonl import RecordWriter, read_records


def test_torn_last_line_is_ignored_then_cut_on_resume(tmp_path):
    path = tmp_path / "results.jsonl"
    with RecordWriter(path) as writer:
        writer.write({"id": 1})
        writer.write({"id": 2})
    with path.open("ab") as handle:  # a kill in the middle of a write
        handle.write(b'{"id": 3, "tex')
    assert read_records(path) == [{"id": 1}, {"id": 2}]
    with RecordWriter(path) as writer:
        writer.write({"id": 3})
    assert [orjson.loads(line) for line in path.read_bytes().splitlines()] == [
        {"id": 1},
        {"id": 2},
        {"id": 3},
    ]


def test_missing_file_reads_as_empty(tmp_path):
    assert read_records(tmp_path / "none.jsonl") == []

"""records: reading and writing the NDJSON stream, header, field checks."""
import io

import pytest

from layerpipe.errors import LayerpipeError
from layerpipe.records import (SCHEMA_VERSION, Header, Record, RecordReader, RecordWriter, need,
                               need_digest, need_path_list, need_size, need_store_path)

PATH = "/gnu/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-hello"


def read(data: bytes, name: str = "in.ndjson") -> tuple[list[Record], RecordReader]:
    reader = RecordReader(io.BytesIO(data), name)
    return list(reader), reader


def refused(data: bytes, name: str = "in.ndjson") -> LayerpipeError:
    with pytest.raises(LayerpipeError) as info:
        read(data, name)
    return info.value


# -- header -----------------------------------------------------------------

def test_header_is_read_and_not_yielded():
    records, reader = read(b'{"type":"header","schema_version":1,"stages":["closure-read"],"store_dir":"/gnu/store"}\n'
                           b'{"type":"path","path":"x"}\n')
    assert [r.type for r in records] == ["path"]
    assert reader.header.schema_version == 1
    assert reader.header.stages == ["closure-read"]
    assert reader.header.with_stage("layer-split") == {
        "type": "header", "schema_version": SCHEMA_VERSION,
        "stages": ["closure-read", "layer-split"], "store_dir": "/gnu/store"}


def test_stream_without_header_is_schema_1_with_no_stages():
    records, reader = read(b'{"type":"layer","index":0}\n')
    assert len(records) == 1
    assert reader.header.schema_version == 1
    assert reader.header.with_stage("layer-tar") == {"type": "header", "schema_version": 1, "stages": ["layer-tar"]}


def test_empty_stream_has_no_records():
    records, reader = read(b"")
    assert records == [] and reader.header == Header()


def test_newer_schema_is_refused_with_where_and_advice():
    err = refused(b'{"type":"header","schema_version":2,"stages":[]}\n')
    assert err.where == "in.ndjson:1"
    assert "schema version 2" in err.message and "upgrade" in err.message
    assert str(err).startswith("in.ndjson:1: ")


@pytest.mark.parametrize("version", ['0', '"1"', 'true', '1.0', 'null'])
def test_bad_schema_version_is_refused(version):
    err = refused(b'{"type":"header","schema_version":%s}\n' % version.encode())
    assert "schema_version" in err.message and err.where == "in.ndjson:1"


def test_bad_stages_are_refused():
    err = refused(b'{"type":"header","schema_version":1,"stages":"closure-read"}\n')
    assert "stages" in err.message


def test_header_after_first_record_is_refused():
    err = refused(b'{"type":"path"}\n{"type":"header","schema_version":1}\n')
    assert err.where == "in.ndjson:2" and "first record" in err.message


def test_blank_lines_are_skipped_but_counted():
    err = refused(b'\n{"type":"header","schema_version":1}\n\n{"type":"path"}\nnot json\n')
    assert err.where == "in.ndjson:5"


# -- malformed lines --------------------------------------------------------

def test_truncated_last_line_is_refused():
    err = refused(b'{"type":"path","path":"a"}\n{"type":"path","path":"b"}')
    assert err.where == "in.ndjson:2" and "truncated" in err.message


def test_truncated_line_that_is_not_even_json_is_refused_as_truncated():
    err = refused(b'{"type":"path","pa')
    assert err.where == "in.ndjson:1" and "truncated" in err.message


@pytest.mark.parametrize("line", [b"[1,2]", b'"text"', b"42", b"null"])
def test_non_object_lines_are_refused(line):
    err = refused(b'{"type":"path"}\n' + line + b"\n")
    assert err.where == "in.ndjson:2" and "JSON object" in err.message


@pytest.mark.parametrize("line", [b'{"path":"x"}', b'{"type":1}', b'{"type":null}'])
def test_records_need_a_string_type(line):
    err = refused(line + b"\n")
    assert err.where == "in.ndjson:1" and "'type'" in err.message


@pytest.mark.parametrize("line", [b"{", b"not json", b'{"type":"a",}', b"\xff\xfe"])
def test_not_json_is_refused(line):
    err = refused(line + b"\n", name="stdin")
    assert err.where == "stdin:1" and "not a JSON record" in err.message


def test_unknown_types_and_keys_pass_through_untouched():
    line = b'{"type":"note","text":"keep","nested":{"b":1,"a":[1,2]}}\n'
    records, _ = read(line)
    out = io.BytesIO()
    RecordWriter(out).write(records[0].data)
    assert out.getvalue() == line


def test_writer_puts_type_first_and_one_record_per_line():
    out = io.BytesIO()
    writer = RecordWriter(out)
    writer.write({"type": "path", "path": PATH, "narSize": 1})
    writer.write({"type": "note", "text": "two\nlines"})
    lines = out.getvalue().split(b"\n")
    assert lines[0].startswith(b'{"type":"path"')
    assert lines[1] == b'{"type":"note","text":"two\\nlines"}'
    assert lines[2] == b""


# -- field checks -----------------------------------------------------------

def rec(**data) -> Record:
    return Record({"type": "layer", **data}, "f:7")


def test_need_reports_missing_and_mistyped_fields_with_where():
    with pytest.raises(LayerpipeError) as info:
        need(rec(), "index", int)
    assert str(info.value) == "f:7: layer record needs field 'index'"
    with pytest.raises(LayerpipeError, match="'index' must be int"):
        need(rec(index="0"), "index", int)


def test_need_does_not_take_bools_for_ints():
    with pytest.raises(LayerpipeError):
        need(rec(index=True), "index", int)
    assert need(rec(index=0), "index", int) == 0


def test_need_optional_defaults():
    assert need(rec(), "root", bool, optional=True, default=False) is False
    assert need(rec(root=None), "root", bool, optional=True, default=False) is False
    assert need(rec(root=True), "root", bool, optional=True) is True


def test_need_size():
    assert need_size(rec(size=0), "size") == 0
    with pytest.raises(LayerpipeError, match="negative"):
        need_size(rec(size=-1), "size")
    assert need_size(rec(), "size", optional=True) is None


@pytest.mark.parametrize("value", ["sha256:" + "A" * 64, "sha256:" + "a" * 63, "sha512:" + "a" * 64,
                                   "a" * 64, "sha256:" + "a" * 64 + "\n"])
def test_need_digest_refuses(value):
    with pytest.raises(LayerpipeError, match="sha256:<64 hex digits>"):
        need_digest(rec(digest=value), "digest")


def test_need_digest_accepts():
    assert need_digest(rec(digest="sha256:" + "0f" * 32), "digest") == "sha256:" + "0f" * 32


def test_need_store_path_and_lists():
    assert need_store_path(rec(), PATH, "path") == PATH
    with pytest.raises(LayerpipeError) as info:
        need_path_list(rec(paths=[PATH, "/gnu/store/bad"]), "paths")
    assert info.value.where == "f:7" and "'paths' entry" in info.value.message
    assert need_path_list(rec(), "paths", optional=True) == []

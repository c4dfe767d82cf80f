"""Annotations: CSV and dict lists, with errors naming the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tilestream.dataset import load_annotations
from tilestream.dataset.annotations import write_csv
from tilestream.errors import AnnotationError


def _write(tmp_path: Path, data: bytes, name: str = "ann.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_csv_rows_columns_and_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, b'\xef\xbb\xbfslide,patient,label\r\ns1,p1,a\r\n\r\ns2,p1,"b,c"\r\n')
    ann = load_annotations(path)
    assert ann.columns == ["slide", "patient", "label"]  # BOM dropped
    assert ann.slides() == ["s1", "s2"]
    assert ann.lines == [2, 4]  # the blank line is skipped but counted
    assert ann.column("label") == {"s1": "a", "s2": "b,c"}


def test_latin1_byte_in_utf8_file_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "slide,label\ns1,café\n".encode() + b"s2,na\xefve\n")
    with pytest.raises(AnnotationError) as err:
        load_annotations(path)
    msg = str(err.value)
    assert str(path) in msg and "line 3" in msg and "0xef" in msg
    ann = load_annotations(path, encoding="latin-1")  # readable when told
    assert ann.by_slide()["s2"]["label"] == "na\xefve"


def test_missing_column_lists_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, b"name,label\ns1,a\n")
    with pytest.raises(
        AnnotationError, match=r"missing column 'slide'.*\['name', 'label'\]"
    ) as err:
        load_annotations(path)
    assert str(path) in str(err.value)
    path2 = _write(tmp_path, b"slide,label\ns1,a\n", "b.csv")
    with pytest.raises(AnnotationError, match="missing columns 'patient', 'site'"):
        load_annotations(path2, required=["patient", "site"])


def test_duplicate_slide_names_name_both_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, b"slide,label\ns1,a\ns2,b\ns1,c\n")
    with pytest.raises(
        AnnotationError, match=r"line 4: duplicate slide name 's1' \(first at line 2\)"
    ):
        load_annotations(path)


def test_row_errors_name_the_line(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="line 3: 3 fields, the header has 2"):
        load_annotations(_write(tmp_path, b"slide,label\ns1,a\ns2,b,extra\n"))
    with pytest.raises(AnnotationError, match="line 2: empty 'slide'"):
        load_annotations(_write(tmp_path, b"slide,label\n,a\n", "c.csv"))
    with pytest.raises(AnnotationError, match="empty"):
        load_annotations(_write(tmp_path, b"", "d.csv"))
    with pytest.raises(AnnotationError, match="does not exist"):
        load_annotations(tmp_path / "nope.csv")
    with pytest.raises(AnnotationError, match="line 1: repeated column names"):
        load_annotations(_write(tmp_path, b"slide,a,a\ns1,1,2\n", "e.csv"))


def test_dict_lists() -> None:
    ann = load_annotations([{"slide": "s1", "n": 3}, {"slide": "s2", "x": None}])
    assert ann.columns == ["slide", "n", "x"]
    assert ann.rows[0] == {"slide": "s1", "n": "3", "x": ""}
    with pytest.raises(AnnotationError, match="annotations row 2: duplicate slide name"):
        load_annotations([{"slide": "s1"}, {"slide": "s1"}])
    with pytest.raises(AnnotationError, match="row 1: expected a dict"):
        load_annotations(["s1"])  # type: ignore[list-item]


def test_write_csv_roundtrip_is_atomic(tmp_path: Path) -> None:
    rows = [{"slide": "s1", "label": 'é, "q"'}, {"slide": "s2", "label": "x"}]
    out = write_csv(tmp_path / "o.csv", rows)
    assert load_annotations(out).rows == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.csv"]

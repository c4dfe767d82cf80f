"""Label maps: every real file from TensorFlow's models repo and Datumaro, all spellings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tilestream.detection import (
    Keypoint,
    LabelMap,
    LabelMapItem,
    parse_label_map,
    read_label_map,
    write_label_map,
)
from tilestream.errors import AnnotationError

pytestmark = pytest.mark.testdata


def test_mscoco_ids_with_gaps_and_display_names(detection_dir: Path) -> None:
    lm = read_label_map(detection_dir / "label_maps" / "mscoco_label_map.pbtxt")
    assert len(lm) == 80
    ids = [item.id for item in lm]
    assert ids[0] == 1
    assert ids[-1] == 90
    assert len(set(ids)) == 80
    assert 12 not in ids
    assert 26 not in ids
    assert lm.items[0] == LabelMapItem(1, "/m/01g317", display_name="person")
    assert lm.id_of("/m/01g317") == 1
    assert lm.id_of("person") == 1  # display names resolve too
    assert lm.name_of(90) == "/m/012xff"
    assert lm.items[-1].display_name == "toothbrush"


def test_pascal_single_quotes(detection_dir: Path) -> None:
    lm = read_label_map(detection_dir / "label_maps" / "pascal_label_map.pbtxt")
    assert [i.name for i in lm][:3] == ["aeroplane", "bicycle", "bird"]
    assert lm.to_dict()["tvmonitor"] == 20
    assert len(lm) == 20


def test_pet_and_kitti(detection_dir: Path) -> None:
    pets = read_label_map(detection_dir / "label_maps" / "pet_label_map.pbtxt")
    assert len(pets) == 37
    assert pets.id_of("Abyssinian") == 1
    assert pets.id_of("yorkshire_terrier") == 37
    kitti = read_label_map(detection_dir / "label_maps" / "kitti_label_map.pbtxt")
    assert kitti.to_dict() == {"car": 1, "pedestrian": 2}


def test_colon_form_with_nested_keypoints(detection_dir: Path) -> None:
    path = detection_dir / "label_maps" / "face_person_with_keypoints_label_map.pbtxt"
    assert "item: {" in path.read_text()
    lm = read_label_map(path)
    face, person = lm.items
    assert (face.id, face.name, face.display_name) == (1, "face", "face")
    assert face.keypoints[0] == Keypoint(0, "left_eye_center")
    assert len(face.keypoints) == 6
    assert len(person.keypoints) == 17
    assert (person.name, person.display_name) == ("Person", "PERSON")
    assert person.keypoints[-1] == Keypoint(22, "RIGHT_ANKLE")


def test_no_trailing_newline(detection_dir: Path) -> None:
    path = detection_dir / "raccoon" / "object-detection.pbtxt"
    assert not path.read_bytes().endswith(b"\n")
    assert read_label_map(path).to_dict() == {"raccoon": 1}


def test_datumaro_map(tfrecords_dir: Path) -> None:
    lm = read_label_map(tfrecords_dir / "datumaro_tf_detection_api_dataset" / "label_map.pbtxt")
    assert lm.to_dict() == {f"label_{i}": i + 1 for i in range(10)}


@pytest.mark.parametrize(
    "name",
    [
        "mscoco_label_map.pbtxt",
        "pascal_label_map.pbtxt",
        "pet_label_map.pbtxt",
        "kitti_label_map.pbtxt",
        "face_person_with_keypoints_label_map.pbtxt",
    ],
)
def test_write_read_round_trip(detection_dir: Path, tmp_path: Path, name: str) -> None:
    lm = read_label_map(detection_dir / "label_maps" / name)
    write_label_map(lm, tmp_path / name)
    again = read_label_map(tmp_path / name)
    assert again == lm
    assert [i.keypoints for i in again.items] == [i.keypoints for i in lm.items]


def test_written_map_parses_with_protobuf_text_format(tmp_path: Path) -> None:
    # Check our writer and reader against protobuf's own text-format parser,
    # with the OD API's StringIntLabelMap schema built at run time.
    from google.protobuf import descriptor_pb2, descriptor_pool, text_format
    from google.protobuf.message_factory import GetMessageClass

    fdp = descriptor_pb2.FileDescriptorProto(name="lm_test.proto", package="lmtest")
    item = fdp.message_type.add(name="Item")
    t = descriptor_pb2.FieldDescriptorProto
    for number, (fname, ftype) in enumerate(
        [("name", t.TYPE_STRING), ("id", t.TYPE_INT32), ("display_name", t.TYPE_STRING)], 1
    ):
        item.field.add(name=fname, number=number, type=ftype, label=t.LABEL_OPTIONAL)
    kp = fdp.message_type.add(name="Kp")
    kp.field.add(name="id", number=1, type=t.TYPE_INT32, label=t.LABEL_OPTIONAL)
    kp.field.add(name="label", number=2, type=t.TYPE_STRING, label=t.LABEL_OPTIONAL)
    item.field.add(
        name="keypoints",
        number=4,
        type=t.TYPE_MESSAGE,
        label=t.LABEL_REPEATED,
        type_name=".lmtest.Kp",
    )
    top = fdp.message_type.add(name="Map")
    top.field.add(
        name="item", number=1, type=t.TYPE_MESSAGE, label=t.LABEL_REPEATED, type_name=".lmtest.Item"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    cls = GetMessageClass(pool.FindMessageTypeByName("lmtest.Map"))
    ours = LabelMap(
        [
            LabelMapItem(1, 'a "quoted" name', display_name="A\\B"),
            LabelMapItem(7, "é", keypoints=(Keypoint(0, "nose"),)),
        ]
    )
    msg = text_format.Parse(ours.to_text(), cls())
    assert [(i.id, i.name, i.display_name) for i in msg.item] == [
        (1, 'a "quoted" name', "A\\B"),
        (7, "é", ""),
    ]
    assert msg.item[1].keypoints[0].label == "nose"
    # and protobuf's own output parses back to the same map
    assert parse_label_map(text_format.MessageToString(msg)).to_dict() == ours.to_dict()


def test_spellings_comments_and_escapes() -> None:
    text = (
        "# a comment\n"
        'item: { id: 2, name: "b\\"q" ; }\n'
        "item < id: 1 name: 'a' 'b' >\n"
        "item {\n  id: 3 name: 'x' frequency: FREQUENT ancestor_ids: [1, 2]\n}"
    )
    lm = parse_label_map(text)
    assert lm.to_dict() == {'b"q': 2, "ab": 1, "x": 3}
    extra = dict(lm.items[2].extra)
    assert extra["frequency"] == "FREQUENT"
    # unknown fields survive a write
    again = parse_label_map(lm.to_text())
    assert [(k, v) for k, v in again.items[2].extra] == list(lm.items[2].extra)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("item { id: 1 name: 'a' ", "missing '}'"),
        ("item { name: 'a' }", "0 'id' fields"),
        ("item { id: 1 name: 'a' } item { id: 1 name: 'b' }", "id 1 is used twice"),
        ("item { id: 1 name: 'a' } item { id: 2 name: 'a' }", "name 'a' is used twice"),
        ("item { id: 0 name: 'a' }", "reserved for the background"),
        ("label { id: 1 }", "unexpected top-level field 'label'"),
        ("item { id: 'one' name: 'a' }", "id must be an integer"),
        ("item { id: 1 name: 'a }", "line 1"),
    ],
)
def test_invalid_maps_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.pbtxt"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=r"bad\.pbtxt") as info:
        read_label_map(path)
    assert message in str(info.value)


def test_background_item_allowed_and_ignored() -> None:
    lm = parse_label_map("item { id: 0 name: 'background' } item { id: 1 name: 'cat' }")
    assert lm.to_dict() == {"cat": 1}
    assert len(lm) == 1


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="not found"):
        read_label_map(tmp_path / "nope.pbtxt")


def test_from_names_and_with_names() -> None:
    lm = LabelMap.from_names(["dog", "cat", "dog"])
    assert lm.to_dict() == {"cat": 1, "dog": 2}
    gap = parse_label_map("item { id: 5 name: 'a' }")
    assert gap.with_names(["b", "a"]).to_dict() == {"a": 5, "b": 6}

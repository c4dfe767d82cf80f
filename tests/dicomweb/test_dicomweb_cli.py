"""``tilestream dicomweb list``: the whole-slide series of a real Orthanc, as a table or a slide
list that ``tilestream extract`` takes; unreachable, not-DICOMweb and refusing servers; secrets.
"""

from __future__ import annotations

import csv
import http.server
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from tilestream.cli import cmd_dicomweb, main
from tilestream.testing.orthanc import OrthancServer, free_port

USER, PASSWORD, TOKEN = "reader", "pw-Zq81-secret", "tok-Zq81-secret"
SECRETS = (PASSWORD, TOKEN)
ENV = ("TOKEN", "TOKEN_FILE", "USER", "PASSWORD", "PASSWORD_FILE")


@pytest.fixture(autouse=True)
def _wide_console_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """A console wide enough for 64-character UIDs on one line; no credentials from outside."""
    monkeypatch.setattr(cmd_dicomweb, "console", Console(width=320))
    for name in ENV:
        monkeypatch.delenv(f"TILESTREAM_DICOMWEB_{name}", raising=False)


@pytest.fixture(scope="module")
def auth_server(
    tmp_path_factory: pytest.TempPathFactory, orthanc_server: OrthancServer, slides_dir: Path
) -> Iterator[OrthancServer]:
    """A second Orthanc that asks for basic auth, holding the boxes series."""
    with OrthancServer(tmp_path_factory.mktemp("auth"), users={USER: PASSWORD}) as server:
        server.upload([slides_dir / "dicom-openslide-boxes"])
        yield server


class _NotDicomWeb(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><body>a web page, not DICOMweb</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web_page() -> Iterator[str]:
    """An HTTP server on loopback that answers every request with an HTML page."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotDicomWeb)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    finally:
        server.shutdown()
        server.server_close()


#: Extraction options for the small boxes series (8 px tiles, every tile kept, one worker).
BOXES_EXTRACT = [
    "--tile-px",
    "8",
    "--tile-um",
    "4",
    "--tissue",
    "none",
    "--workers",
    "1",
    "--no-progress",
]


def _list(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["dicomweb", "list", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_prints_the_whole_slide_series_with_size_levels_and_mpp(
    orthanc, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _list(capsys, orthanc.server.dicomweb_url)
    assert code == 0, err
    for name in ("openslide-boxes", "pathml-small_dicom", "highdicom-jpegls"):
        ref = orthanc.series[name]
        line = next(line for line in out.splitlines() if ref.series_uid in line)
        assert ref.study_uid in line
    boxes = next(
        line for line in out.splitlines() if orthanc.series["openslide-boxes"].series_uid in line
    )
    assert "16 x 16" in boxes and "0.499" in boxes and "│      1 │" in boxes
    assert f"{len(orthanc.series)} series" in out


def test_list_of_one_study_by_option_or_url(orthanc, capsys: pytest.CaptureFixture[str]) -> None:
    ref = orthanc.series["pathml-small_dicom"]
    root = orthanc.server.dicomweb_url
    for args in ([root, "--study", ref.study_uid], [f"{root}/studies/{ref.study_uid}"]):
        code, out, err = _list(capsys, *args)
        assert code == 0, err
        assert ref.series_uid in out and "3236 x 2638" in out and "1 series" in out
        assert orthanc.series["openslide-boxes"].series_uid not in out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_list_csv_is_a_slide_list_that_extract_takes(
    orthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "series.csv"
    code, out, err = _list(capsys, orthanc.server.dicomweb_url, "--csv", str(listing))
    assert code == 0, err
    rows = _rows(listing)
    assert f"{len(rows)} series written" in out
    by_series = {r["series_uid"]: r for r in rows}
    for name, ref in orthanc.series.items():
        row = by_series[ref.series_uid]
        assert row["slide"] == orthanc.url(name) and row["name"] == ref.series_uid, name
    boxes = by_series[orthanc.series["openslide-boxes"].series_uid]
    assert (boxes["width"], boxes["height"], boxes["levels"], boxes["um_per_px"]) == (
        "16", "16", "1", "0.499",
    )  # fmt: skip

    # the list of one study, fed back to tilestream extract
    ref = orthanc.series["openslide-boxes"]
    one = tmp_path / "boxes.csv"
    assert (
        _list(capsys, orthanc.server.dicomweb_url, "--study", ref.study_uid, "--csv", str(one))[0]
        == 0
    )
    assert main(["extract", str(one), "--out", str(tmp_path / "out"), *BOXES_EXTRACT]) == 0
    run = tmp_path / "out" / "8px_4um"
    state = json.loads((run / "state" / f"{ref.series_uid}.json").read_text())
    assert state["status"] == "done" and state["tiles"] > 0
    assert state["path"] == orthanc.url("openslide-boxes")
    assert (run / f"{ref.series_uid}.tfrecords").is_file()


def test_extract_takes_a_url_argument(orthanc, tmp_path: Path) -> None:
    ref = orthanc.series["openslide-boxes"]
    url = orthanc.url("openslide-boxes")
    assert main(["extract", url, "--out", str(tmp_path), *BOXES_EXTRACT]) == 0
    state = json.loads((tmp_path / "8px_4um" / "state" / f"{ref.series_uid}.json").read_text())
    assert state["status"] == "done" and state["path"] == url


def test_csv_to_standard_output(orthanc, capsys: pytest.CaptureFixture[str]) -> None:
    ref = orthanc.series["openslide-boxes"]
    code, out, _ = _list(
        capsys, orthanc.server.dicomweb_url, "--study", ref.study_uid, "--csv", "-"
    )
    assert code == 0
    header, row = out.splitlines()
    assert header.startswith("slide,name,") and row.startswith(orthanc.url("openslide-boxes") + ",")


def test_a_csv_that_is_not_csv_is_refused(
    orthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "series.txt"
    _assert_clean_error(
        *_list(capsys, orthanc.server.dicomweb_url, "--csv", str(out)), ".csv", str(out)
    )
    assert not out.exists()


def _assert_clean_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 1
    assert "Traceback" not in out + err
    assert err.startswith("error: "), err
    for needle in needles:
        assert needle in err, (needle, err)


def test_an_unreachable_server_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    _assert_clean_error(*_list(capsys, url), url, "cannot")


def test_a_server_that_is_not_dicomweb_is_one_clear_error(
    web_page: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _assert_clean_error(*_list(capsys, web_page), web_page, "DICOMweb")


def test_orthancs_own_rest_api_is_not_taken_for_dicomweb(
    orthanc, capsys: pytest.CaptureFixture[str]
) -> None:
    # Orthanc's REST root answers /series with a JSON list of its own identifiers
    root = orthanc.server.url
    _assert_clean_error(*_list(capsys, root), root, "does not speak DICOMweb")


def test_a_url_that_is_not_http_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    _assert_clean_error(*_list(capsys, "ftp://127.0.0.1/dicom-web"), "not a DICOMweb URL")


def test_401_says_to_set_credentials_and_shows_none(
    auth_server: OrthancServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _assert_clean_error(*_list(capsys, auth_server.dicomweb_url), "401", "TILESTREAM_DICOMWEB_")
    monkeypatch.setenv("TILESTREAM_DICOMWEB_USER", USER)
    monkeypatch.setenv("TILESTREAM_DICOMWEB_PASSWORD", "wrong-" + PASSWORD)
    code, out, err = _list(capsys, auth_server.dicomweb_url)
    _assert_clean_error(code, out, err, "401")
    assert PASSWORD not in out + err
    # credentials in the URL are used, never shown
    url = auth_server.dicomweb_url.replace("http://", f"http://{USER}:{PASSWORD}@")
    monkeypatch.delenv("TILESTREAM_DICOMWEB_USER")
    monkeypatch.delenv("TILESTREAM_DICOMWEB_PASSWORD")
    code, out, err = _list(capsys, url)
    assert code == 0, err
    assert PASSWORD not in out + err and "1 series" in out


def test_credentials_reach_no_file_log_or_output_of_a_run(
    auth_server: OrthancServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TILESTREAM_DICOMWEB_USER", USER)
    monkeypatch.setenv("TILESTREAM_DICOMWEB_PASSWORD", PASSWORD)
    listing = tmp_path / "series.csv"
    with caplog.at_level(logging.DEBUG):
        assert _list(capsys, auth_server.dicomweb_url, "--csv", str(listing))[0] == 0
        printed = "".join(capsys.readouterr())
        args = ["--tile-px", "8", "--tile-um", "4", "--tissue", "none", "--workers", "1"]
        code = main(["-vv", "extract", str(listing), "--out", str(tmp_path / "out"), *args])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    texts = {"printed": printed + out + err, "logs": caplog.text}
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    assert any(p.endswith(".tfrecords") for p in texts)
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, where

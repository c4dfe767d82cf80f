"""DICOMweb credentials against a real Orthanc with HTTP basic auth: from the environment, a
file, the options object and the URL; refused credentials; secrets never shown or logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import missing
from dicomweb.dicomweb_testing import CountingProxy, require_wsidicom
from tilestream.errors import ConfigError, SlideAccessDeniedError
from tilestream.slide import open_slide
from tilestream.slide.dicomweb import DicomWebAuth, DicomWebOptions, list_series
from tilestream.testing.orthanc import OrthancServer, orthanc_binary, plugin_path

pytestmark = pytest.mark.testdata
require_wsidicom()

USER, PASSWORD = "reader", "S3cr3t-pw"
ENV = (
    "TILESTREAM_DICOMWEB_TOKEN",
    "TILESTREAM_DICOMWEB_TOKEN_FILE",
    "TILESTREAM_DICOMWEB_USER",
    "TILESTREAM_DICOMWEB_PASSWORD",
    "TILESTREAM_DICOMWEB_PASSWORD_FILE",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, slides_dir: Path) -> Iterator[str]:
    """An Orthanc requiring basic auth, holding boxes; yields the series URL (no credentials)."""
    if orthanc_binary() is None or plugin_path("dicomweb") is None:
        missing("Orthanc with its DICOMweb plugin is not installed")
    workdir = tmp_path_factory.mktemp("orthanc-auth")
    with OrthancServer(workdir, users={USER: PASSWORD}) as server:
        (ref,) = server.upload([slides_dir / "dicom-openslide-boxes"])
        yield ref.url(server.dicomweb_url)


def _no_secret(text: str) -> None:
    assert PASSWORD not in text and "t0ken-value" not in text


def test_without_credentials_access_is_denied(secured, caplog) -> None:
    with (
        caplog.at_level(logging.DEBUG),
        pytest.raises(SlideAccessDeniedError, match="HTTP 401") as info,
    ):
        open_slide(secured)
    assert secured in str(info.value) and "TILESTREAM_DICOMWEB_TOKEN" in str(info.value)
    assert isinstance(info.value, PermissionError)


def test_basic_auth_from_the_environment(secured, monkeypatch, caplog) -> None:
    monkeypatch.setenv("TILESTREAM_DICOMWEB_USER", USER)
    monkeypatch.setenv("TILESTREAM_DICOMWEB_PASSWORD", PASSWORD)
    with caplog.at_level(logging.DEBUG), open_slide(secured) as slide:
        assert slide.dimensions == (16, 16)
        slide.read_region((0, 0), 0, (16, 16))
        _no_secret(repr(slide) + str(slide.path) + str(dict(slide.properties)))
    _no_secret(caplog.text)


def test_password_from_a_file(secured, monkeypatch, tmp_path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    monkeypatch.setenv("TILESTREAM_DICOMWEB_USER", USER)
    monkeypatch.setenv("TILESTREAM_DICOMWEB_PASSWORD_FILE", str(secret))
    with open_slide(secured) as slide:
        assert slide.mpp == pytest.approx((0.499, 0.499))


def test_a_missing_secret_file_is_a_config_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TILESTREAM_DICOMWEB_TOKEN_FILE", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="TILESTREAM_DICOMWEB_TOKEN_FILE"):
        DicomWebAuth.from_env()


def test_a_wrong_password_is_denied_and_not_echoed(secured, monkeypatch, caplog) -> None:
    monkeypatch.setenv("TILESTREAM_DICOMWEB_USER", USER)
    monkeypatch.setenv("TILESTREAM_DICOMWEB_PASSWORD", "t0ken-value")
    with caplog.at_level(logging.DEBUG), pytest.raises(SlideAccessDeniedError) as info:
        open_slide(secured)
    _no_secret(str(info.value) + repr(info.value) + caplog.text)


def test_the_options_object_and_its_repr(secured) -> None:
    options = DicomWebOptions(auth=DicomWebAuth(username=USER, password=PASSWORD))
    _no_secret(repr(options))
    with open_slide(secured, dicomweb=options) as slide:
        assert slide.backend == "dicomweb"
    found = list_series(secured.split("/studies/")[0].removeprefix("dicomweb+"), auth=options.auth)
    assert [s.url for s in found] == [secured]
    with pytest.raises(SlideAccessDeniedError):
        list_series(secured.split("/studies/")[0].removeprefix("dicomweb+"))


def test_userinfo_in_the_url(secured) -> None:
    with open_slide(secured.replace("http://", f"http://{USER}:{PASSWORD}@")) as slide:
        assert slide.path == secured
        _no_secret(repr(slide))


def test_a_bearer_token_is_sent_and_never_shown(secured, monkeypatch, caplog) -> None:
    """Orthanc's basic auth refuses a bearer token (403/401): the header went, the token did not leak."""
    proxy = CountingProxy(secured.removeprefix("dicomweb+"))
    try:
        monkeypatch.setenv("TILESTREAM_DICOMWEB_TOKEN", "t0ken-value")
        with caplog.at_level(logging.DEBUG), pytest.raises(SlideAccessDeniedError) as info:
            open_slide(proxy.url(secured))
        assert proxy.headers[0].get("Authorization") == "Bearer t0ken-value"
        _no_secret(str(info.value) + caplog.text)
    finally:
        proxy.close()


def test_token_and_user_together_are_refused(monkeypatch) -> None:
    monkeypatch.setenv("TILESTREAM_DICOMWEB_TOKEN", "t0ken-value")
    monkeypatch.setenv("TILESTREAM_DICOMWEB_USER", USER)
    monkeypatch.setenv("TILESTREAM_DICOMWEB_PASSWORD", PASSWORD)
    with pytest.raises(ConfigError, match="not both") as info:
        DicomWebAuth.from_env()
    _no_secret(str(info.value))

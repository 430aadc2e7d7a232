import pytest

from git_theta_like.errors import ManifestError
from git_theta_like.manifest import Manifest, ObjectRef, TensorEntry, escape_name, unescape_name

H1, H2 = "a" * 64, "b" * 64


def sample() -> Manifest:
    ref = ObjectRef(H1, H2, 10, "planes")
    return Manifest(
        "safetensors",
        8 + 12 + 4,
        8,
        ref,
        [TensorEntry("w 1", "F32", (3,), 8, 12, ref), TensorEntry("s", "F32", (), 20, 4, ref)],
    )


def test_round_trip_is_deterministic() -> None:
    m = sample()
    text = m.to_text()
    assert Manifest.from_text(text).to_text() == text
    assert text.splitlines()[0] == "git-theta-like manifest v1 format=safetensors size=24"
    assert "tensor w%201 F32 [3] 8 12 " in text
    assert "tensor s F32 [] 20 4 " in text


@pytest.mark.parametrize("name", ["", "a b", "100%", '"q"', "tab\there", "new\nline", "ünï.çødé", "x=y"])
def test_names_escape_and_unescape(name: str) -> None:
    esc = escape_name(name)
    assert " " not in esc and "\n" not in esc and esc
    assert unescape_name(esc) == name


def test_extra_fields_are_kept() -> None:
    text = sample().to_text().replace(" planes\n", " planes depth=2\n", 1)
    assert Manifest.from_text(text).to_text() == text


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.replace("v1", "v9"), "newer than this"),
        (lambda t: t.replace("size=24", "size=99"), "do not add up"),
        (lambda t: t + "<<<<<<< HEAD\n", "merge-conflict marker"),
        (lambda t: t.replace(" 12 ", " x ", 1), "malformed"),
        (lambda t: "hello\n", "not a git-theta-like manifest"),
        (lambda t: t.replace(H2, "z" * 64, 1), "hex"),
    ],
)
def test_bad_manifests_name_the_problem(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ManifestError, match=message):
        Manifest.from_text(mutate(sample().to_text()))

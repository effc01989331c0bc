from __future__ import annotations

import pytest

from workflow_core import Version, VersionError


def test_semver_order_is_numeric_not_lexical() -> None:
    assert Version.parse("1.10.0") > Version.parse("1.9.0")
    assert Version.parse("2.0.0") > Version.parse("1.99.99")
    assert max(["1.9.0", "1.10.0", "1.2.3"], key=Version.parse) == "1.10.0"


def test_prereleases_sort_before_their_release() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
    ]
    parsed = [Version.parse(v) for v in ordered]
    shuffled = parsed[3:] + parsed[:3]
    assert sorted(shuffled) == parsed


def test_build_metadata_is_kept_but_ignored_in_comparison() -> None:
    assert Version.parse("1.0.0+build.5") == Version.parse("1.0.0")
    assert str(Version.parse("1.0.0-rc.1+build.5")) == "1.0.0-rc.1+build.5"


@pytest.mark.parametrize("text", ["1", "1.0", "01.0.0", "1.0.0-", "v1.0.0", "1.0.0.0", "", "1.0.0-01"])
def test_invalid_versions_are_rejected(text: str) -> None:
    with pytest.raises(VersionError):
        Version.parse(text)
    assert not Version.is_valid(text)

"""Fetching and unpacking .debs: cache reuse, apt-get update only when needed, idempotent unpack."""
from __future__ import annotations

import shutil
import subprocess

import pytest
from fake_packages import make_deb

from gmm_perception.data import debian
from gmm_perception.data.debian import deb_version, fetch_deb, unpack_deb


class FakeApt:
    """Stands in for subprocess.run: records apt-get calls, answers from a script."""

    def __init__(self, results: list[tuple[int, str]]):
        self.results = results
        self.calls: list[list[str]] = []

    def __call__(self, argv, cwd=None, **kwargs):
        self.calls.append([argv[1], *argv[2:]])
        code, stderr = self.results.pop(0)
        if code == 0 and argv[1] == "download":
            (cwd / f"{argv[2]}_1.0_all.deb").write_bytes(b"deb")
        return subprocess.CompletedProcess(argv, code, "", stderr)


@pytest.fixture
def apt(monkeypatch):
    def install(results: list[tuple[int, str]]) -> FakeApt:
        fake = FakeApt(results)
        monkeypatch.setattr(debian.shutil, "which", lambda tool: f"/usr/bin/{tool}")
        monkeypatch.setattr(debian.subprocess, "run", fake)
        return fake
    return install


def test_fetch_reuses_a_cached_deb(apt, tmp_path):
    fake = apt([])
    (tmp_path / "pkg_2.0_all.deb").write_bytes(b"deb")
    assert fetch_deb("pkg", tmp_path) == tmp_path / "pkg_2.0_all.deb"
    assert fake.calls == []


def test_fetch_downloads_without_update_when_lists_are_there(apt, tmp_path):
    fake = apt([(0, "")])
    assert fetch_deb("pkg", tmp_path / "cache") == tmp_path / "cache" / "pkg_1.0_all.deb"
    assert fake.calls == [["download", "pkg"]]


def test_fetch_updates_the_lists_once_when_the_package_is_unknown(apt, tmp_path):
    fake = apt([(100, "E: Unable to locate package pkg"), (0, ""), (0, "")])
    assert fetch_deb("pkg", tmp_path).name == "pkg_1.0_all.deb"
    assert fake.calls == [["download", "pkg"], ["update"], ["download", "pkg"]]


def test_fetch_reports_other_failures_without_update(apt, tmp_path):
    fake = apt([(100, "E: Could not resolve 'deb.debian.org'")])
    with pytest.raises(RuntimeError, match="Could not resolve"):
        fetch_deb("pkg", tmp_path)
    assert fake.calls == [["download", "pkg"]]


def test_fetch_without_apt_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(debian.shutil, "which", lambda tool: None)
    with pytest.raises(RuntimeError, match="'apt-get' not found"):
        fetch_deb("pkg", tmp_path)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg and dpkg-deb")
def test_unpack_is_idempotent_and_replaces_another_version(tmp_path):
    tree = tmp_path / "tree"
    (tree / "usr/share/pkg").mkdir(parents=True)
    (tree / "usr/share/pkg/data.txt").write_text("one")
    debs = tmp_path / "debs"
    debs.mkdir()
    deb1 = make_deb(tree, "pkg", "1.0", debs)
    assert deb_version(deb1) == "1.0"
    dest = unpack_deb(deb1, tmp_path / "unpacked")
    data = dest / "usr/share/pkg/data.txt"
    assert data.read_text() == "one"
    data.write_text("touched")
    unpack_deb(deb1, dest)  # already there: left alone
    assert data.read_text() == "touched"
    (tree / "usr/share/pkg/data.txt").unlink()
    (tree / "usr/share/pkg/new.txt").write_text("two")
    unpack_deb(make_deb(tree, "pkg", "2.0", debs), dest)
    assert not data.exists() and (dest / "usr/share/pkg/new.txt").read_text() == "two"

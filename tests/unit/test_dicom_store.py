"""The content store: objects named by their sha256, immutable, never half visible."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from dicom.errors import InvalidDigest, ObjectNotFound
from dicom.store import ContentStore, StoredObject


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "store")


def _staging_entries(store: ContentStore) -> list[Path]:
    return list((store.root / "staging").iterdir())


def test_writer_commits_an_object_named_by_its_sha256(store: ContentStore) -> None:
    data = [b"DICM" * 1000, b"more bytes", b""]
    with store.writer() as writer:
        for chunk in data:
            writer.write(chunk)
        assert writer.size == sum(map(len, data))
        stored = writer.commit()

    digest = hashlib.sha256(b"".join(data)).hexdigest()
    assert stored == StoredObject(digest, 4010, store.path(digest))
    assert stored.path == store.root / "objects" / digest[:2] / digest[2:4] / digest
    assert stored.path.read_bytes() == b"".join(data)
    assert store.exists(digest)
    assert not stat.S_IMODE(stored.path.stat().st_mode) & 0o222  # read-only
    assert _staging_entries(store) == []
    with store.open(digest) as stream:
        assert stream.read() == b"".join(data)


def test_leaving_the_block_without_commit_removes_the_partial_file(store: ContentStore) -> None:
    with store.writer() as writer:
        writer.write(b"half a study")
        assert len(_staging_entries(store)) == 1
    assert _staging_entries(store) == []
    assert list((store.root / "objects").rglob("*")) == []


def test_an_exception_in_the_block_removes_the_partial_file(store: ContentStore) -> None:
    with pytest.raises(ConnectionResetError), store.writer() as writer:
        writer.write(b"first part")
        raise ConnectionResetError
    assert _staging_entries(store) == []


def test_writing_after_commit_is_refused(store: ContentStore) -> None:
    with store.writer() as writer:
        writer.write(b"x")
        writer.commit()
        with pytest.raises(RuntimeError):
            writer.write(b"y")
        with pytest.raises(RuntimeError):
            writer.commit()


def test_same_content_twice_is_one_object(store: ContentStore) -> None:
    first = store.staging_file()
    second = store.staging_file()
    assert first != second
    assert first.parent == second.parent == store.root / "staging"
    first.write_bytes(b"same instance")
    second.write_bytes(b"same instance")

    one, other = store.put_file(first), store.put_file(second)

    assert one == other
    assert not first.exists() and not second.exists()
    assert [p for p in (store.root / "objects").rglob("*") if p.is_file()] == [one.path]


def test_put_file_moves_a_staged_file(store: ContentStore) -> None:
    staged = store.staging_file()
    staged.write_bytes(b"\x00" * 5000)
    stored = store.put_file(staged)
    assert not staged.exists()
    assert stored.size == 5000
    assert stored.digest == hashlib.sha256(b"\x00" * 5000).hexdigest()


def test_put_file_copies_a_file_from_elsewhere_and_leaves_it(
    store: ContentStore, tmp_path: Path
) -> None:
    outside = tmp_path / "cd" / "IMAGE001"
    outside.parent.mkdir()
    outside.write_bytes(b"from a patient CD")
    stored = store.put_file(outside)
    assert outside.read_bytes() == b"from a patient CD"
    assert stored.path.read_bytes() == b"from a patient CD"
    assert _staging_entries(store) == []


def test_unknown_and_malformed_digests(store: ContentStore) -> None:
    missing = "0" * 64
    assert not store.exists(missing)
    with pytest.raises(ObjectNotFound) as caught:
        store.open(missing)
    assert caught.value.digest == missing
    for bad in ("../../etc/passwd", "A" * 64, "0" * 63, "", "0" * 64 + "/x"):
        assert not store.exists(bad)
        with pytest.raises(InvalidDigest):
            store.path(bad)
        with pytest.raises(ValueError):  # InvalidDigest is a ValueError too
            store.open(bad)


def test_a_store_that_is_not_durable_still_publishes_whole_files(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "fast", durable=False)
    with store.writer() as writer:
        writer.write(os.urandom(3000))
        stored = writer.commit()
    assert stored.path.stat().st_size == 3000


def test_link_file_gives_a_file_a_second_name_under_its_digest(store: ContentStore) -> None:
    accepted = store.root / "accepted" / "7" / "instance.dcm"
    accepted.parent.mkdir(parents=True)
    accepted.write_bytes(b"DICM" * 2000)
    folders: set[Path] = set()
    stored = store.link_file(accepted, folders=folders)
    assert stored.digest == hashlib.sha256(b"DICM" * 2000).hexdigest()
    assert stored.size == 8000 and stored.path.read_bytes() == b"DICM" * 2000
    assert accepted.is_file()  # the first name stays until the caller removes it
    assert os.path.samefile(accepted, stored.path)
    assert not stat.S_IMODE(stored.path.stat().st_mode) & 0o222  # read-only
    # The folders whose entries changed, for the caller to flush: the new object's
    # folder and, since they were created, their parents.
    assert folders == {stored.path.parent, stored.path.parent.parent, store.root / "objects"}
    store.sync_folders(folders)


def test_link_file_of_content_already_stored_is_that_object(store: ContentStore) -> None:
    first, second = store.root / "a.dcm", store.root / "b.dcm"
    first.write_bytes(b"same")
    second.write_bytes(b"same")
    one = store.link_file(first)
    two = store.link_file(second)
    assert one == two
    assert os.path.samefile(one.path, first) and not os.path.samefile(one.path, second)


def test_fsync_all_flushes_files_and_folders_one_by_one_or_concurrently(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from dicom.store import fsync_all

    paths = [tmp_path / f"{n}.bin" for n in range(5)]
    for path in paths:
        path.write_bytes(b"x")
    fsync_all([*paths, tmp_path])
    with ThreadPoolExecutor(4) as executor:
        fsync_all([*paths, tmp_path], executor)
        with pytest.raises(FileNotFoundError):
            fsync_all([tmp_path / "absent", *paths], executor)

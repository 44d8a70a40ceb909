"""Storage SCPs of several processes on one store (hub.imaging.accepted_lease): a process
starting recovers the accepted folders of processes that are gone, never a live one's.

A live sibling is simulated by holding its folder's lock on another open file (flock
locks belong to the open file, so this process's own second open is refused as another
process's would be). The indexer is a stand-in that records which folders it recovers."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from hub.imaging.accepted_lease import AcceptedFolderLease


class RecordingIndexer:
    def __init__(self, folder: Path, recovered: list[Path]) -> None:
        self.folder = folder
        self.recovered = recovered

    def recover(self) -> int:
        self.recovered.append(self.folder)
        found = 0
        for transfer in self.folder.iterdir():
            if transfer.is_dir() and transfer.name.isdigit():
                found += len(list(transfer.iterdir()))
                for path in transfer.iterdir():
                    path.unlink()
                transfer.rmdir()
        return found


def owner(root: Path, name: str, *, alive: bool) -> tuple[Path, int | None]:
    """An owner folder with one accepted instance; its lock held if `alive`."""
    folder = root / "accepted" / f"owner-{name}"
    (folder / "7").mkdir(parents=True)
    (folder / "7" / "instance.dcm").write_bytes(b"DICM")
    descriptor = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    if alive:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        return folder, descriptor
    os.close(descriptor)
    return folder, None


def test_a_new_process_recovers_the_dead_and_leaves_the_living(tmp_path: Path) -> None:
    dead, _ = owner(tmp_path, "dead", alive=False)
    live, held = owner(tmp_path, "live", alive=True)
    recovered: list[Path] = []
    lease = AcceptedFolderLease.claim(
        tmp_path,
        lambda folder: RecordingIndexer(folder, recovered),  # type: ignore[arg-type,return-value]
    )
    try:
        assert dead in recovered and not dead.exists()  # indexed, then given up
        assert live not in recovered
        assert (live / "7" / "instance.dcm").exists()  # the sibling's, untouched
        assert lease.folder.is_dir() and lease.folder not in (dead, live)
        assert tmp_path / "accepted" in recovered  # the layout of a process not sharing
    finally:
        lease.release()
        assert held is not None
        os.close(held)
    assert not lease.folder.exists()  # empty: removed with its lock


def test_a_live_lease_is_not_recovered_by_the_next_process(tmp_path: Path) -> None:
    recovered: list[Path] = []

    def make(folder: Path) -> RecordingIndexer:
        return RecordingIndexer(folder, recovered)

    first = AcceptedFolderLease.claim(tmp_path, make)  # type: ignore[arg-type]
    (first.folder / "3").mkdir()
    (first.folder / "3" / "instance.dcm").write_bytes(b"DICM")
    second = AcceptedFolderLease.claim(tmp_path, make)  # type: ignore[arg-type]
    try:
        assert first.folder not in recovered
        assert (first.folder / "3" / "instance.dcm").exists()
    finally:
        second.release()
        first.release()
    assert first.folder.exists()  # not empty: kept for the next start's recovery

"""Patient CDs and USB sticks: a DICOMDIR folder, or a zip of one, imported as one transfer.

When the media has a DICOMDIR, the files it lists are imported (a CD also carries a viewer
and its files, which are not DICOM); without one, every file is tried. Each file is copied
to staging in chunks and goes through the same checks and reconciliation as any other
arrival; the transfer's report says, file by file, what was refused and why. A zip is read
member by member, never extracted whole, within limits against archives that expand
without end.
"""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from hub.errors import InvalidRequest
from hub.imaging.importer import DicomImporter, TransferSummary

_Opener = Callable[[str], IO[bytes]]
MAX_MEMBERS = 100_000
MAX_EXPANDED_BYTES = 64 * 1024**3  # a large MR study on a DVD is a few GB; 64 GB is absurd
_CHUNK = 1024 * 1024


@dataclass
class MediaReport:
    """What a medium held: the transfer's summary, and what was left aside as not DICOM."""

    summary: TransferSummary
    dicomdir: bool
    ignored: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "transfer": self.summary.transfer_id,
            "dicomdir": self.dicomdir,
            "accepted": self.summary.accepted,
            "rejected": self.summary.rejected,
            "studies": self.summary.studies,
            "problems": self.summary.problems,
            "ignored": self.ignored,
        }


def import_media(
    importer: DicomImporter, media: Path, *, name: str, case_task_id: str | None = None
) -> MediaReport:
    """Import a folder or a zip file; InvalidRequest when it is neither."""
    with _members(media) as (members, opener):
        listed = _dicomdir_files(members, opener)
        transfer = importer.open_transfer("media", name, case_task_id=case_task_id)
        wanted = listed if listed is not None else [m for m in members if not _is_dicomdir(m)]
        ignored = sorted(set(members) - set(wanted) - {m for m in members if _is_dicomdir(m)})
        for member in wanted:
            staged = importer.store.staging_file()
            try:
                with opener(member) as source, staged.open("wb") as target:
                    shutil.copyfileobj(source, target, _CHUNK)
            except (OSError, KeyError, zipfile.BadZipFile) as exc:
                staged.unlink(missing_ok=True)
                importer.record_refusal(transfer, member, f"cannot be read: {type(exc).__name__}")
                continue
            importer.receive(transfer, staged, name=member)
        summary = importer.close_transfer(transfer)
    return MediaReport(summary, listed is not None, ignored)


@contextmanager
def _members(media: Path) -> Iterator[tuple[list[str], _Opener]]:
    """The media's file names (relative, with /) and a way to open each."""
    if media.is_dir():
        names = sorted(p.relative_to(media).as_posix() for p in media.rglob("*") if p.is_file())
        yield names, _FolderOpener(media)
        return
    if not zipfile.is_zipfile(media):
        raise InvalidRequest("The media must be a folder or a zip file (of a patient CD).")
    with zipfile.ZipFile(media) as archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if len(infos) > MAX_MEMBERS:
            raise InvalidRequest(f"The zip holds more than {MAX_MEMBERS} files.")
        if sum(i.file_size for i in infos) > MAX_EXPANDED_BYTES:
            raise InvalidRequest("The zip expands beyond what a patient CD can hold.")
        yield sorted(i.filename for i in infos), archive.open


class _FolderOpener:
    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, name: str) -> IO[bytes]:
        return (self.root / name).open("rb")


def _is_dicomdir(name: str) -> bool:
    return PurePosixPath(name).name.upper() == "DICOMDIR"


def _dicomdir_files(members: list[str], opener: _Opener) -> list[str] | None:
    """The members a DICOMDIR lists (PS3.10 file IDs, matched without regard to case, as
    on ISO 9660 media), or None when there is no readable DICOMDIR."""
    dicomdirs = [m for m in members if _is_dicomdir(m)]
    if not dicomdirs:
        return None
    location = dicomdirs[0]
    base = PurePosixPath(location).parent
    with opener(location) as handle:
        try:
            directory = dcmread(handle, stop_before_pixels=True)
        except (InvalidDicomError, EOFError, ValueError):
            return None
    by_upper = {m.upper(): m for m in members}
    listed: list[str] = []
    for record in directory.get("DirectoryRecordSequence", []):
        parts = record.get("ReferencedFileID")
        if not parts:
            continue
        components = [parts] if isinstance(parts, str) else [str(p) for p in parts]
        member = by_upper.get(PurePosixPath(base, *components).as_posix().upper())
        if member is not None:
            listed.append(member)
    return listed


def process_media_folder(
    importer: DicomImporter, folder: Path, *, settle_seconds: float = 5.0
) -> int:
    """Import each zip or CD folder dropped in `folder`; move it to done/ (or failed/, when
    it is neither a zip nor a folder) with `<name>.report.json`. Something changed in the
    last `settle_seconds` may still be being copied: left for the next pass."""
    done, failed = folder / "done", folder / "failed"
    done.mkdir(parents=True, exist_ok=True)
    failed.mkdir(parents=True, exist_ok=True)
    settled = time.time() - settle_seconds
    processed = 0
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path in (done, failed) or _newest(path) > settled:
            continue
        try:
            report: dict[str, object] = import_media(importer, path, name=path.name).to_json()
            target = done
        except InvalidRequest as exc:
            report, target = {"error": exc.diagnostics}, failed
        (target / f"{path.name}.report.json").write_text(json.dumps(report, indent=2))
        path.replace(target / path.name)
        processed += 1
    return processed


def _newest(path: Path) -> float:
    if path.is_file():
        return path.stat().st_mtime
    return max((p.stat().st_mtime for p in path.rglob("*")), default=path.stat().st_mtime)

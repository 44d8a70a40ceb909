"""A real outside PACS for the DICOM tests: Debian's Orthanc with its DICOMweb plugin.

The `orthanc` fixture starts one Orthanc per test session on loopback, from its own JSON
configuration in a temporary folder (free HTTP and DICOM ports, its own storage and index,
HTTP basic auth, DICOMweb at /dicom-web/), and stops it at the end. Installing it is
scripts/ensure_dicom_peers.sh's job; an Orthanc that cannot start fails the tests with its
log, it never skips them. Outside modalities (dcmtk) may C-ECHO and C-STORE without being
declared, as most PACS allow; C-FIND, C-MOVE and C-GET need a modality declared through
`OrthancPeer.set_modality`, as a real PACS administrator would do for the hub.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

AET = "OUTSIDE_PACS"
START_GUARD_SECONDS = 60.0  # a guard against a hung start, not a performance expectation
STOP_GUARD_SECONDS = 30.0
START_ATTEMPTS = 3
# Debian's orthanc-dicomweb installs the plugin under /usr/share/orthanc/plugins (a link to
# /usr/lib/orthanc/libOrthancDicomWeb.so.<version>); the globs cover other layouts.
PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
    "/usr/lib/*/orthanc/plugins/libOrthancDicomWeb.so*",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so*",
)


class OrthancUnavailable(RuntimeError):
    """Orthanc or its DICOMweb plugin is missing, or the server did not come up."""


@dataclass(frozen=True)
class OrthancPeer:
    """How to reach the session's Orthanc: REST at `base_url`, DICOMweb at `dicomweb_url`
    (no trailing slash), both with HTTP basic `auth`; DIMSE at `host`:`dicom_port` as `aet`."""

    base_url: str
    dicomweb_url: str
    auth: tuple[str, str]
    dicom_port: int
    aet: str
    host: str
    log_path: Path

    def client(self) -> httpx.Client:
        """An httpx client on the REST API, authenticated; the caller closes it."""
        return httpx.Client(base_url=self.base_url, auth=self.auth, timeout=30.0)

    def set_modality(self, name: str, aet: str, port: int, host: str = "127.0.0.1") -> None:
        """Declare (or redeclare) a DICOM peer, e.g. the hub's Storage SCP as a C-MOVE
        destination, through the REST API so that each test can point it where it needs."""
        body = {
            "AET": aet,
            "Host": host,
            "Port": port,
            "AllowEcho": True,
            "AllowFind": True,
            "AllowMove": True,
            "AllowGet": True,
            "AllowStore": True,
        }
        with self.client() as client:
            client.put(f"/modalities/{name}", json=body).raise_for_status()

    def remove_modality(self, name: str) -> None:
        """Forget a peer declared by `set_modality` (absent ones are ignored)."""
        with self.client() as client:
            response = client.delete(f"/modalities/{name}")
            if response.status_code != 404:
                response.raise_for_status()


def orthanc_binary() -> str:
    """The Orthanc server program: $HUB_TEST_ORTHANC, or Debian's (in /usr/sbin, which a
    non-root PATH lacks)."""
    configured = os.environ.get("HUB_TEST_ORTHANC")
    found = configured or shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not os.access(found, os.X_OK):
        raise OrthancUnavailable(
            f"no Orthanc program at {found}: run scripts/ensure_dicom_peers.sh"
        )
    return found


def dicomweb_plugin() -> Path:
    """The DICOMweb plugin's shared library: $HUB_TEST_ORTHANC_DICOMWEB, or where Debian's
    orthanc-dicomweb puts it."""
    configured = os.environ.get("HUB_TEST_ORTHANC_DICOMWEB")
    candidates = [configured] if configured else list(PLUGIN_CANDIDATES)
    for pattern in candidates:
        for match in sorted(glob.glob(pattern)):
            if Path(match).is_file():
                return Path(match).resolve()
    raise OrthancUnavailable(
        f"no DICOMweb plugin in {candidates}: run scripts/ensure_dicom_peers.sh"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def orthanc_configuration(
    folder: Path, http_port: int, dicom_port: int, user: str, password: str
) -> dict[str, object]:
    """The whole configuration document: nothing is inherited from /etc/orthanc."""
    return {
        "Name": "outside-pacs-under-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "TemporaryDirectory": str(folder / "tmp"),
        "StorageCompression": False,
        "Plugins": [str(dicomweb_plugin())],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        # Orthanc 1.10 has no bind address: refusing remote HTTP clients and requiring a
        # password is what keeps the server to this machine's own tests.
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {user: password},
        "HttpDescribeErrors": True,
        "DicomServerEnabled": True,
        "DicomAet": AET,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": True,
        "DicomCheckModalityHost": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "DicomModalities": {},
        # Declared at run time through PUT /modalities/{name}: kept in this session's index.
        "DicomModalitiesInDatabase": True,
        "OrthancPeers": {},
        "UnknownSopClassAccepted": False,
        "DeidentifyLogs": True,
        "SaveJobs": False,
        "StableAge": 2,  # tests that wait for a stable study need not wait Orthanc's 60 s
        "ExecuteLuaEnabled": False,
        "RestApiWriteToFileSystemEnabled": False,
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": True,
            "WadoRoot": "/wado",
            "Ssl": False,
        },
    }


def _log_tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()  # Orthanc shuts down cleanly on SIGTERM
    try:
        process.wait(STOP_GUARD_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_GUARD_SECONDS)


def _wait_until_ready(peer: OrthancPeer, process: subprocess.Popen[bytes]) -> bool:
    """True once GET /system answers; False if Orthanc exited first (a port taken between
    our probe and its bind, for instance). Raises if it neither answers nor exits."""
    deadline = time.monotonic() + START_GUARD_SECONDS
    with peer.client() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                if client.get("/system", timeout=2.0).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise OrthancUnavailable(
        f"Orthanc did not answer GET /system within {START_GUARD_SECONDS:.0f} s; its log:\n"
        + _log_tail(peer.log_path)
    )


@contextmanager
def running_orthanc(folder: Path) -> Iterator[OrthancPeer]:
    """Start an Orthanc configured in `folder`, yield it once it answers, stop it after.

    Raises OrthancUnavailable, with the server's log, when it cannot be started or its
    DICOMweb plugin did not load."""
    binary = orthanc_binary()
    user, password = "hub-test", secrets.token_urlsafe(18)
    for attempt in range(1, START_ATTEMPTS + 1):
        http_port, dicom_port = _free_port(), _free_port()
        if http_port == dicom_port:
            continue
        config_path = folder / f"orthanc-{attempt}.json"
        log_path = folder / f"orthanc-{attempt}.log"
        configuration = orthanc_configuration(folder, http_port, dicom_port, user, password)
        config_path.write_text(json.dumps(configuration, indent=2))
        base_url = f"http://127.0.0.1:{http_port}"
        peer = OrthancPeer(
            base_url=base_url,
            dicomweb_url=f"{base_url}/dicom-web",
            auth=(user, password),
            dicom_port=dicom_port,
            aet=AET,
            host="127.0.0.1",
            log_path=log_path,
        )
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [binary, str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=folder,
            )
        try:
            if not _wait_until_ready(peer, process):
                continue
            with peer.client() as client:
                plugins = client.get("/plugins").json()
            if "dicom-web" not in plugins:
                raise OrthancUnavailable(
                    f"Orthanc started without its DICOMweb plugin (plugins: {plugins}); "
                    f"its log:\n{_log_tail(log_path)}"
                )
            yield peer
            return
        finally:
            _stop(process)
    raise OrthancUnavailable(
        f"Orthanc exited before answering, {START_ATTEMPTS} times; its last log:\n"
        + _log_tail(folder / f"orthanc-{START_ATTEMPTS}.log")
    )


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPeer]:
    """The session's outside PACS: a real Orthanc with DICOMweb on loopback."""
    try:
        with running_orthanc(tmp_path_factory.mktemp("orthanc")) as peer:
            yield peer
    except OrthancUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)

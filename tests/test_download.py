"""Downloads on loopback: verify, checksum failure, resume via Range, safe extraction, convert."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import tarfile
import threading

import nibabel as nib
import numpy as np
import pytest

from common.files import DataError
from datamodules import download as dl


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.payload`; honours `Range: bytes=N-`; `server.truncate_once` sends half."""

    def do_GET(self):  # noqa: N802 (http.server API)
        srv = self.server
        srv.requests.append(self.headers.get("Range"))
        data, start = srv.payload, 0
        rng = self.headers.get("Range")
        if rng and srv.honour_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.truncate_once:
            srv.truncate_once = False
            body = body[: len(body) // 2]
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.payload, srv.requests, srv.honour_range, srv.truncate_once = b"", [], True, False
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/file"
    yield srv
    srv.shutdown()
    srv.server_close()


def _msd_tar() -> bytes:
    """A tiny Task03_Liver.tar in the real layout (with a macOS `._` file)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        rng = np.random.default_rng(0)
        for n in range(2):
            lab = np.zeros((12, 10, 4), np.uint8)
            lab[2:8, 2:8, 1:3] = 1
            lab[4, 4, 2] = 2
            for sub, arr in (("imagesTr", rng.integers(-100, 200, lab.shape).astype(np.int16)), ("labelsTr", lab)):
                data = nib.Nifti1Image(arr, np.diag([0.8, 0.8, 2.0, 1.0])).to_bytes()
                data = gzip.compress(data)
                info = tarfile.TarInfo(f"Task03_Liver/{sub}/liver_{n}.nii.gz")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("Task03_Liver/imagesTr/._liver_0.nii.gz")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"\0\5\26\7"))
    return buf.getvalue()


def test_download_verifies_extracts_and_converts(server, tmp_path, monkeypatch, capsys):
    server.payload = _msd_tar()
    md5 = hashlib.md5(server.payload).hexdigest()
    monkeypatch.setitem(dl.SOURCES, "msd-liver", {**dl.SOURCES["msd-liver"], "url": server.url, "hash": ("md5", md5)})
    assert dl.main(["msd-liver", str(tmp_path), "--quiet"]) == 0
    assert (tmp_path / "downloads" / "Task03_Liver.tar").read_bytes() == server.payload
    meta = json.loads((tmp_path / "msd-liver" / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["channel_names"] == {"0": "CT"}
    assert "liverbench run --data" in capsys.readouterr().out
    assert dl.main(["msd-liver", str(tmp_path), "--quiet"]) == 0  # verified file reused
    assert len(server.requests) == 1


def test_checksum_mismatch_deletes_file_and_says_so(server, tmp_path, capsys):
    server.payload = b"x" * 5000
    with pytest.raises(DataError, match="md5 mismatch: expected 0+, got") as err:
        dl.fetch(server.url, tmp_path / "a.tar", ("md5", "0" * 32), progress=False)
    assert "a.tar" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # neither the partial nor the bad file is kept


def test_interrupted_download_resumes_with_range(server, tmp_path):
    server.payload = bytes(range(256)) * 400
    sha = hashlib.sha256(server.payload).hexdigest()
    server.truncate_once = True
    with pytest.raises(DataError, match="interrupted .* run again to resume"):
        dl.fetch(server.url, tmp_path / "f.zip", ("sha256", sha), progress=False)
    part = tmp_path / "f.zip.part"
    assert part.stat().st_size == len(server.payload) // 2
    out = dl.fetch(server.url, tmp_path / "f.zip", ("sha256", sha), progress=False)
    assert out.read_bytes() == server.payload and not part.exists()
    assert server.requests == [None, f"bytes={len(server.payload) // 2}-"]


def test_server_ignoring_range_restarts_and_unknown_hash_is_recorded(server, tmp_path):
    server.payload = b"abc" * 1000
    server.honour_range = False
    (tmp_path / "g.zip.part").write_bytes(b"garbage")
    out = dl.fetch(server.url, tmp_path / "g.zip", None, progress=False)
    assert out.read_bytes() == server.payload
    recorded = (tmp_path / "g.zip.sha256").read_text().split()[0]
    assert recorded == hashlib.sha256(server.payload).hexdigest()
    out.write_bytes(b"tampered")
    server.payload = b"evil" * 10
    with pytest.raises(DataError, match="sha256 mismatch"):
        dl.fetch(server.url, tmp_path / "g.zip", None, progress=False)


def test_unsafe_archive_is_refused(tmp_path):
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DataError, match="unsafe member"):
        dl.safe_extract(bad, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_unreachable_url_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="download failed"):
        dl.fetch("http://127.0.0.1:9/none", tmp_path / "x", None, progress=False, timeout=2)


def _chaos_zip(tmp_path) -> bytes:
    """A tiny CHAOS_Train_Sets.zip: one CT patient and one MR patient, as the organisers lay it out."""
    import zipfile

    from PIL import Image
    from test_dicom import write_series

    root = tmp_path / "build" / "CHAOS_Train_Sets" / "Train_Sets"
    vol = np.arange(16 * 16 * 3, dtype=np.float32).reshape(16, 16, 3)
    gt = np.zeros((16, 16), np.uint8)
    gt[3:9, 4:10] = 63
    series = {"CT/1/DICOM_anon": "CT/1/Ground", "MR/2/T2SPIR/DICOM_anon": "MR/2/T2SPIR/Ground",
              "MR/2/T1DUAL/DICOM_anon/InPhase": "MR/2/T1DUAL/Ground", "MR/2/T1DUAL/DICOM_anon/OutPhase": None}
    for dicom_dir, ground in series.items():
        write_series(root / dicom_dir, vol, modality="CT" if dicom_dir.startswith("CT") else "MR")
        for k in range(3 if ground else 0):
            (root / ground).mkdir(parents=True, exist_ok=True)
            Image.fromarray(gt).save(root / ground / f"liver_GT_{k:03d}.png")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted((tmp_path / "build").rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(tmp_path / "build").as_posix())
    return buf.getvalue()


def test_chaos_zip_download_converts_ct_and_mri(server, tmp_path, monkeypatch):
    server.payload = _chaos_zip(tmp_path)
    monkeypatch.setitem(dl.SOURCES, "chaos", {**dl.SOURCES["chaos"], "url": server.url})
    out = dl.download("chaos", tmp_path / "data", progress=False)
    assert [p.name for p in out] == ["chaos-ct", "chaos-mri"]
    ct = json.loads((out[0] / "dataset.json").read_text())
    mri = json.loads((out[1] / "dataset.json").read_text())
    assert ct["channel_names"]["0"] == "CT" and ct["numTraining"] == 1
    assert mri["channel_names"]["0"] == "MRI" and mri["numTraining"] == 3
    assert set(mri["patient_ids"].values()) == {"chaos_2"}
    recorded = (tmp_path / "data" / "downloads" / "CHAOS_Train_Sets.zip.sha256").read_text().split()[0]
    assert recorded == hashlib.sha256(server.payload).hexdigest()

"""External validation (`run --external`, `external-eval`, the real-scan table) and the devset builder."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmark import report
from benchmark.run import records, runner
from benchmark.scoring import external
from benchmark.scoring.external import load_external_set, parse_external
from benchmark.scoring.metrics import format_metric, METRIC_KEYS

REPO = Path(__file__).resolve().parents[1]
LABELS = {"background": 0, "spleen": 1, "kidney": 2, "liver": 3}  # liver is NOT the lowest label


def write_multi_organ_set(root: Path, modality: str = "ct", cases: int = 3) -> Path:
    """A few phantom cases written as a multi-organ map (spleen 1, kidney 2, liver 3) in nnU-Net raw
    layout: a reader that took "every label > 0" as liver would score spleen and kidneys too."""
    from datamodules.phantom import generate_case
    from datamodules.phantom.tissues import T

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(cases):
        case = generate_case(100 + i, "ct" if modality == "ct" else "t2", spacing=6)
        label = np.zeros(case.label.shape, np.uint8)
        label[case.tissue == T.SPLEEN] = 1
        label[np.isin(case.tissue, (T.KIDNEY_CORTEX, T.KIDNEY_MEDULLA))] = 2
        label[case.label > 0] = 3
        assert (label == 1).any() and (label == 2).any() and (label == 3).any()
        nib.save(nib.Nifti1Image(case.image, case.affine), root / "imagesTr" / f"real_{i}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, case.affine), root / "labelsTr" / f"real_{i}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "name": f"TinyReal_{modality}", "channel_names": {"0": "CT" if modality == "ct" else "MRI"},
        "labels": LABELS, "numTraining": cases, "file_ending": ".nii.gz"}))
    return root


@pytest.fixture(scope="module")
def ext_ct(tmp_path_factory) -> Path:
    return write_multi_organ_set(tmp_path_factory.mktemp("ext") / "ct", cases=2)


def one_entry_suite(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ext.yaml"
    path.write_text("name: ext\nbudget: smoke\nentries:\n"
                    f"  - {{variant: unet, label: U-Net, config: {REPO}/benchmark/suites/paper/unet_baseline.yaml}}\n")
    return path


@pytest.fixture(scope="module")
def ext_run(ext_ct, tmp_path_factory):
    """A smoke-budget run on the CT phantom, scored on the multi-organ set, W&B offline."""
    tmp = tmp_path_factory.mktemp("extrun")
    out = tmp / "out"
    args = ["--suite", str(one_entry_suite(tmp / "suite")), "--modalities", "ct", "--out", str(out),
            "--wandb", "offline", "--external", f"ct={ext_ct}"]
    code = runner.main(args)
    return out, code, records.run_dir(out, "ext", "unet", "ct", 0)


def test_parse_external_syntax():
    assert parse_external("ct=/a,mri=/b:5") == {"ct": ("/a", None), "mri": ("/b", [5])}
    assert parse_external("/data/amos:6+7") == {None: ("/data/amos", [6, 7])}
    assert parse_external(None) == {}
    for bad in ("pet=/a", "ct=/a,ct=/b", "ct=", "/a,/b"):
        with pytest.raises(ValueError, match="--external"):
            parse_external(bad)


def test_liver_label_by_name_in_multi_organ_maps(ext_ct, tmp_path):
    ext = load_external_set(ext_ct)
    assert (ext.modality, ext.liver_labels, ext.n, ext.name) == ("ct", [3], 2, "TinyReal_ct")
    assert load_external_set(ext_ct, "ct", [1]).liver_labels == [1]  # set per set: DIR:1
    meta = tmp_path / "m.json"
    msd = {"labels": {"0": "background", "1": "liver", "2": "cancer"}}  # MSD style: liver ∪ cancer
    assert external.liver_labels_by_name(msd, meta) == [1, 2]
    amos = {"labels": {"background": 0, "spleen": 1, "kidney_right": 2, "liver": 6, "tumor": 7}}
    assert external.liver_labels_by_name(amos, meta) == [6, 7]


def test_run_scores_every_external_case(ext_run, ext_ct):
    out, code, folder = ext_run
    assert code == 0
    record = json.loads((folder / "result.json").read_text())
    assert record["status"] == "ok", record.get("error")
    block = record["external"]
    assert (block["name"], block["path"], block["n"], block["modality"]) == ("TinyReal_ct", str(ext_ct), 2, "ct")
    assert block["liver_labels"] == [3]
    rows = list(csv.DictReader((folder / "external_per_case.csv").open()))
    assert [r["case"] for r in rows] == ["real_0", "real_1"]
    for row in rows:  # scored against label 3 only, in the file's own grid
        label = np.asarray(nib.load(ext_ct / "labelsTr" / f"{row['case']}.nii.gz").dataobj)
        assert int(row["tp"]) + int(row["fn"]) == int((label == 3).sum())
    assert block["metrics"]["dice"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]))
    assert block["failed"] == sum(int(r["failed"]) for r in rows)
    assert record["durations"]["external_s"] > 0


def test_external_results_reach_wandb(ext_run):
    from wandb_offline import find_offline_runs

    _, _, folder = ext_run
    record = json.loads((folder / "result.json").read_text())
    (run,) = find_offline_runs(folder)
    assert run.summary["external/dice"] == pytest.approx(record["external"]["metrics"]["dice"])
    assert run.summary["external/n"] == 2 and run.summary["external/failed"] == record["external"]["failed"]
    assert run.summary["external/set"] == "TinyReal_ct"
    table = run.table("external/per_case")
    assert [row[0] for row in table["data"]] == ["real_0", "real_1"]


def test_report_has_the_real_scan_table(ext_run, tmp_path):
    out, _, folder = ext_run
    record = json.loads((folder / "result.json").read_text())
    board = tmp_path / "leaderboard.md"
    assert report.main(["--results", str(out), "--out", str(board)]) == 0
    text = board.read_text()
    assert "## Real scans (external validation)" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| U-Net | CT | TinyReal_ct |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3:6] == ["2", "1", f"{record['external']['metrics']['dice']:.4f}"]  # the schema's dice format
    header = next(ln for ln in text.splitlines() if ln.startswith("| Variant | CT DSC"))
    assert "CT external DSC (real scans)" in header


def test_external_eval_matches_the_run(ext_run, ext_ct, tmp_path, capsys):
    """The quick scorer gives the run's own external numbers for the run's checkpoint."""
    from benchmark.cli import main as cli

    _, _, folder = ext_run
    csv_out = tmp_path / "scores.csv"
    record = json.loads((folder / "result.json").read_text())
    post = record["postprocessing"]  # the run's own post-processing
    lcc = ["--largest-component", "--opening-mm", str(post.get("opening_mm", 0.0))] if post["largest_component"] else []
    precision = record["evaluation"]["precision"]  # and its network precision and layout
    layout = "--channels-last" if record["evaluation"]["channels_last"] else "--no-channels-last"
    overlays = tmp_path / "overlays"
    assert cli(["external-eval", "--checkpoint", str(folder / "model.ckpt"), "--external", str(ext_ct),
                "--out", str(csv_out), "--device", "cpu", "--precision", precision, layout, *lcc,
                "--overlays", str(overlays)]) == 0
    printed = capsys.readouterr().out
    expected = list(csv.DictReader((folder / "external_per_case.csv").open()))
    got = list(csv.DictReader(csv_out.open()))
    assert [(r["case"], r["tp"], r["fp"]) for r in got] == [(r["case"], r["tp"], r["fp"]) for r in expected]
    # one overlay per case: the image's axial slice (X across, Y down) with the scored prediction in red
    from PIL import Image

    from datamodules.readers import load_case, read_dataset
    assert sorted(p.name for p in overlays.iterdir()) == sorted(f"{r['case']}.png" for r in expected)
    scored = {r["case"]: r for r in expected}
    for record in read_dataset(ext_ct):
        rgb = np.asarray(Image.open(overlays / f"{record.case}.png").convert("RGB")).astype(int)
        case = load_case(record)
        assert rgb.shape == (case.image.shape[1], case.image.shape[0], 3)
        assert ((rgb == (0, 255, 0)).all(-1)).any()  # the label's outline
        red = (rgb[..., 0] - rgb[..., 1] > 90) & (rgb[..., 1] == rgb[..., 2])  # the prediction's red blend
        assert red.any() == (int(scored[record.case]["tp"]) > 0)  # this small model finds liver on that slice
    assert f"wrote {len(expected)} overlays to {overlays}" in printed
    mean = np.mean([float(r["dice"]) for r in expected])
    assert any(ln.startswith("mean") and f" {format_metric('dice', mean)} " in ln for ln in printed.splitlines())
    header = next(ln.split() for ln in printed.splitlines() if ln.startswith("case"))
    assert header == ["case", *METRIC_KEYS]  # every metric of the schema is a column
    assert cli(["external-eval", "--checkpoint", str(tmp_path / "none.ckpt"), "--external", str(ext_ct)]) == 2


def test_finished_runs_are_scored_later_without_retraining(ext_run, ext_ct, tmp_path):
    """`make bench` first, `EXTERNAL=...` later: finished runs get their external scores from model.ckpt."""
    out, _, folder = ext_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    run = records.run_dir(copy, "ext", "unet", "ct", 0)
    record = json.loads((run / "result.json").read_text())
    record["external"] = None
    (run / "result.json").write_text(json.dumps(record))
    (run / "external_per_case.csv").unlink()
    ckpt_mtime = (run / "model.ckpt").stat().st_mtime_ns
    assert runner.main(["--suite", str(one_entry_suite(tmp_path / "suite")), "--modalities", "ct", "--out",
                        str(copy), "--wandb", "disabled", "--external", f"ct={ext_ct}"]) == 0
    again = json.loads((run / "result.json").read_text())
    assert again["finished"] == record["finished"] and (run / "model.ckpt").stat().st_mtime_ns == ckpt_mtime
    assert again["external"]["n"] == 2 and again["external"]["metrics"]["dice"] == pytest.approx(
        json.loads((folder / "result.json").read_text())["external"]["metrics"]["dice"])
    assert (run / "external_per_case.csv").read_text() == (folder / "external_per_case.csv").read_text()


def _bad_sets(ext_ct: Path, tmp: Path) -> list[tuple[str, str]]:
    """(--external value, file the error must name) for each kind of bad set."""
    def copy(name):
        dst = tmp / name
        shutil.copytree(ext_ct, dst)
        return dst

    no_liver = copy("no_liver")
    meta = json.loads((no_liver / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "spleen": 1, "kidney": 2, "organ": 3}
    (no_liver / "dataset.json").write_text(json.dumps(meta))
    unlabelled = copy("unlabelled")
    (unlabelled / "labelsTr" / "real_1.nii.gz").unlink()
    no_meta = copy("no_meta")
    (no_meta / "dataset.json").unlink()
    return [
        (f"ct={tmp / 'missing'}", str(tmp / "missing")),
        (f"ct={no_liver}", str(no_liver / "dataset.json")),
        (f"mri={ext_ct}", str(ext_ct / "dataset.json")),  # a CT set given for MRI
        (f"ct={unlabelled}", str(unlabelled / "imagesTr" / "real_1_0000.nii.gz")),
        (f"ct={no_meta}", str(no_meta / "dataset.json")),
        (f"ct={ext_ct}:7", str(ext_ct / "dataset.json")),  # a liver label the set does not have
    ]


def test_bad_external_sets_fail_before_training(ext_ct, tmp_path, capsys):
    suite = one_entry_suite(tmp_path / "suite")
    for value, named in _bad_sets(ext_ct, tmp_path):
        out = tmp_path / "out"
        code = runner.main(["--suite", str(suite), "--modalities", "ct,mri", "--out", str(out), "--wandb",
                            "disabled", "--external", value])
        err = capsys.readouterr().err
        assert code == 2, value
        assert f"error: {named}:" in err, (value, err)
        assert not (out / "ext").exists() and not list(tmp_path.rglob("*.ckpt"))  # nothing trained
    # a bare DIR takes its modality from dataset.json: an MRI set with CT-only runs is an error
    mri = write_multi_organ_set(tmp_path / "mri", "mri", cases=1)
    assert runner.main(["--suite", str(suite), "--modalities", "ct", "--out", str(tmp_path / "out"),
                        "--external", str(mri)]) == 2
    assert "--external gives a mri set" in capsys.readouterr().err


def test_devset_from_the_shared_real_samples(real_data, tmp_path):
    """`liverbench data devset`: CT = CHAOS CT 3 + TotalSegmentator CT, MRI = six CHAOS T2 + the
    TotalSegmentator MR, one label map (liver 5) per set, liver voxel counts as measured."""
    from datamodules.devset import main as devset_main
    from datamodules.readers import load_case, read_dataset

    assert devset_main(["--real", str(real_data), "--out", str(tmp_path / "devset")]) == 0
    liver = {}
    for modality, n in (("ct", 2), ("mri", 7)):
        root = tmp_path / "devset" / modality
        ext = load_external_set(root)
        assert (ext.modality, ext.liver_labels, ext.n) == (modality, [5], n)
        meta = json.loads((root / "dataset.json").read_text())
        assert meta["channel_names"] == {"0": "CT" if modality == "ct" else "MRI"}
        assert meta["labels"]["liver"] == 5 and meta["labels"]["spleen"] == 1
        for record in read_dataset(root):
            liver[record.case] = int(load_case(record, [5]).mask.sum())
    assert liver["chaos_ct_3"] == 1_342_595
    assert liver["totalseg_ct"] == 38_634 and liver["totalseg_mr"] == 18_480
    assert sorted(c for c in liver if c.startswith("chaos_t2_")) == [f"chaos_t2_{p}" for p in
                                                                      ("01", "02", "03", "05", "08", "10")]
    for case in ("chaos_t2_01", "chaos_t2_10"):  # renumbered into TotalSegmentator's map: liver 1 -> 5, spleen 4 -> 1
        old = np.asarray(nib.load(real_data / "chaos_t2" / "labelsTr" / f"{case}.nii.gz").dataobj)
        new = np.asarray(nib.load(tmp_path / "devset" / "mri" / "labelsTr" / f"{case}.nii.gz").dataobj)
        assert liver[case] == int((old == 1).sum()) and int((new == 1).sum()) == int((old == 4).sum())

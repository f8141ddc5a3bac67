"""Through the console entry point: every expected error is one line naming the file or setting and what to do
(exit code 2); real bugs keep their traceback, and --debug / -v / EUPE_DEBUG=1 show it for user errors too."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterator

import pytest
import torch
import yaml

import eupe.cli.main as cli
from eupe.utils.outputs import locked_output_dir
from tests.distill.test_cli import write_run_config


@pytest.fixture(autouse=True)
def commands(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("distill", "export"))  # only the commands under test
    monkeypatch.delenv("EUPE_DEBUG", raising=False)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One intra-op thread, as in tests/distill (see tests/conftest.py)."""
    yield


@pytest.fixture
def unwritable(tmp_path) -> Iterator[Path]:
    """A folder path where nothing can be created: a read-only folder (or, as root, which writes anywhere, a path
    in sysfs, which refuses new entries even to root)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder / "out"
        folder.chmod(0o755)
    elif Path("/sys/kernel").is_dir():
        yield Path("/sys/eupe-faults-test/out")
    else:
        pytest.skip("running as root without sysfs: no folder here refuses writes")


def one_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(n in err for n in needles), err
    return err


def distill(config: Path, *overrides: str) -> int:
    return cli.main(["distill", "--config", str(config), *[a for o in overrides for a in ("--set", o)]])


# ---- distill


def test_resume_with_other_settings_is_one_line_naming_them(tmp_path, capsys):
    config = write_run_config(tmp_path)
    assert distill(config) == 0
    capsys.readouterr()
    assert distill(config, "train.lr=5e-2") == 2
    one_line(capsys, "train.lr: 2e-05 -> 0.05", "resume.allow_changes=true")
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["lr"] == 2e-5


def test_resume_with_a_replaced_teacher_file_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EUPE_CACHE", str(tmp_path / "eupe-cache"))  # the weight-digest cache
    config = write_run_config(tmp_path)
    assert distill(config) == 0
    teacher = tmp_path / "teacher.pt"
    same = teacher.read_bytes()
    teacher.write_bytes(same)  # rewritten with the same content (as a re-export does): still the same teacher
    assert distill(config) == 0
    capsys.readouterr()
    other = torch.load(teacher, weights_only=True)
    other["cls_token"] = other["cls_token"] + 1
    torch.save(other, teacher)  # another teacher under the same name: its statistics and targets would be stale
    assert distill(config) == 2
    one_line(capsys, "inputs.teachers.0.weights: 'sha256:", "resume.allow_changes=true")


@pytest.mark.parametrize("override, needle", [
    ("output.checkpoint_every=0", "output.checkpoint_every must be > 0, got 0"),
    ("cache.views_per_image=0", "cache.views_per_image must be > 0, got 0"),
    ("output.log_every=0", "output.log_every must be > 0"),
    ("output.keep_checkpoints=0", "output.keep_checkpoints must be > 0"),
    ("data.workers=-1", "data.workers must be >= 0"),
    ("train.lr=.nan", "train.lr must be >= 0, got nan"),
    ("train.lr_scaling=sqrt", "train.lr_scaling must be one of"),
    ("output.export_name=student.safetensors", "output.export_name must be a file name ending in .pt"),
])
def test_values_that_would_divide_by_zero_or_mislead_are_one_line(tmp_path, capsys, override, needle):
    assert distill(write_run_config(tmp_path), override) == 2
    one_line(capsys, needle)


def test_output_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    config = write_run_config(tmp_path)
    (tmp_path / "taken").write_text("a file")
    assert distill(config, f"output.dir={tmp_path / 'taken'}") == 2
    one_line(capsys, f"{tmp_path / 'taken'} is an existing file")


def test_unwritable_output_dir_is_one_line(tmp_path, capsys, unwritable):
    assert distill(write_run_config(tmp_path), f"output.dir={unwritable}") == 2
    one_line(capsys, str(unwritable.parent))


def test_a_second_run_into_a_busy_folder_is_one_line(tmp_path, capsys):
    config = write_run_config(tmp_path)
    with locked_output_dir(tmp_path / "run", "eupe distill"):  # the first run, still going
        assert distill(config) == 2
    one_line(capsys, "another eupe distill is writing to", str(tmp_path / "run"))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_full_disk_during_a_checkpoint_is_one_line_naming_the_folder(tmp_path, capsys, monkeypatch):
    from tests.faults.test_distill_faults import full_disk

    config = write_run_config(tmp_path)
    monkeypatch.setattr("eupe.utils.io.open", full_disk, raising=False)
    assert distill(config) == 2
    err = one_line(capsys, "no space left on device while writing to", str(tmp_path / "run"))
    assert "unexpected pos" not in err


# ---- export


def export(output: Path, fmt: str = "safetensors") -> int:
    return cli.main(["export", "eupe_vitt16", "--weights", "random", "--format", fmt, "--output", str(output)])


def test_export_to_an_unwritable_place_is_one_line_before_exporting(tmp_path, capsys, unwritable, monkeypatch):
    monkeypatch.setattr("eupe.export.convert.model_to_safetensors",
                        lambda *a, **k: pytest.fail("exported although the output cannot be written"))
    assert export(unwritable / "vitt.safetensors") == 2
    one_line(capsys, f"Cannot write output {unwritable / 'vitt.safetensors'}", "choose a writable location")


def test_export_output_of_the_wrong_kind_is_one_line(tmp_path, capsys):
    assert export(tmp_path) == 2  # a folder where a file is due
    one_line(capsys, f"output {tmp_path} is a folder")
    (tmp_path / "file").write_text("x")
    assert export(tmp_path / "file", "hf") == 2  # a file where a folder is due
    one_line(capsys, f"output {tmp_path / 'file'} is a file")


def test_export_full_disk_is_one_line_naming_the_folder(tmp_path, capsys, monkeypatch):
    def full(tensors, filename, metadata=None):  # safetensors' own error for ENOSPC
        raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                           '"No space left on device" })')

    monkeypatch.setattr("safetensors.torch.save_file", full)
    assert export(tmp_path / "vitt.safetensors") == 2
    one_line(capsys, f"no space left on device while writing to {tmp_path}")


# ---- the handler itself


def failing_command(monkeypatch, error: BaseException | None = None, bug=None):
    """Makes `eupe distill` raise ``error`` (or run ``bug``) instead of training."""
    def run(args):
        if bug is not None:
            bug()
        raise error

    monkeypatch.setattr("eupe.cli.distill.run", run)


@pytest.mark.parametrize("error, needle", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/out/x.pt"),
     "/data/out/x.pt: Permission denied (check its permissions or choose a writable location)"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/data/out"), "/data/out: Is a directory (it is a folder"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/f/x"), "a part of the path is a file"),
    (FileExistsError(errno.EEXIST, "File exists", "/data/out"), "/data/out: File exists (remove it"),
    (OSError(errno.ENOSPC, "No space left on device", "/data/out/x.pt"), "(free some space"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x"), "read-only file system"),
])
def test_os_errors_about_the_users_files_are_one_line_naming_the_file(monkeypatch, capsys, error, needle):
    failing_command(monkeypatch, error)
    assert cli.main(["distill", "--config", "stage2"]) == 2
    one_line(capsys, "eupe distill: error: ", needle)


def test_a_raised_user_error_is_one_line_and_debug_shows_its_traceback(monkeypatch, capsys):
    from eupe.models import get_model_entry

    failing_command(monkeypatch, bug=lambda: get_model_entry("eupe_vitx16"))  # `raise KeyError(...)` in eupe
    assert cli.main(["distill", "--config", "stage2"]) == 2
    one_line(capsys, "eupe distill: error: Unknown model 'eupe_vitx16'")  # not quoted as str(KeyError) would be
    for argv, debug in ((["--debug"], None), (["-v"], None), ([], "1")):
        if debug:
            monkeypatch.setenv("EUPE_DEBUG", debug)
        with pytest.raises(KeyError):
            cli.main([*argv, "distill", "--config", "stage2"])


@pytest.mark.parametrize("bug", [
    lambda: {}["missing"],  # a KeyError of a dict lookup
    lambda: torch.zeros(2) @ torch.zeros(3),  # a RuntimeError inside torch
    lambda: int("x"),  # a ValueError of a conversion, not a `raise` in eupe
    lambda: None + 1,  # a TypeError
    lambda: [][1],  # an IndexError
])
def test_real_bugs_keep_their_traceback(monkeypatch, bug):
    failing_command(monkeypatch, bug=bug)
    with pytest.raises((KeyError, RuntimeError, ValueError, TypeError, IndexError)):
        cli.main(["distill", "--config", "stage2"])


def test_interrupt_is_one_line(monkeypatch, capsys):
    failing_command(monkeypatch, KeyboardInterrupt())
    assert cli.main(["distill", "--config", "stage2"]) == 130
    one_line(capsys, "eupe distill: interrupted")


def test_eupe_errors_raised_by_eupe_code_are_one_line(tmp_path, capsys):
    """The real thing: errors raised by eupe code (a ValueError with `raise`, a CheckpointError) are one line."""
    config = write_run_config(tmp_path)
    assert distill(config, "teachers=[]") == 2  # ValueError("No teachers: ...") in the trainer
    one_line(capsys, "No teachers")
    assert distill(config, f"student.init={tmp_path / 'teacher.pt'}", "student.arch={embed_dim: 32, depth: 2, "
                   "num_heads: 2}") == 2  # CheckpointError: another architecture (was a torch traceback)
    one_line(capsys, "Cannot load student.init", "into eupe_vitt16", "shape mismatch")

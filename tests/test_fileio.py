"""Atomic, symlink-safe writes (darknet_prn.fileio) and every output routed through them."""
import os
import subprocess
import sys

import pytest

from darknet_prn import fileio
from darknet_prn.errors import DarknetError, WeightsError

from test_detect import TINY_CFG, run_cli


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _temps(d):
    return sorted(n for n in os.listdir(d) if ".part" in n)


def test_atomic_write_replaces_a_symlink_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out.bin"
    link.symlink_to(victim)
    fileio.atomic_write(link, lambda f: f.write(b"new"))
    assert victim.read_text() == "precious"
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert _temps(tmp_path) == []


def test_a_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    monkeypatch.setattr(fileio.secrets, "token_hex", lambda n: "0123abcd")
    planted = tmp_path / f".x.json.{os.getpid()}-0123abcd.part"
    planted.symlink_to(victim)
    with pytest.raises(DarknetError, match=r"x\.json: cannot write file: File exists"):
        fileio.atomic_write(tmp_path / "x.json", lambda f: f.write(b"{}"))
    with pytest.raises(DarknetError, match=r"x\.json: cannot write file: File exists"):
        fileio.atomic_path(tmp_path / "x.json")
    assert victim.read_text() == "precious" and planted.is_symlink()
    assert not (tmp_path / "x.json").exists()


def test_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    p = tmp_path / "a.weights"
    p.write_bytes(b"old")

    def boom(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")
    with pytest.raises(WeightsError, match=r"a\.weights: cannot write weights: No space left on device$"):
        fileio.atomic_write(p, boom, "weights", WeightsError)
    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write(p, lambda f: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert p.read_bytes() == b"old" and _temps(tmp_path) == []


def test_directory_and_missing_directory_are_one_line_errors(tmp_path):
    with pytest.raises(DarknetError, match=r": cannot write file: is a directory$"):
        fileio.atomic_write(tmp_path, lambda f: None)
    with pytest.raises(DarknetError, match=r"cannot write file: directory .*missing does not exist$"):
        fileio.atomic_write(tmp_path / "missing" / "x", lambda f: None)
    with pytest.raises(DarknetError, match=r"empty file name"):
        fileio.atomic_write("", lambda f: None)
    fileio.atomic_write(tmp_path / "made" / "x", lambda f: f.write(b"1"), make_dirs=True)
    assert (tmp_path / "made" / "x").read_bytes() == b"1"


def test_stale_temporaries_of_dead_processes_are_removed_by_the_next_write(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    stale_file = tmp_path / f".m.weights.{dead}.part"                 # the old weights writer's name
    stale_dir = tmp_path / f".v.mp4.{dead}-00ff00ff.part"             # an atomic_path directory
    stale_dir.mkdir()
    (stale_dir / "out.mp4").write_bytes(b"x" * 100)
    stale_file.write_bytes(b"x" * 100)
    live = tmp_path / f".m.weights.{alive}-abcdef01.part"            # another running process: kept
    live.write_bytes(b"x")
    fileio.atomic_write(tmp_path / "m.weights", lambda f: f.write(b"w"))
    assert _temps(tmp_path) == [live.name]


def test_atomic_path_commits_on_success_and_removes_on_error(tmp_path):
    target = tmp_path / "v.mp4"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(target, "the video") as tmp:
            assert tmp.endswith(".mp4") and os.path.dirname(tmp) != str(tmp_path)
            open(tmp, "wb").write(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and _temps(tmp_path) == []
    link_victim = tmp_path / "victim"
    link_victim.write_bytes(b"precious")
    target.unlink()
    target.symlink_to(link_victim)
    with fileio.atomic_path(target, "the video") as tmp:
        open(tmp, "wb").write(b"new")
    assert target.read_bytes() == b"new" and not target.is_symlink() and link_victim.read_bytes() == b"precious"
    assert _temps(tmp_path) == []
    with pytest.raises(DarknetError, match=r"v\.mp4: cannot write the video: No such file or directory"):
        with fileio.atomic_path(target, "the video"):
            pass                                        # nothing written at tmp: a one-line error, no temp left
    assert _temps(tmp_path) == []


@pytest.fixture(scope="module")
def small_net(tmp_path_factory):
    from darknet_prn import Darknet
    d = tmp_path_factory.mktemp("net")
    (d / "tiny.cfg").write_text(TINY_CFG)
    return Darknet.from_cfg(d / "tiny.cfg")


def test_checkpoint_errors_are_one_line_and_leave_nothing(small_net, tmp_path):
    with pytest.raises(DarknetError, match=r"missing.ck\.pt: cannot write checkpoint: directory .* does not exist"):
        small_net.save_checkpoint(tmp_path / "missing" / "ck.pt")
    with pytest.raises(DarknetError, match=r"cannot write checkpoint: is a directory$"):
        small_net.save_checkpoint(tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "ck.pt").symlink_to(victim)
    small_net.save_checkpoint(tmp_path / "ck.pt")
    assert victim.read_bytes() == b"precious"
    assert _temps(tmp_path) == []


def test_weights_through_a_symlink(small_net, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "w.weights").symlink_to(victim)
    small_net.save_weights(tmp_path / "w.weights")
    assert victim.read_bytes() == b"precious" and not (tmp_path / "w.weights").is_symlink()


def test_detect_outputs_never_follow_planted_symlinks(small_net, tmp_path, capsys):
    import shutil
    from conftest import ROOT
    d = tmp_path / "in"
    d.mkdir()
    (d / "tiny.cfg").write_text(TINY_CFG)
    small_net.save_weights(d / "tiny.weights")
    shutil.copy(ROOT / "tests" / "data" / "dog.jpg", d / "dog.jpg")
    out = tmp_path / "out"
    out.mkdir()
    victims = {n: tmp_path / f"victim-{n}" for n in ("img", "json", "part")}
    for v in victims.values():
        v.write_bytes(b"precious")
    (out / "dog.jpg").symlink_to(victims["img"])
    (tmp_path / "x.json").symlink_to(victims["json"])
    (tmp_path / "x.json.part").symlink_to(victims["part"])      # the old writer's temporary name
    rc, _, err = run_cli([d / "tiny.cfg", d / "tiny.weights", d / "dog.jpg", "--out", out, "--exist-ok",
                          "--json", tmp_path / "x.json"], capsys)
    assert rc == 0, err
    assert all(v.read_bytes() == b"precious" for v in victims.values())
    assert (out / "dog.jpg").read_bytes()[:2] == b"\xff\xd8" and not (out / "dog.jpg").is_symlink()
    assert (tmp_path / "x.json").read_text().startswith("[")
    # --json to a directory: refused before inference (a one-line error naming the option), no temporary left
    rc, _, err = run_cli([d / "tiny.cfg", d / "tiny.weights", d / "dog.jpg", "--no-save", "--json", out], capsys)
    assert rc == 2 and "--json:" in err and "is a directory" in err and "Traceback" not in err
    assert _temps(out) == [] and _temps(tmp_path) == ["x.json.part"]

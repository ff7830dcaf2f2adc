"""README's layout block against the tree: every folder and package is named there, and every name there exists."""

import re
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _layout_block() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def _tracked_top_level_folders() -> set[str]:
    files = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return {line.split("/")[0] for line in files.splitlines() if "/" in line}


def _entries(block: str) -> list[tuple[int, str]]:
    """(indent, folder) of each line that starts with a folder name."""
    return [(len(m.group(1)), m.group(2)) for m in re.finditer(r"^( *)([.\w]+/) ", block, flags=re.M)]


def test_every_top_level_folder_is_in_the_layout():
    top = {name.rstrip("/") for indent, name in _entries(_layout_block()) if indent == 0}
    assert _tracked_top_level_folders() <= top, sorted(_tracked_top_level_folders() - top)
    assert top <= {p.name for p in REPO_ROOT.iterdir() if p.is_dir()}


def test_every_package_of_mmdet_and_qdrop_is_in_the_layout():
    block = _layout_block()
    entries = _entries(block)
    for package in ("mmdet", "qdrop"):
        named = set()
        inside = False
        for indent, name in entries:
            if indent == 0:
                inside = name == f"{package}/"
            elif inside and indent == 2:
                named.add(name.rstrip("/"))
        present = {p.name for p in (REPO_ROOT / package).iterdir() if (p / "__init__.py").is_file()}
        assert named == present, (package, sorted(present ^ named))


def test_named_files_and_subfolders_exist():
    block = _layout_block()
    for path in ("exp/config.yaml", "exp/w4a4.yaml", "exp/slurm_test.sh", "exp/dist_test.sh", "exp/demo.py"):
        assert path.split("/")[-1] in block and (REPO_ROOT / path).is_file()
    for name in re.findall(r"\b([a-z_]+\.py)\b", block):
        assert list(REPO_ROOT.glob(f"**/{name}")), name
    for folder in ("fcos", "atss", "gfl", "regnet", "tiny", "faster_rcnn", "retinanet", "_base_"):
        assert (REPO_ROOT / "configs" / folder).is_dir()

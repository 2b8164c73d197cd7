"""The paper settings (conf/experiment/*.yaml) compose against conf/train.yaml and say what the paper says.

Every experiment file is composed with Hydra's compose API exactly as `python train.py experiment=<name>` would,
and checked for: non-empty source/target texts, the backbone family matching its dataset (DDPM for CelebA-HQ and
LSUN, ADM for AFHQ-dog and METFACES) and the same h-function layout, t_edit > t_boost, and coverage of the 27 paper
settings. These tests need conf/train.yaml and the dataset / arch / plan groups: when those are missing they
fail (by design: a reproduction entry point that does not compose is a bug), they are not skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from asyrp.hfunctions import GlobalDirection, build_hfunction

CONF_DIR = (Path(__file__).resolve().parents[2] / "conf").resolve()
EXPERIMENT_DIR = CONF_DIR / "experiment"
ATTRIBUTE_DIR = CONF_DIR / "attribute"

# dataset group -> backbone family of the pretrained model the paper edits with
DATASET_FAMILY = {
    "celeba_hq": "ddpm",
    "lsun_church": "ddpm",
    "lsun_bedroom": "ddpm",
    "afhq_dog": "adm",
    "metfaces": "adm",
    "synthfaces": "diffusers",  # the project's own offline world
}
DATASET_ARCH = {
    "celeba_hq": "celeba_hq",
    "lsun_church": "lsun_church",
    "lsun_bedroom": "lsun_bedroom",
    "afhq_dog": "afhq_dog",
    "metfaces": "metfaces_p2",
    "synthfaces": "synthfaces",
}

# The 27 paper settings: experiment name -> (dataset group, source texts, target texts).
# Texts are the official ones (kwonminki/Asyrp_official utils/text_dic.py); they guard the attribute files.
PAPER_SETTINGS: dict[str, tuple[str, list[str], list[str]]] = {
    "celeba_smiling": ("celeba_hq", ["face"], ["smiling face"]),
    "celeba_sad": ("celeba_hq", ["face"], ["sad face"]),
    "celeba_angry": ("celeba_hq", ["face"], ["angry face"]),
    "celeba_tanned": ("celeba_hq", ["face"], ["tanned face"]),
    "celeba_young": ("celeba_hq", ["person"], ["young person"]),
    "celeba_man": ("celeba_hq", ["a person"], ["a man"]),
    "celeba_woman": ("celeba_hq", ["a person"], ["a woman"]),
    "celeba_makeup": ("celeba_hq", ["person"], ["person with makeup"]),
    "celeba_curly_hair": ("celeba_hq", ["person"], ["person with curly hair"]),
    "celeba_pixar": ("celeba_hq", ["Human"], ["3D render in the style of Pixar"]),
    "celeba_neanderthal": ("celeba_hq", ["Human"], ["Neanderthal"]),
    "afhq_happy": ("afhq_dog", ["Dog"], ["Happy Dog"]),
    "afhq_sleepy": ("afhq_dog", ["Dog"], ["Sleepy Dog"]),
    "afhq_angry": ("afhq_dog", ["Dog"], ["Angry Dog"]),
    "afhq_wolf": ("afhq_dog", ["Dog"], ["Wolf"]),
    "afhq_yorkshire": ("afhq_dog", ["Dog"], ["Yorkshire Terrier"]),
    "church_gothic": ("lsun_church", ["Church"], ["Gothic Church"]),
    "church_red_brick": ("lsun_church", ["Church"], ["Red brick wall Church"]),
    "church_wooden": ("lsun_church", ["Church"], ["Wooden Church"]),
    "church_temple": ("lsun_church", ["Church"], ["Temple"]),
    "church_factory": ("lsun_church", ["church"], ["factory with chimneys"]),
    "bedroom_hotel": ("lsun_bedroom", ["Bedroom"], ["Hotel Bedroom"]),
    "bedroom_princess": ("lsun_bedroom", ["Bedroom"], ["Princess Bedroom"]),
    "metfaces_smiling": ("metfaces", ["painting of a person"], ["painting of a Smiling person"]),
    "metfaces_sad": ("metfaces", ["painting of a person"], ["painting of a Sad person"]),
    "metfaces_angry": ("metfaces", ["painting of a person"], ["painting of a Angry person"]),
    "metfaces_disgusted": ("metfaces", ["painting of a person"], ["painting of a Disgusted person"]),
}
assert len(PAPER_SETTINGS) == 27


def _experiment_names() -> list[str]:
    on_disk = {p.stem for p in EXPERIMENT_DIR.glob("*.yaml")}
    # the paper names are always parametrized, so a missing file is a failing case, not an absent one
    return sorted(on_disk | set(PAPER_SETTINGS))


def _compose(name: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"experiment={name}"], return_hydra_config=True)


class _StubBackbone:
    """What build_hfunction reads from a backbone (sizes of a tiny h), without loading weights."""

    h_channels, emb_dim, h_shape = 64, 32, (64, 2, 2)

    def __init__(self, family: str):
        self.family = family

    def parameters(self):
        return iter(())


def _texts_ok(texts) -> bool:
    return (
        (OmegaConf.is_list(texts) or isinstance(texts, list))
        and len(texts) > 0
        and all(isinstance(t, str) and t.strip() for t in texts)
    )


# ---------------------------------------------------------------------------------------------------------------
# Static checks on the files this suite is about (no train.yaml needed)
# ---------------------------------------------------------------------------------------------------------------


def test_experiment_set_covers_the_paper_settings():
    names = {p.stem for p in EXPERIMENT_DIR.glob("*.yaml")}
    missing = sorted(set(PAPER_SETTINGS) - names)
    assert not missing, f"paper settings without conf/experiment/<name>.yaml: {missing}"


def test_smiling_default_attribute_is_the_celeba_one():
    cfg = OmegaConf.load(ATTRIBUTE_DIR / "smiling.yaml")
    assert cfg.name == "smiling"
    assert list(cfg.source) == ["face"] and list(cfg.target) == ["smiling face"]


@pytest.mark.parametrize("path", sorted(ATTRIBUTE_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_attribute_file_schema(path: Path):
    cfg = OmegaConf.load(path)
    # synthfaces attributes also name what the oracle checks (e.g. mouth=smiling)
    expected = {"name", "source", "target"} | ({"oracle_target"} if path.stem.startswith("synthfaces_") else set())
    assert set(cfg.keys()) == expected, f"{path.name}: fields {sorted(cfg.keys())}"
    if "oracle_target" in cfg:
        from asyrp.synthfaces.judge import parse_target

        parse_target(cfg.oracle_target)  # a head and a class the oracle knows
    assert cfg.name == path.stem
    assert _texts_ok(cfg.source) and _texts_ok(cfg.target)
    assert list(cfg.source) != list(cfg.target)


@pytest.mark.parametrize("name", sorted(PAPER_SETTINGS))
def test_experiment_file_header_and_overrides(name: str):
    path = EXPERIMENT_DIR / f"{name}.yaml"
    assert path.is_file(), f"missing {path}"
    lines = path.read_text().splitlines()
    assert lines[0].strip() == "# @package _global_"
    assert any(line.startswith("# source:") for line in lines[:3]), "first lines must say where the values come from"
    raw = OmegaConf.load(path)
    overrides = {}
    for entry in raw.defaults:
        ((key, value),) = entry.items()
        overrides[key] = value
    dataset = PAPER_SETTINGS[name][0]
    assert overrides.get("override /dataset") == dataset
    assert overrides.get("override /arch") == DATASET_ARCH[dataset]
    assert overrides.get("override /plan") == dataset
    attribute = overrides.get("override /attribute")
    assert (ATTRIBUTE_DIR / f"{attribute}.yaml").is_file(), f"{name}: no conf/attribute/{attribute}.yaml"
    # the block layout is not pinned: `auto` follows the backbone family, so hfunction=global composes too
    assert "layout" not in raw.get("hfunction", {}), f"{name}: pins hfunction.layout (breaks hfunction=global)"


# ---------------------------------------------------------------------------------------------------------------
# Composition through conf/train.yaml (what `python train.py experiment=<name>` does)
# ---------------------------------------------------------------------------------------------------------------


def test_train_yaml_exists():
    assert (CONF_DIR / "train.yaml").is_file(), (
        f"{CONF_DIR / 'train.yaml'} is missing: no experiment can compose (python train.py experiment=... fails)"
    )


@pytest.mark.parametrize("name", _experiment_names())
def test_experiment_composes(name: str):
    assert (CONF_DIR / "train.yaml").is_file(), "conf/train.yaml is missing"
    assert (EXPERIMENT_DIR / f"{name}.yaml").is_file(), f"missing conf/experiment/{name}.yaml"
    cfg = _compose(name)
    choices = cfg.hydra.runtime.choices
    dataset = choices["dataset"]

    # texts
    assert _texts_ok(cfg.attribute.source), f"{name}: empty attribute.source"
    assert _texts_ok(cfg.attribute.target), f"{name}: empty attribute.target"
    assert cfg.attribute.name == choices["attribute"]

    # backbone family matches the dataset, and the h-function layout matches the backbone
    assert dataset in DATASET_FAMILY, f"{name}: dataset group {dataset!r} is not one of the paper's"
    family = DATASET_FAMILY[dataset]
    assert choices["arch"] == DATASET_ARCH[dataset], f"{name}: arch {choices['arch']} for dataset {dataset}"
    assert cfg.arch.family == family, f"{name}: arch family {cfg.arch.family}, expected {family} for {dataset}"
    layout = "adm" if family == "adm" else "ddpm"  # the DDPM block serves every non-ADM family
    built = build_hfunction(cfg.hfunction, _StubBackbone(cfg.arch.family))
    assert built.kind == layout, f"{name}: h-function layout {built.kind}, expected {layout}"

    # edit interval
    assert choices["plan"] == dataset
    assert int(cfg.plan.t_edit) > int(cfg.plan.t_boost), (
        f"{name}: t_edit {cfg.plan.t_edit} <= t_boost {cfg.plan.t_boost}"
    )

    # the paper setting's texts and the official training values
    if name in PAPER_SETTINGS:
        expected_dataset, source, target = PAPER_SETTINGS[name]
        assert dataset == expected_dataset
        assert list(cfg.attribute.source) == source and list(cfg.attribute.target) == target
        assert "paper" in cfg.tags
        assert cfg.model.optimizer.lr == 0.5
        assert cfg.plan.n_inv == 40 and cfg.plan.n_gen == 40 and cfg.plan.t0 == 999
        assert cfg.model.loss.w_clip == 1.0 and cfg.model.loss.w_recon == 3.0
        assert cfg.model.loss.recon_scale_by_text_cosine is True
        assert cfg.dataset.n_images == 100


@pytest.mark.parametrize("kind", ["global", "global_per_t"])
@pytest.mark.parametrize("name", ["celeba_smiling", "afhq_happy", "synthfaces_smiling"])
def test_experiment_composes_with_every_hfunction_kind(name: str, kind: str):
    """The paper's global-direction variant is one override away from any experiment (it once failed on `layout`)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}", f"hfunction={kind}"])
    built = build_hfunction(cfg.hfunction, _StubBackbone(cfg.arch.family))
    assert sum(p.numel() for p in built.parameters()) > 0
    assert isinstance(built, GlobalDirection)

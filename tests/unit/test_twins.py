"""guide=twins (asyrp.twins): the term is w_twin * L1(P_t^edit, P_t^twin) and its gradient reaches only the
h-function; the twins pair with the training images by file name (an unpaired image is one error naming it, unused
twins are reported); each training item carries its twin's P_t at the item's own t; hold_outside pulls P_t to the
twin only inside the pixels the pair differs in and to P_t^orig outside them; the synthfaces writer draws train/'s
faces with the attribute under the same names."""

import logging

import pytest
import torch
from helpers import tiny_backbone

from asyrp.data.datamodule import CachedDataset
from asyrp.hfunctions import GlobalDirection
from asyrp.ops.errors import AsyrpUserError
from asyrp.ops.io import atomic_save
from asyrp.samplers import asyrp_step
from asyrp.schedules import alphas_cumprod, make_betas
from asyrp.twins import TwinGuide, build_twin_guide, check_twins_config, pair_files, twin_region

A = alphas_cumprod(make_betas("linear"))


def test_the_term_is_the_weighted_l1_to_the_twin_and_moves_only_the_h_function():
    torch.manual_seed(0)
    bb = tiny_backbone().requires_grad_(False)
    hf = GlobalDirection(bb.h_shape)
    with torch.no_grad():
        hf.delta_h.normal_(0, 0.5)
    x = torch.randn(2, 3, bb.image_size, bb.image_size)
    step = asyrp_step(bb, x, 600, 500, A, hf)
    twin = torch.randn_like(step.P_edit)
    value, parts = TwinGuide(w_twin=2.5)(step.P_edit, step.P_orig, 600, P_twin=twin)
    assert torch.allclose(value, 2.5 * (step.P_edit - twin).abs().mean()) and set(parts) == {"guide_twin"}
    value.backward()
    assert hf.delta_h.grad is not None and hf.delta_h.grad.abs().sum() > 0
    assert all(p.grad is None for p in bb.parameters())
    with pytest.raises(ValueError, match="P_twin"):
        TwinGuide(1.0)(step.P_edit.detach(), step.P_orig, 600)


def test_hold_outside_pulls_to_the_twin_inside_the_pairs_region_and_to_P_orig_outside_it(caplog):
    x0 = torch.zeros(2, 3, 8, 8)
    x0_twin = x0.clone()
    x0_twin[0, 1, 2:4, 3:5] = 0.5  # pair 0 differs in a 2x2 block of one channel; pair 1 not at all
    x0_twin[0, 0, 6, 6] = 0.05  # below the threshold: not the attribute
    region = twin_region(x0, x0_twin, threshold=0.1, dilate=1)
    assert region.shape == (2, 1, 8, 8) and region[1].sum() == 0
    assert torch.equal(region[0, 0, 1:5, 2:6], torch.ones(4, 4)) and region[0].sum() == 16  # the block grown by 1 px
    P_orig, P_twin = torch.zeros(2, 3, 3, 8, 8), torch.randn(2, 3, 3, 8, 8)  # 3 training steps
    batch = {"x0": x0, "x0_twin": x0_twin, "P_orig": P_orig, "P_twin": P_twin}
    held = build_twin_guide({"dir": "twins", "hold_outside": True, "region_dilate": 1}).targets(batch)
    inside = region[:, None].expand_as(P_twin).bool()
    assert torch.equal(held[inside], P_twin[inside]) and torch.equal(held[~inside], P_orig[~inside])
    assert torch.equal(build_twin_guide({"dir": "twins"}).targets(batch), P_twin)  # off: the twin everywhere
    with caplog.at_level(logging.INFO, logger="asyrp.twins"):
        build_twin_guide({"dir": "twins", "hold_outside": True}).targets({**batch, "x0_twin": x0})
    assert "differ on 0.0% of the pixels; nothing to learn" in caplog.text  # twins equal to their sources: said


def _folder(path, names):
    path.mkdir(parents=True, exist_ok=True)
    for n in names:
        (path / n).write_bytes(b"")
    return path


def test_twins_pair_by_file_name_in_the_training_order(tmp_path, caplog):
    train = [tmp_path / "train" / n for n in ("b.png", "a.png")]
    twins = _folder(tmp_path / "twins", ["a.png", "b.png", "extra.png"])
    with caplog.at_level(logging.INFO, logger="asyrp.twins"):
        unused = []
        paired = pair_files({"dir": str(twins), "w_twin": 1.0}, train, unused)
    assert paired == [twins / "b.png", twins / "a.png"] and unused == [twins / "extra.png"]
    assert "1 files of" in caplog.text and "extra.png" in caplog.text  # the unused twin is reported


@pytest.mark.parametrize(
    "twins, files, message",
    [
        ({"dir": "TWINS", "w_twin": 1.0}, ["a.png", "c.png"], "no twin for 1 of the 2 training images (first: c.png)"),
        ({"dir": "TWINS", "w_twin": 0.0}, ["a.png"], "w_twin=0.0 must be > 0"),
        ({"dir": None, "w_twin": 1.0}, ["a.png"], "guide=twins needs model.loss.guide.twins.dir"),
        ({"dir": "MISSING", "w_twin": 1.0}, ["a.png"], "is not a folder"),
        ({"dir": "TWINS", "w_twin": 1.0}, None, "use dataset.kind=folder"),
        ({"dir": "TWINS", "hold_outside": True, "region_threshold": 0}, ["a.png"], "region_threshold=0 must be in"),
        ({"dir": "TWINS", "hold_outside": True, "region_dilate": -1}, ["a.png"], "region_dilate"),
        ({"dir": "TWINS", "hold_outside": "false"}, ["a.png"], "hold_outside='false' must be true or false"),
    ],
)
def test_bad_twin_settings_are_one_error(tmp_path, twins, files, message):
    folder = _folder(tmp_path / "twins", ["a.png"])
    twins = {**twins, "dir": {"TWINS": str(folder), "MISSING": str(tmp_path / "nope")}.get(twins["dir"], twins["dir"])}
    train = None if files is None else [tmp_path / "train" / f for f in files]
    with pytest.raises(AsyrpUserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_twins_config({"twins": twins}, train)


def test_each_training_item_carries_its_twins_P_t_at_its_own_steps(tmp_path):
    def entry(i, k):
        return {"x0": torch.full((3, 2, 2), float(i)), "x_T": torch.zeros(3, 2, 2), "x_rec": torch.zeros(3, 2, 2),
                "P_orig": torch.arange(k, dtype=torch.float).view(k, 1, 1, 1).expand(k, 3, 2, 2) + 10 * i,
                "t": torch.arange(k), "id": f"e{i}"}  # fmt: skip

    paths, twins = [], []
    for i in range(2):
        atomic_save(entry(i, 3), tmp_path / f"s{i}.pt")
        atomic_save(entry(i + 5, 5), tmp_path / f"t{i}.pt")  # a full twin entry, walked further than the item
        paths.append(tmp_path / f"s{i}.pt")
        twins.append(tmp_path / f"t{i}.pt")
    for in_memory in (False, True):
        ds = CachedDataset(paths, in_memory, steps=2, twins=twins)
        item = ds[1]
        assert item["P_twin"].shape == item["P_orig"].shape == (2, 3, 2, 2)
        assert torch.equal(item["P_twin"][:, 0, 0, 0], torch.tensor([60.0, 61.0]))  # twin of item 1, its first 2 t
        assert torch.equal(item["x0_twin"], torch.full((3, 2, 2), 6.0))  # its twin's x0: hold_outside's region
    assert "P_twin" not in CachedDataset(paths, steps=2)[0]
    with pytest.raises(ValueError, match="1 twin entries for 2 items"):
        CachedDataset(paths, twins=twins[:1])


def test_the_writer_draws_train_faces_with_the_attribute_under_the_same_names(tmp_path):
    import json

    from asyrp.synthfaces.data import write_split, write_twins

    train = write_split(tmp_path / "train", 1, 6, {"glasses": "True"})
    twins = write_twins(train, "glasses")
    assert twins == tmp_path / "twins"
    a, b = (json.loads((f / "attributes.json").read_text()) for f in (train, twins))
    assert list(a) == list(b) and all((twins / n).is_file() for n in b)
    assert all(not a[n]["glasses"] and b[n]["glasses"] for n in a)
    assert all({k: v for k, v in a[n].items() if k not in ("glasses", "caption")}
               == {k: v for k, v in b[n].items() if k not in ("glasses", "caption")} for n in a)  # fmt: skip
    with pytest.raises(AsyrpUserError, match="not one of"):
        write_twins(train, "sunglasses")


def test_w_outside_weighs_the_held_outside_of_the_l1():
    """w_outside scales the L1 outside the pair's region only; it needs hold_outside (no outside without it)."""
    x0 = torch.zeros(1, 3, 8, 8)
    x0_twin = x0.clone()
    x0_twin[0, :, 2:4, 2:4] = 0.5
    batch = {"x0": x0, "x0_twin": x0_twin}
    plain = build_twin_guide({"dir": "twins", "hold_outside": True})
    heavy = build_twin_guide({"dir": "twins", "hold_outside": True, "w_outside": 4.0, "region_dilate": 0})
    assert plain.weights(batch) is None  # every pixel weighs 1: the unweighted L1, unchanged
    w = heavy.weights(batch)
    assert w.shape == (1, 1, 8, 8) and torch.equal(w[0, 0, 2:4, 2:4], torch.ones(2, 2)) and float(w.sum()) == 4 + 4 * 60
    P_twin = torch.zeros(1, 3, 8, 8)
    inside, outside = P_twin.clone(), P_twin.clone()
    inside[0, :, 2, 2] = 1.0  # the same error, once inside the region and once outside it
    outside[0, :, 6, 6] = 1.0
    v_in = heavy(inside, P_twin, 300, P_twin=P_twin, weight=w)[0]
    v_out = heavy(outside, P_twin, 300, P_twin=P_twin, weight=w)[0]
    assert torch.isclose(v_out, 4 * v_in)
    assert torch.isclose(plain(outside, P_twin, 300, P_twin=P_twin)[0], v_in)  # weight 1: the plain L1
    for bad in ({"w_outside": 2.0}, {"w_outside": 0.0, "hold_outside": True}):
        with pytest.raises(AsyrpUserError, match="w_outside"):
            build_twin_guide({"dir": "twins", **bad})

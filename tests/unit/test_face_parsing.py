"""The face parser of SC against upstream (tests/fixtures/face_parsing, made by running zllrunning/face-parsing.PyTorch
itself on seeded weights), its input preparation against upstream's PIL resize, its loading, and SC by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from asyrp.metrics import EditScorer, MetricAbsent, face_parsing
from asyrp.metrics.face_parsing import BiSeNet, FaceParser, FaceParserWeightsMissing, load_bisenet
from asyrp.ops.errors import AsyrpUserError
from tests.helpers import images, seeded_state

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "face_parsing" / "bisenet_upstream.pt"


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("parser") / "79999_iter.pth"
    sd = BiSeNet().state_dict()
    torch.save(seeded_state(list(sd), [list(v.shape) for v in sd.values()], seed=3), path)
    return path


def test_bisenet_equals_upstream_on_the_fixture():
    fx = torch.load(FIXTURE, map_location="cpu", weights_only=True)
    net = BiSeNet()
    mine = [(k, list(v.shape)) for k, v in net.state_dict().items()]
    assert mine == list(zip(fx["keys"], fx["shapes"]))  # upstream's keys, shapes and order
    net.load_state_dict(seeded_state(fx["keys"], fx["shapes"], fx["seed"]), strict=True)
    with torch.no_grad():
        outs = net.eval()(fx["x"])
    for out, key in zip(outs, ("logits_every8", "logits16_every8", "logits32_every8")):
        ref = fx[key]
        assert (out[:, :, ::8, ::8] - ref).abs().max() <= 1e-5 * ref.abs().max(), key  # float32 round-off
    top2 = outs[0].topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-4  # argmax is only defined to round-off where the top two differ
    assert clear.float().mean() > 0.99
    assert torch.equal(outs[0].argmax(1)[clear], fx["parsing"].long()[clear])
    assert len(torch.unique(fx["parsing"])) > 3  # the fixture exercises several classes


@pytest.mark.parametrize("size", [48, 600])
def test_preparation_matches_upstreams_pil_resize(size):
    """upstream test.py: PIL resize to 512 (bilinear), ToTensor, Normalize(ImageNet); ours works on [-1, 1] tensors."""
    from PIL import Image

    g = torch.Generator().manual_seed(size)
    u8 = (torch.rand(3, size, size, generator=g) * 255).round().to(torch.uint8)
    pil = Image.fromarray(u8.permute(1, 2, 0).numpy()).resize((512, 512), Image.BILINEAR)
    ref = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float() / 255
    parser = FaceParser(BiSeNet())
    ours = parser.prepare(u8[None].float() / 127.5 - 1)[0] * parser.std[0] + parser.mean[0]
    assert (ours - ref).abs().max() < 1.5 / 255  # PIL rounds to 8 bits; the kernels agree otherwise


def test_load_is_strict_and_names_the_fix(tmp_path, weights_file):
    net = load_bisenet(weights_file)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    with pytest.raises(FaceParserWeightsMissing, match="79999_iter.pth"):
        load_bisenet(tmp_path / "absent.pth")
    torch.save({"conv.weight": torch.zeros(1, 3, 1, 1)}, tmp_path / "other.pth")
    with pytest.raises(AsyrpUserError, match="not a BiSeNet face parser") as err:
        load_bisenet(tmp_path / "other.pth")
    assert "\n" not in str(err.value)


def test_sc_by_name_is_the_pixel_accuracy_of_the_parsings(weights_file, monkeypatch):
    monkeypatch.setattr(face_parsing, "PARSE_SIZE", 64)  # the wiring, not the resolution: 512 costs seconds
    x_src, x_edit = images(1, size=16, seed=0), images(1, size=16, seed=1)
    labels = FaceParser.from_file(weights_file)(torch.cat([x_src, x_edit]))
    assert labels.shape == (2, 64, 64)
    direct = (labels[0] == labels[1]).double().mean().item()
    assert 0 < direct < 1
    assert EditScorer(face_parser=str(weights_file)).score(x_src, x_edit, ["sc"])["sc"] == direct
    # any images -> labels callable: a two-class split of the first channel
    split = EditScorer(face_parser=lambda x: (x[:, 0] > 0).long())
    x, y = images(3, size=8, seed=2), images(3, size=8, seed=3)
    want = ((x[:, 0] > 0) == (y[:, 0] > 0)).flatten(1).double().mean(1).mean().item()
    assert split.score(x, y, ["sc"])["sc"] == pytest.approx(want, abs=1e-12)


def test_sc_absent_says_what_is_missing(tmp_path):
    x = images(1, size=8)
    with pytest.raises(MetricAbsent, match="no face parser weights") as err:
        EditScorer().score(x, x, ["sc"])
    assert "\n" not in str(err.value) and "scorer.face_parser" in str(err.value)
    assert "not found at" in EditScorer(face_parser=tmp_path / "none.pth").absent(["sc"])["sc"]
    assert not EditScorer(face_parser=lambda z: z[:, 0].long()).absent(["sc"])

"""The ArcFace IR-SE50 identity network equals the official one (tests/fixtures/identity, made by running the
upstream code on seeded weights); the ID metric, the identity loss (its gradient reaches the h-function only; off, the
loss is as before) and their missing weights behave as documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import SEEDED_STATE_RULE, seeded_state, tiny_backbone
from torch import nn

from asyrp import build
from asyrp.checks import check_train_config
from asyrp.clip import load_clip
from asyrp.config import compose
from asyrp.hfunctions import build_hfunction
from asyrp.losses import AsyrpLoss, identity_loss
from asyrp.metrics import EditScorer, IdentityWeightsMissing, MetricAbsent, load_irse50
from asyrp.metrics.identity import IRSE50
from asyrp.ops.errors import AsyrpUserError
from asyrp.samplers import asyrp_step
from asyrp.schedules import alphas_cumprod, make_betas

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "identity" / "irse50_upstream.pt"


@pytest.fixture(scope="module")
def upstream():
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def features(upstream):
    torch.set_num_threads(1)
    return load_irse50(seeded_state(upstream["keys"], upstream["shapes"], upstream["seed"]))


def test_layout_is_the_official_file_layout(upstream):
    with torch.device("meta"):  # names and shapes only
        sd = IRSE50().state_dict()
    assert list(sd) == upstream["keys"]  # same names, same order: model_ir_se50.pth loads strictly
    assert [list(v.shape) for v in sd.values()] == upstream["shapes"]
    assert upstream["seed_rule"] == SEEDED_STATE_RULE


def test_features_equal_upstream_to_float32_round_off(upstream, features):
    x = upstream["x_uint8"].float() / 127.5 - 1
    assert not any(p.requires_grad for p in features.parameters()) and not features.training
    with torch.no_grad():
        f = features(x)
    assert (f - upstream["features"]).abs().max() < 1e-5
    assert torch.allclose(f.norm(dim=1), torch.ones(2))
    # the metric: ID = cos(F(src), F(edit)) = 1 - the official IDLoss of the pair
    r = EditScorer(identity=features).score(x[:1], x[1:], ["id"])
    assert r["id"] == pytest.approx(float(1 - upstream["loss_swapped"][0]), abs=1e-5)
    assert r["id"] < 0.9  # two different images: far from 1


def test_upstream_training_call_gives_the_edit_no_gradient(upstream):
    """Why asyrp.losses.identity_loss detaches the original instead: upstream detaches its first argument, and Asyrp's
    training passes the edited image there."""
    assert upstream["upstream_edit_gradient_is_none"] is True


def test_wrong_image_size_is_one_line_naming_the_fix(features):
    with pytest.raises(
        AsyrpUserError, match="crops .35:223, 32:220. of 256x256 .* got 64x64 images: use a 256x256"
    ) as e:
        EditScorer(identity=features).score(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64), ["id"])
    assert "\n" not in str(e.value)


def test_missing_or_wrong_weights_are_one_line(tmp_path):
    missing = tmp_path / "model_ir_se50.pth"
    assert EditScorer().absent(["id", "psnr"]) == {
        "id": "no IR-SE50 weights (set identity.weights to model_ir_se50.pth)"
    }
    with pytest.raises(MetricAbsent, match=f"metric id: IR-SE50 weights not found at {missing}") as e:
        EditScorer(identity=missing).score(torch.zeros(1, 3, 256, 256), torch.zeros(1, 3, 256, 256), ["id"])
    assert "\n" not in str(e.value)
    with pytest.raises(IdentityWeightsMissing, match="needs model_ir_se50.pth at .* set identity.weights"):
        build.identity({"weights": str(missing)})
    with pytest.raises(AsyrpUserError, match="identity.weights is not set"):
        build.identity({"weights": None})
    with pytest.raises(
        AsyrpUserError, match="not IR-SE50 weights in the official layout .*Missing key.*input_layer.1"
    ) as e:
        load_irse50({"input_layer.0.weight": torch.zeros(64, 3, 3, 3)})
    assert "\n" not in str(e.value)


# -- the identity loss ------------------------------------------------------------------------------------------------
class Refuses(nn.Module):
    def forward(self, x):
        raise AssertionError("the identity network must not run at w_id=0")


def _step(n: int = 2):
    """One training step on a tiny backbone: a DeltaBlock's edited P_t and the unedited one (n images, 16x16)."""
    bb = tiny_backbone()
    hf = build_hfunction({"kind": "delta_block", "num_groups": 8, "seed": 0}, bb)
    x = torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return bb, hf, asyrp_step(bb, x, 800, 700, alphas_cumprod(make_betas("linear")), hf)


@pytest.fixture(scope="module")
def clip():
    return load_clip(compose("train", ["clip=tiny"], output_dir="/tmp/unused").clip)


def test_identity_loss_off_leaves_the_loss_as_before(clip):
    _, hf, step = _step()
    d = clip.text_direction(["face"], ["smiling face"])
    e_x0 = clip.encode_image(torch.zeros(2, 3, 16, 16))
    before = AsyrpLoss(clip, d, 0.5)(e_x0, step.P_edit, step.P_orig)
    off = AsyrpLoss(clip, d, 0.5, w_id=0.0, identity=Refuses())(e_x0, step.P_edit, step.P_orig)
    assert list(off) == list(before) == ["loss", "clip", "recon"]
    assert torch.equal(off["loss"], before["loss"])
    assert compose("train", ["debug=smoke"], output_dir="/tmp/unused").model.loss.w_id == 0  # off by default


def test_identity_loss_is_added_with_its_weight(clip):
    _, _, step = _step()
    means = lambda x: F.normalize(x.mean((2, 3)), dim=1)  # noqa: E731 - cheap stand-in features
    d = clip.text_direction(["face"], ["smiling face"])
    e_x0 = clip.encode_image(torch.zeros(2, 3, 16, 16))
    terms = AsyrpLoss(clip, d, 0.5, w_id=2.0, identity=means)(e_x0, step.P_edit, step.P_orig)
    assert list(terms) == ["loss", "clip", "recon", "id"]
    off = AsyrpLoss(clip, d, 0.5)(e_x0, step.P_edit, step.P_orig)
    cos = (means(step.P_edit) * means(step.P_orig)).sum(1)
    assert float(terms["id"]) == pytest.approx(float(1 - cos.mean()), abs=1e-6)
    assert torch.allclose(terms["loss"], off["loss"] + 2.0 * terms["id"], atol=1e-6)


def test_identity_loss_gradient_reaches_only_the_hfunction(features):
    bb, hf, step = _step(1)
    faces = nn.Sequential(nn.Upsample(size=256, mode="bilinear"), features)  # the 16x16 P_t as a 256x256 face
    P_orig = step.P_orig.clone().requires_grad_(True)  # would collect a gradient if the original side had one
    value = identity_loss(faces, step.P_edit, P_orig)
    assert 0 < float(value.detach()) < 2
    value.sum().backward()
    grads = [p.grad for p in hf.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert P_orig.grad is None
    assert all(not p.requires_grad and p.grad is None for p in [*bb.parameters(), *features.parameters()])


def test_identity_loss_settings_are_one_error_before_training(tmp_path):
    missing = tmp_path / "model_ir_se50.pth"
    cfg = compose("train", ["debug=smoke", "model.loss.w_id=1", f"identity.weights={missing}"], output_dir=tmp_path)
    with pytest.raises(
        AsyrpUserError, match=f"w_id=1.0 trains with the IR-SE50 identity loss: .* not found at {missing}"
    ):
        check_train_config(cfg)
    cfg = compose("train", ["debug=smoke", "model.loss.w_id=-1"], output_dir=tmp_path)
    with pytest.raises(AsyrpUserError, match="model.loss.w_id=-1 must be >= 0"):
        check_train_config(cfg)
    with pytest.raises(ValueError, match="needs the identity network"):
        AsyrpLoss(None, torch.zeros(2), 0.5, w_id=1.0)

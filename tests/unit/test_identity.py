"""The ArcFace IR-SE50 identity network equals the official one (tests/fixtures/identity, made by running the
upstream code on seeded weights), and the ID metric and its missing weights behave as documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import SEEDED_STATE_RULE, seeded_state

from asyrp import build
from asyrp.metrics import EditScorer, IdentityWeightsMissing, MetricAbsent, load_irse50
from asyrp.metrics.identity import IRSE50
from asyrp.ops.errors import AsyrpUserError

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
    with pytest.raises(AsyrpUserError, match="not IR-SE50 weights in the official layout") as e:
        load_irse50({"input_layer.0.weight": torch.zeros(64, 3, 3, 3)})
    assert "\n" not in str(e.value)

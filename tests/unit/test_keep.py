"""Keep terms of the training loss (asyrp.keep): off changes nothing; on, their gradient reaches the h-function only;
bad settings are one clear error before any training."""

import pytest
import torch
from helpers import tiny_backbone

from asyrp.checks import check_train_config
from asyrp.clip import FrozenCLIP, load_clip
from asyrp.config import compose
from asyrp.hfunctions import build_hfunction
from asyrp.keep import build_keep, clip_keep
from asyrp.losses import AsyrpLoss, directional_clip_loss, recon_loss
from asyrp.ops.errors import AsyrpUserError
from asyrp.samplers import asyrp_step
from asyrp.schedules import alphas_cumprod, make_betas

A = alphas_cumprod(make_betas("linear"))
PAIRS = [["a face", "a red face"], ["a small face", "a big face"]]


@pytest.fixture(scope="module")
def clip() -> FrozenCLIP:
    return load_clip(compose("train", ["clip=tiny"], output_dir="/tmp/unused").clip)


def _step(clip, seed=0):
    """One training step's inputs: a tiny backbone, a DeltaBlock, the edited and unedited P_t, delta_h."""
    bb = tiny_backbone()
    hf = build_hfunction({"kind": "delta_block", "num_groups": 8, "seed": seed}, bb)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    step = asyrp_step(bb, x, 800, 700, A, hf)
    e_x0 = clip.encode_image(torch.rand(2, 3, 16, 16) * 2 - 1)
    return bb, hf, step, e_x0


def _grads(hf):
    return [p.grad.clone() if p.grad is not None else None for p in hf.parameters()]


def test_keep_off_leaves_the_loss_and_its_gradients_as_before(clip):
    """Without keep terms the step's loss is today's formula, value and gradient to the last bit."""
    _, hf, step, e_x0 = _step(clip)
    d = clip.text_direction(["face"], ["smiling face"])
    terms = AsyrpLoss(clip, d, 0.5, w_recon=3.0)(e_x0, step.P_edit, step.P_orig, step.delta_h, 800)
    assert list(terms) == ["loss", "clip", "recon"]  # nothing new is logged
    terms["loss"].backward(retain_graph=True)
    ours = _grads(hf)
    hf.zero_grad()
    before = directional_clip_loss(clip.encode_image(step.P_edit), e_x0, d).mean() + 1.5 * recon_loss(
        step.P_edit, step.P_orig
    )
    assert torch.equal(terms["loss"].detach(), before.detach())
    before.backward()
    assert all(torch.equal(a, b) for a, b in zip(ours, _grads(hf)))
    assert build_keep(None, clip) == [] and build_keep({}, clip) == []


def test_clip_keep_gradient_is_nonzero_and_reaches_only_the_hfunction(clip):
    bb, hf, step, e_x0 = _step(clip)
    keep = clip_keep(clip, {"w_keep": 2.0, "pairs": PAIRS})
    assert keep.directions.shape[0] == 2 and torch.allclose(keep.directions.norm(dim=-1), torch.ones(2))
    d = clip.text_direction(["face"], ["smiling face"])
    terms = AsyrpLoss(clip, d, 0.5, keep=[keep])(e_x0, step.P_edit, step.P_orig, step.delta_h, 800)
    assert set(terms) == {"loss", "clip", "recon", "keep_clip"}  # every term is logged
    off = AsyrpLoss(clip, d, 0.5)(e_x0, step.P_edit, step.P_orig)
    assert torch.allclose(terms["loss"], off["loss"] + 2.0 * terms["keep_clip"], atol=1e-6)
    # the keep term alone: |cos| of the CLIP image change with the kept directions, by hand
    value = keep(clip.encode_image(step.P_edit), step.P_orig, step.delta_h, 800)
    img = torch.nn.functional.normalize(clip.encode_image(step.P_edit) - clip.encode_image(step.P_orig), dim=-1)
    assert torch.allclose(value, (img @ keep.directions.T).abs().mean(), atol=1e-6)
    value.backward()
    grads = [p.grad for p in hf.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    frozen = [*bb.parameters(), *clip.parameters()]
    assert all(not p.requires_grad and p.grad is None for p in frozen)
    assert not keep.directions.requires_grad


def _train_cfg(tmp_path, *overrides):
    return compose("train", ["debug=smoke", "keep=clip", *overrides], output_dir=tmp_path)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("model.loss.keep.clip.pairs=[]", "keep=clip needs model.loss.keep.clip.pairs"),
        ("model.loss.keep.clip.pairs=[[a face,a face]]", "the same text on both sides"),
        ("model.loss.keep.clip.pairs=[[a face]]", r"pairs\[0\].*two non-empty texts"),
        ("model.loss.keep.clip.w_keep=-1", "w_keep=-1 must be >= 0"),
        ("+model.loss.keep.probes=1", "probes is not a keep kind"),
    ],
)
def test_bad_clip_keep_settings_are_one_error_before_training(tmp_path, override, match):
    cfg = _train_cfg(tmp_path, "model.loss.keep.clip.pairs=[[a face,a red face]]", override)
    with pytest.raises(AsyrpUserError, match=match):
        check_train_config(cfg)


def test_a_pair_the_clip_model_cannot_tell_apart_is_refused(clip):
    # the tiny CLIP's tokenizer lower-cases: the two sides differ as strings, not as embeddings
    with pytest.raises(AsyrpUserError, match="same CLIP text embedding"):
        clip_keep(clip, {"pairs": [["a face", "A FACE"]]})


def test_keep_clip_experiment_composes_with_its_pairs(tmp_path):
    cfg = compose("train", ["experiment=synthfaces_glasses_keep_clip"], output_dir=tmp_path)
    assert cfg.attribute.name == "synthfaces_glasses" and cfg.plan.t0 == 700  # today's glasses recipe underneath
    pairs = cfg.model.loss.keep.clip.pairs
    assert len(pairs) >= 4 and all(a != b for a, b in pairs)
    assert "keep" not in compose("train", ["experiment=synthfaces_glasses"], output_dir=tmp_path).model.loss

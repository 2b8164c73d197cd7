"""CLIP through open_clip (tiny, offline) and the Asyrp loss terms."""

import math

import pytest
import torch

from asyrp.clip import FrozenCLIP, load_clip, prompt_templates
from asyrp.config import compose
from asyrp.losses import AsyrpLoss, direction_cosine, directional_clip_loss, recon_loss
from asyrp.ops.errors import AsyrpUserError


@pytest.fixture(scope="module")
def clip() -> FrozenCLIP:
    cfg = compose("train", ["clip=tiny"], output_dir="/tmp/unused").clip
    return load_clip(cfg)


def test_tiny_clip_is_frozen_and_offline(clip):
    assert not any(p.requires_grad for p in clip.parameters())
    assert not clip.training
    x = torch.rand(2, 3, 16, 16) * 2 - 1  # diffusion range, another size than CLIP's input
    assert clip.preprocess(x).shape == (2, 3, 32, 32)
    e = clip.encode_image(x)
    assert torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_preprocess_maps_diffusion_range_to_clip_normalisation(clip):
    white = torch.ones(1, 3, 32, 32)
    out = clip.preprocess(white)
    expected = (1 - clip.mean) / clip.std
    assert torch.allclose(out, expected.expand_as(out), atol=1e-5)


def test_text_direction_is_unit_and_antisymmetric(clip):
    d = clip.text_direction(["face"], ["smiling face"])
    assert d.shape == (32,)
    assert abs(float(d.norm()) - 1) < 1e-5
    assert torch.allclose(d, -clip.text_direction(["smiling face"], ["face"]), atol=1e-5)
    c = clip.text_cosine(["face"], ["smiling face"])
    assert -1 <= c <= 1


def test_official_templates_come_from_open_clip():
    assert len(prompt_templates("imagenet")) == 80
    assert prompt_templates(["a {} here"])[0]("cat") == "a cat here"
    with pytest.raises(AsyrpUserError):
        prompt_templates("nonsense")


def test_directional_loss_official_form():
    text = torch.tensor([1.0, 0.0])
    src = torch.zeros(3, 2)
    edit = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # cos 1, 0, -1
    assert torch.allclose(direction_cosine(edit, src, text), torch.tensor([1.0, 0.0, -1.0]))
    loss = directional_clip_loss(edit[:2], src[:2], text)
    # -log((2 - d) / 2), d = 1 - cos
    assert torch.allclose(loss, torch.tensor([0.0, math.log(2.0)]), atol=1e-6)


def test_loss_weights_and_gradient(clip):
    P_orig = torch.rand(2, 3, 16, 16) * 2 - 1
    P_edit = (P_orig + 0.1 * torch.randn_like(P_orig)).requires_grad_(True)
    e_x0 = clip.encode_image(torch.rand(2, 3, 16, 16) * 2 - 1)
    d = clip.text_direction(["face"], ["smiling face"])
    scaled = AsyrpLoss(clip, d, 0.5, w_clip=1.0, w_recon=3.0, recon_scale_by_text_cosine=True)
    plain = AsyrpLoss(clip, d, 0.5, w_clip=1.0, w_recon=3.0, recon_scale_by_text_cosine=False)
    a, b = scaled(e_x0, P_edit, P_orig), plain(e_x0, P_edit, P_orig)
    assert torch.allclose(a["recon"], recon_loss(P_edit, P_orig))
    assert torch.allclose(a["loss"], a["clip"] + 1.5 * a["recon"], atol=1e-6)
    assert torch.allclose(b["loss"], b["clip"] + 3.0 * b["recon"], atol=1e-6)
    a["loss"].backward()
    assert P_edit.grad is not None and P_edit.grad.abs().sum() > 0


def test_zero_w_clip_logs_the_clip_term_without_a_graph_through_clip(clip):
    """guide=twins trains with w_clip = 0: CLIP runs for the log only, and the gradient is the one without CLIP."""
    P_orig = torch.rand(2, 3, 16, 16) * 2 - 1
    P_edit = (P_orig + 0.1 * torch.randn_like(P_orig)).requires_grad_(True)
    e_x0 = clip.encode_image(torch.rand(2, 3, 16, 16) * 2 - 1)
    d = clip.text_direction(["face"], ["smiling face"])
    graph = []
    hook = clip.model.visual.register_forward_hook(lambda m, i, o: graph.append(o.requires_grad))
    try:
        terms = AsyrpLoss(clip, d, 0.5, w_clip=0.0, w_recon=3.0, recon_scale_by_text_cosine=False)(e_x0, P_edit, P_orig)
        on = AsyrpLoss(clip, d, 0.5, w_clip=1.0, w_recon=3.0)(e_x0, P_edit, P_orig)
    finally:
        hook.remove()
    assert graph == [False, True]  # CLIP's output carries a graph only when its term is weighted
    want = directional_clip_loss(clip.encode_image(P_edit), e_x0, d).mean()
    assert torch.allclose(terms["clip"], want, atol=1e-6) and not terms["clip"].requires_grad
    (g,) = torch.autograd.grad(terms["loss"], P_edit)
    (g_recon,) = torch.autograd.grad(3.0 * recon_loss(P_edit, P_orig), P_edit)
    assert torch.equal(g, g_recon)
    assert on["loss"].requires_grad


def test_missing_local_clip_weights_is_one_clear_error(tmp_path):
    missing = tmp_path / "ViT-B-16.pt"
    with pytest.raises(AsyrpUserError, match="CLIP weights file not found.*ViT-B-16.pt.*clip.pretrained"):
        load_clip({"name": "vit_b16", "model": "ViT-B-16", "pretrained": str(missing), "model_config": None})


def test_clip_reference_p_orig_starts_the_image_direction_at_p_orig(clip):
    P_orig = torch.rand(2, 3, 16, 16) * 2 - 1
    P_edit = (P_orig + 0.1 * torch.randn_like(P_orig)).requires_grad_(True)
    e_x0 = clip.encode_image(torch.rand(2, 3, 16, 16) * 2 - 1)
    d = clip.text_direction(["face"], ["smiling face"])
    official = AsyrpLoss(clip, d, 0.5)(e_x0, P_edit, P_orig)
    ours = AsyrpLoss(clip, d, 0.5, clip_reference="P_orig")(e_x0, P_edit, P_orig)
    want = directional_clip_loss(clip.encode_image(P_edit), clip.encode_image(P_orig), d).mean()
    assert torch.allclose(ours["clip"], want, atol=1e-6)
    assert not torch.allclose(official["clip"], ours["clip"])  # e_x0 is ignored with P_orig
    ours["loss"].backward()
    assert P_edit.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="clip_reference"):
        AsyrpLoss(clip, d, 0.5, clip_reference="x_t")

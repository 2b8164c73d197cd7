"""The LightningModule: only the h-function is trained and saved; the official per-timestep schedule."""

import copy

import pytest
import pytorch_lightning as pl
import torch
from helpers import tiny_backbone

from asyrp.clip import load_clip
from asyrp.config import compose
from asyrp.data import AsyrpDataModule
from asyrp.hfunctions import build_hfunction
from asyrp.losses import directional_clip_loss, recon_loss
from asyrp.module import AsyrpModule
from asyrp.plan import EditPlan, generation_pairs
from asyrp.samplers import asyrp_step
from asyrp.schedules import alphas_cumprod, make_betas, timesteps

A = alphas_cumprod(make_betas("linear"))
N_GEN, T_EDIT = 4, 500


@pytest.fixture()
def parts(tmp_path):
    pl.seed_everything(0)
    bb = tiny_backbone()
    clip = load_clip(compose("train", ["clip=tiny"], output_dir=str(tmp_path)).clip)
    hf = build_hfunction({"kind": "delta_block", "num_groups": 8, "seed": 0}, bb)
    dm = AsyrpDataModule(kind="random_samples", n_images=2, batch_size=2, cache_dir=str(tmp_path / "cache"), n_val=0)
    dm.bind(bb, A, EditPlan(n_inv=N_GEN, n_gen=N_GEN))
    return bb, clip, hf, dm


def make_module(bb, clip, hf, lr=0.5):
    return AsyrpModule(
        hf,
        bb,
        clip,
        A,
        source=["face"],
        target=["smiling face"],
        optimizer=lambda p: torch.optim.SGD(p, lr=lr),
        scheduler=None,
        plan=EditPlan(n_inv=N_GEN, n_gen=N_GEN, t_edit=T_EDIT),
        loss={"w_clip": 1.0, "w_recon": 3.0},
        config={"hfunction": {"kind": "delta_block", "num_groups": 8}},
    )


def test_only_the_hfunction_is_registered(parts):
    bb, clip, hf, _ = parts
    m = make_module(bb, clip, hf)
    assert all(k.startswith("hfunc.") for k in m.state_dict())
    assert {id(p) for p in m.parameters()} == {id(p) for p in hf.parameters()}
    assert list(m.hparams) == ["config"]
    m.to(torch.float64)  # the frozen networks follow the module
    assert next(bb.parameters()).dtype == torch.float64 and next(clip.parameters()).dtype == torch.float64
    m.to(torch.float32)


def test_training_follows_the_official_schedule(parts, tmp_path):
    bb, clip, hf, dm = parts
    ref = copy.deepcopy(hf)
    bb_before = {k: v.clone() for k, v in bb.state_dict().items()}
    m = make_module(bb, clip, hf)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        use_distributed_sampler=False,
    )
    trainer.fit(m, datamodule=dm)
    steps = [(k, t, tn) for k, (t, tn) in enumerate(generation_pairs(timesteps(N_GEN, 999))) if t >= T_EDIT]
    assert [t for _, t, _ in steps] == [999, 666]
    assert trainer.global_step == len(steps)  # one optimiser step per training timestep

    # the same thing by hand: the edited walk from x_T, one SGD step per t, cached unedited P_t^orig
    batch = next(iter(dm.train_dataloader()))
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    d = clip.text_direction(["face"], ["smiling face"])
    cos = clip.text_cosine(["face"], ["smiling face"])
    x, e_x0 = batch["x_T"], clip.encode_image(batch["x0"]).detach()
    for k, t, tn in steps:
        st = asyrp_step(bb, x, t, tn, A, ref)
        loss = directional_clip_loss(clip.encode_image(st.P_edit), e_x0, d).mean() + 3.0 * cos * recon_loss(
            st.P_edit, batch["P_orig"][:, k]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        x = st.x_next.detach()
    for (n, p), q in zip(hf.named_parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-5, rtol=1e-4), n
    assert any(
        not torch.equal(p, q)
        for p, q in zip(
            hf.parameters(), build_hfunction({"kind": "delta_block", "num_groups": 8, "seed": 0}, bb).parameters()
        )
    ), "nothing was trained"
    assert all(torch.equal(v, bb_before[k]) for k, v in bb.state_dict().items()), "the backbone changed"


def test_lightning_checkpoint_holds_only_the_hfunction(parts, tmp_path):
    bb, clip, hf, dm = parts
    m = make_module(bb, clip, hf)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        use_distributed_sampler=False,
    )
    trainer.fit(m, datamodule=dm)
    path = tmp_path / "x.ckpt"
    trainer.save_checkpoint(path)
    ck = torch.load(path, weights_only=True)
    assert set(ck["state_dict"]) == {f"hfunc.{k}" for k in hf.state_dict()}
    assert "config" in ck["hyper_parameters"]


def test_validation_and_edit_grids_do_not_change_the_trained_hfunction(tmp_path):
    """make demo trains without validation edits and step grids (it shows neither): the h-function must come out
    bit-identical to a run with both, shuffled batches over two epochs (validation's loader draws from the global
    random stream; the training order has its own generator)."""
    from asyrp.tasks.train import train

    base = ["debug=smoke", "~logger", "model.n_iter=2", "dataset.shuffle=true", f"dataset.cache_dir={tmp_path / 'c'}"]
    runs = {
        "shown": [],
        "cut": ["trainer.limit_val_batches=0", "callbacks.edit_grid.every_n_steps=0", "optimized_metric=null"],
    }
    weights, metrics = {}, {}
    for name, extra in runs.items():
        metrics[name], objects = train(compose("train", [*base, *extra], output_dir=tmp_path / name))
        weights[name] = objects["module"].hfunc.state_dict()
    assert "val/clip_direction" in metrics["shown"] and "val/clip_direction" not in metrics["cut"]
    assert (tmp_path / "shown" / "images" / "step_0000002.png").is_file()  # the grids ran in the shown run
    assert not (tmp_path / "cut" / "images" / "step_0000002.png").exists()
    assert (tmp_path / "cut" / "images" / "final.png").is_file()  # the end-of-training grid is kept
    assert weights["shown"].keys() == weights["cut"].keys()
    for k, v in weights["shown"].items():
        assert torch.equal(v, weights["cut"][k]), k

"""Performance behaviour (never wall time): pass counts at the floor, the cache's second run, the speed options' tolerance."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest
import torch
from helpers import images, tiny_backbone

from asyrp.hfunctions import Composition, DeltaBlock
from asyrp.perf import PassCounter, PerfBackbone, PerfConfig, inference_context, loader_kwargs, set_sdpa, with_perf
from asyrp.plan import EditPlan
from asyrp.samplers import asyrp_step, edit, edit_eps
from asyrp.schedules import alphas_cumprod, make_betas, timesteps

A = alphas_cumprod(make_betas("linear"))
B, N_INV, N_GEN, T_EDIT, T_BOOST = 2, 6, 8, 500, 200
N_EDIT = sum(t >= T_EDIT for t in timesteps(N_GEN))  # 4
PLAN = EditPlan(n_inv=N_INV, n_gen=N_GEN, t_edit=T_EDIT, t_boost=T_BOOST)
KW = dict(a=A, plan=PLAN)


def _block(bb, seed=0):
    torch.manual_seed(seed)
    f = DeltaBlock("ddpm", bb.h_channels, bb.emb_dim)
    with torch.no_grad():
        for p in f.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return f


def _floor_rows(K: int = 1, invert: bool = True) -> tuple[int, int]:
    """(encoder rows, decoder rows) of an edit of B images with K settings at the floor."""
    inv = (N_INV - 1) * B if invert else 0
    n_plain = N_GEN - N_EDIT
    return inv + K * B * N_GEN, inv + K * B * (2 * N_EDIT + n_plain)


@pytest.fixture(scope="module")
def bb():
    b = tiny_backbone(0)
    _ = b.h_shape  # probe before counting
    return b


# -- pass counts --------------------------------------------------------------------------------------------------
def test_edit_at_the_floor(bb):
    hf = _block(bb)
    with PassCounter(bb) as c:
        edit(bb, images(B), hf, **KW, seeds=[0, 1])
    assert (c.rows("encode"), c.rows("decode")) == _floor_rows()
    # one encoder call per step; Asyrp steps decode 2B rows in ONE call
    assert len([x for x in c.calls if x.kind == "encode"]) == (N_INV - 1) + N_GEN
    assert [x.rows for x in c.calls if x.kind == "decode"] == [B] * (N_INV - 1) + [2 * B] * N_EDIT + [B] * (
        N_GEN - N_EDIT
    )


@pytest.mark.parametrize("kind", ["strip", "composition"])
def test_strip_and_composition_invert_once(bb, kind):
    K = 3
    if kind == "strip":
        hf, strength, settings = _block(bb), [0.25, 0.5, 1.0], K
    else:
        hf, strength, settings = Composition([_block(bb, s) for s in range(K)]), [0.5, -1.0, 1.0], 1
    with PassCounter(bb) as c:
        res = edit(bb, images(B), hf, **KW, strength=strength, seeds=[0, 1])
    assert (c.rows("encode"), c.rows("decode")) == _floor_rows(settings)
    inversion = [x for x in c.calls if x.kind == "encode"][: N_INV - 1]
    assert all(x.rows == B for x in inversion)  # each image inverted once, not once per setting
    assert len([x for x in c.calls if x.kind == "encode"]) == (N_INV - 1) + N_GEN  # the K settings share every call
    assert res.x_edit.shape[0] == (K if kind == "strip" else B)


def test_training_step_at_the_floor(bb, tmp_path):
    """AsyrpModule.training_step: per optimiser step one encoder pass of B rows and 2B decoder rows, no reference
    pass (P_t^orig is read from the cache), and the backward pass covers only the B edited rows."""
    from asyrp.clip import load_clip
    from asyrp.data.cache import InversionCache, noise_sources
    from asyrp.module import AsyrpModule

    clip = load_clip(
        {
            "name": "tiny",
            "model": "tiny",
            "pretrained": None,
            "templates": "none",
            "init_seed": 0,
            "model_config": {
                "embed_dim": 16,
                "vision_cfg": {"image_size": 16, "layers": 1, "width": 16, "patch_size": 8, "head_width": 8},
                "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
            },
        }
    )
    cache = InversionCache(tmp_path, bb, A, PLAN)
    entries = cache.compute(noise_sources(0, B), images(B))
    batch = {k: torch.stack([e[k] for e in entries]) for k in ("x0", "x_T", "x_rec", "P_orig", "t")}
    batch["index"] = torch.arange(B)
    m = AsyrpModule(
        _block(bb),
        bb,
        clip,
        A,
        source=["face"],
        target=["smiling face"],
        optimizer=functools.partial(torch.optim.SGD, lr=0.01),
        plan=PLAN,
    )
    opt = m.configure_optimizers()
    m.optimizers = lambda *a, **k: opt
    m.manual_backward = lambda loss, *a, **k: loss.backward()
    m.log_dict = m.log = lambda *a, **k: None
    before = [p.detach().clone() for p in m.hfunc.parameters()]
    with PassCounter(bb) as c:
        m.training_step(batch, 0)
    n_steps = len(m.train_steps)
    assert n_steps == N_EDIT
    assert c.rows("encode") == B * n_steps and c.rows("decode") == 2 * B * n_steps
    grad_rows = [x.rows for x in c.calls if x.kind == "decode" and x.grad]
    assert grad_rows == [B] * n_steps  # the unedited half is decoded without a graph
    assert any(not torch.equal(p, q) for p, q in zip(before, m.hfunc.parameters()))


def test_training_split_equals_the_batched_decode(bb):
    """Under grad, edit_eps decodes eps without a graph: same values and same h-function gradient as one batched
    decode of cat(h, h + delta_h)."""
    x = torch.randn(B, 3, 16, 16)
    hf = _block(bb)
    ee = edit_eps(bb, x, 700, hf)
    ee.eps_edit.square().mean().backward()
    g_split = [p.grad.clone() for p in hf.parameters()]
    hf.zero_grad()
    enc = bb.encode(x, torch.full((B,), 700.0))
    dh = hf(enc.h, enc.emb, torch.full((B,), 700.0))
    out = bb.eps(bb.decode(enc, torch.cat([enc.h, enc.h + dh])))
    out[B:].square().mean().backward()
    assert torch.allclose(ee.eps, out[:B].detach(), atol=1e-5) and torch.allclose(ee.eps_edit, out[B:], atol=1e-5)
    for g, p in zip(g_split, hf.parameters()):
        assert torch.allclose(g, p.grad, rtol=1e-4, atol=1e-7)
    assert not ee.eps.requires_grad and ee.eps_edit.requires_grad
    # without a gradient to record it stays one batched call
    with torch.no_grad(), PassCounter(bb) as c:
        edit_eps(bb, x, 700, hf)
    assert [x.rows for x in c.calls if x.kind == "decode"] == [2 * B]


def test_second_run_does_zero_inversion_passes(bb, tmp_path):
    from asyrp.data import AsyrpDataModule
    from asyrp.ops.io import atomic_write_png

    folder = tmp_path / "imgs"
    for i, img in enumerate(images(3, seed=4)):
        atomic_write_png(img, folder / f"img_{i}.png")
    counts = []
    for _ in range(2):
        dm = AsyrpDataModule(kind="folder", path=str(folder), n_images=3, batch_size=2, cache_dir=str(tmp_path / "c"))
        dm.bind(bb, A, PLAN)
        with PassCounter(bb) as c:
            dm.prepare_data()
            dm.setup("fit")
        counts.append(c.rows("encode"))
    assert counts == [3 * ((N_INV - 1) + N_GEN), 0]
    # the key is the content: renaming a file does not recompute it
    (folder / "img_0.png").rename(folder / "renamed.png")
    dm = AsyrpDataModule(kind="folder", path=str(folder), n_images=3, batch_size=2, cache_dir=str(tmp_path / "c"))
    dm.bind(bb, A, PLAN)
    with PassCounter(bb) as c:
        dm.prepare_data()
    assert c.rows("encode") == 0


def test_counter_restores_the_backbone(bb):
    with PassCounter(bb):
        assert "encode" in bb.__dict__
    assert "encode" not in bb.__dict__ and "decode" not in bb.__dict__


# -- speed options: outputs within a stated tolerance -------------------------------------------------------------
def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


ROOT = Path(__file__).resolve().parents[2]


def _arch_backbone(name):
    from omegaconf import OmegaConf

    from asyrp.backbones import load_backbone

    arch = OmegaConf.load(ROOT / "conf" / "arch" / f"{name}.yaml")
    torch.manual_seed(0)
    return load_backbone(arch.family, OmegaConf.to_container(arch.config, resolve=True), None)


@pytest.fixture(scope="module", params=["tiny_ddpm", "tiny_ncsnpp"])
def arch_bb(request):
    return _arch_backbone(request.param)


# option -> tolerance (max abs error relative to the output's max abs value)
TOLERANCE = {
    "channels_last": 1e-5,
    "sdpa_on": 1e-5,
    "sdpa_off": 1e-5,
    "bf16": 5e-2,
}


@pytest.mark.parametrize("option", list(TOLERANCE))
def test_perf_option_within_tolerance(arch_bb, option):
    bb = arch_bb
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([700.0, 30.0])
    cfg = {
        "channels_last": {"channels_last": True},
        "sdpa_on": {"sdpa": True},
        "sdpa_off": {"sdpa": False},
        "bf16": {"autocast": "bf16"},
    }[option]
    fast = with_perf(bb, cfg)
    with torch.no_grad():
        ref = with_perf(bb, {"sdpa": False})(x, t)
        try:
            out = fast(x, t)
            enc = fast.encode(x, t)
            h_out = fast.decode(enc, torch.cat([enc.h, enc.h]))
            on = fast.options(x.device)
        finally:
            with_perf(bb, {"sdpa": False})(x, t)
            with_perf(bb, None)(x, t)  # back to the defaults (auto: off on CPU)
    assert {
        "channels_last": on["channels_last"],
        "sdpa_on": on["sdpa"] is True,
        "sdpa_off": on["sdpa"] is False,
        "bf16": on["autocast"] == torch.bfloat16,
    }[option]  # the wrapper's option is the one in effect
    assert out.dtype == x.dtype and enc.h.dtype == x.dtype  # the h-function and DDIM see the input dtype
    assert _rel(out, ref) < TOLERANCE[option]
    assert _rel(h_out[2:], ref) < TOLERANCE[option]


def test_perf_defaults_are_off_on_cpu(arch_bb):
    bb = with_perf(arch_bb, None)
    assert bb.options("cpu") == {"sdpa": None, "channels_last": False, "autocast": None, "compile": False}
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([700.0, 30.0])
    with torch.no_grad():
        out, ref = bb(x, t), arch_bb(x, t)
        enc = bb.encode(x, t)
    assert torch.equal(out, ref) and torch.equal(bb.eps(out), arch_bb.eps(ref))  # bit for bit the unwrapped net
    assert (bb.h_shape, bb.emb_dim, bb.image_size, bb.family) == (
        arch_bb.h_shape,
        arch_bb.emb_dim,
        arch_bb.image_size,
        arch_bb.family,
    )
    assert tuple(enc.h.shape[1:]) == bb.h_shape
    assert all(not getattr(m, "use_sdpa", False) for m in bb.modules())
    assert with_perf(bb, {"channels_last": True}).inner is arch_bb  # re-wrapping starts from the inner backbone
    assert loader_kwargs(None, "cpu") == {"pin_memory": False}
    assert isinstance(inference_context(None, "cpu"), torch.no_grad)
    assert loader_kwargs({"pin_memory": True, "num_workers": 2}) == {"pin_memory": True, "num_workers": 2}
    with pytest.raises(ValueError, match="unknown perf option"):
        PerfConfig.from_any({"autocats": "bf16"})


def test_perf_config_file_matches_the_dataclass():
    from omegaconf import OmegaConf

    cfg = PerfConfig.from_any(OmegaConf.load(ROOT / "conf" / "perf" / "default.yaml"))
    assert cfg == PerfConfig()


def test_diffusers_attention_uses_sdpa_by_default():
    bb = _arch_backbone("tiny_ddpm")
    procs = {type(m.processor).__name__ for m in bb.modules() if hasattr(m, "processor")}
    assert procs == {"AttnProcessor2_0"}
    assert set_sdpa(bb, False) > 0
    assert {type(m.processor).__name__ for m in bb.modules() if hasattr(m, "processor")} == {"AttnProcessor"}


def test_edit_under_inference_mode_and_autocast(bb):
    """inference_mode changes nothing numerically; under bf16 autocast an Asyrp step (x_{t-1} and P_t^edit) stays
    within 5% of its scale. (Not a whole edit: a random net is no denoiser and DDIM amplifies any round-off.)"""
    hf = _block(bb)
    x0 = images(B)
    ref = edit(bb, x0, hf, **KW, seeds=[0, 1]).x_edit
    with inference_context({"inference_mode": True}):
        got = edit(bb, x0, hf, **KW, seeds=[0, 1]).x_edit
    assert got.is_inference() and torch.equal(got, ref)
    b16 = with_perf(bb, {"autocast": "bf16"})
    x_t = torch.randn(B, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        r32, r16 = asyrp_step(bb, x_t, 713, 570, A, hf), asyrp_step(b16, x_t, 713, 570, A, hf)
    assert r16.x_next.dtype == torch.float32
    assert _rel(r16.x_next, r32.x_next) < 5e-2 and _rel(r16.P_edit, r32.P_edit) < 5e-2


def test_datamodule_pin_memory(tmp_path):
    from asyrp.data import AsyrpDataModule

    dm = AsyrpDataModule(kind="random_samples", n_images=2, cache_dir=str(tmp_path), pin_memory=True)
    assert dm.pin_memory is True
    assert (
        AsyrpDataModule(kind="random_samples", n_images=2, cache_dir=str(tmp_path)).pin_memory
        == torch.cuda.is_available()
    )


@pytest.mark.slow
def test_torch_compile_within_tolerance():
    """torch.compile of encode/decode (dynamo capture + AOT autograd; the aot_eager backend skips inductor's C++
    code generation, which takes minutes on this 2-core CPU machine; on GPU the default backend is inductor)."""
    bb = tiny_backbone(0)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([700.0, 30.0])
    fast = with_perf(bb, {"compile": True, "compile_backend": "aot_eager"})
    with torch.no_grad():
        ref = bb(x, t)
        t0 = time.perf_counter()
        out = fast(x, t)
        enc = fast.encode(x, t)
        pair = fast.decode(enc, torch.cat([enc.h, enc.h]))
    assert set(fast._compiled) == {"encode", "decode"}
    assert _rel(out, ref) < 1e-4 and _rel(pair[2:], ref) < 1e-4, time.perf_counter() - t0


# -- the options wired into the tasks (asyrp.tasks.train / asyrp.tasks.edit, the perf config group) ----------------------------
# everything that has an "off" on CPU, forced off. sdpa is left out: on CPU its default ("auto") keeps diffusers'
# own attention (SDPA), which sdpa=false would replace by the explicit softmax (a 1e-5 change, tested above).
FORCED_OFF = [
    "perf.autocast=null",
    "perf.channels_last=false",
    "perf.compile=false",
    "perf.inference_mode=false",
    "perf.pin_memory=false",
]
SMOKE = ["debug=smoke", "~logger", "callbacks.edit_grid=null", "trainer.limit_val_batches=0"]


def _task_overrides(task: str) -> list[str]:
    return ["checkpoint=x.pt", "input_dir=in"] if task == "edit" else []


def _unwired(monkeypatch) -> None:
    """The tasks as they were before the perf options were wired in: no wrapper, no extra context, no loader
    options (the tasks look these up in asyrp.perf at call time)."""
    import contextlib

    import asyrp.perf

    monkeypatch.setattr(asyrp.perf, "with_perf", lambda backbone, cfg=None: backbone)
    monkeypatch.setattr(asyrp.perf, "inference_context", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(asyrp.perf, "loader_kwargs", lambda *a, **k: {})


@pytest.mark.parametrize("task", ["train", "edit"])
def test_perf_composes_in_the_task_configs(task, tmp_path):
    from hydra.errors import ConfigCompositionException

    from asyrp.checks import check_perf
    from asyrp.config import compose
    from asyrp.ops.claims import run_fingerprint
    from asyrp.ops.errors import AsyrpUserError

    over = _task_overrides(task)
    cfg = compose(task, over, output_dir=tmp_path)
    assert PerfConfig.from_any(cfg.perf) == PerfConfig()
    forced = compose(
        task, over + ["perf.autocast=bf16", "perf.channels_last=true", "perf.num_workers=2"], output_dir=tmp_path
    )
    p = check_perf(forced.perf)
    assert (p.autocast, p.channels_last, p.num_workers, p.sdpa) == ("bf16", True, 2, "auto")
    with pytest.raises(ConfigCompositionException):  # a misspelt option is refused by Hydra
        compose(task, over + ["perf.autocats=bf16"], output_dir=tmp_path)
    with pytest.raises(AsyrpUserError, match="perf.autocast='fp8'"):
        check_perf(compose(task, over + ["perf.autocast=fp8"], output_dir=tmp_path).perf)
    if task == "train":  # how fast is not what is trained: a run resumes across perf settings
        assert run_fingerprint(forced) == run_fingerprint(cfg)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke training run with the perf defaults: its h-function and the objects train() returns."""
    from asyrp.config import compose
    from asyrp.tasks.train import train

    out = tmp_path_factory.mktemp("perf_train")
    _, objects = train(compose("train", SMOKE + [f"dataset.cache_dir={out / 'cache'}"], output_dir=out))
    return out, objects


def test_train_with_perf_defaults_is_unchanged_on_cpu(smoke_run, tmp_path, monkeypatch):
    from asyrp.config import compose
    from asyrp.tasks.train import train

    out, objects = smoke_run
    bb = objects["backbone"]
    assert isinstance(bb, PerfBackbone) and bb.perf == PerfConfig() and objects["datamodule"].pin_memory is False
    assert objects["module"].backbone is bb  # the one wrapper built with the backbone is the one that trains
    _unwired(monkeypatch)
    train(compose("train", SMOKE + [f"dataset.cache_dir={tmp_path / 'cache'}"], output_dir=tmp_path))
    ref = torch.load(tmp_path / "checkpoints" / "hfunction.pt", weights_only=True)["state_dict"]
    got = torch.load(out / "checkpoints" / "hfunction.pt", weights_only=True)["state_dict"]
    assert ref.keys() == got.keys() and all(torch.equal(got[k], ref[k]) for k in ref)


def test_train_channels_last_reaches_the_backbone(tmp_path, monkeypatch):
    """perf.channels_last=true reaches the backbone that trains; the module handed to fit pickles (ddp_spawn sends
    it to its processes that way) and its unpickled backbone computes what the original does."""
    import pickle

    import pytorch_lightning as pl

    from asyrp.config import compose
    from asyrp.tasks.train import train

    real_fit, pickled = pl.Trainer.fit, []

    def fit(self, model, *a, **k):
        pickled.append(pickle.dumps(model))
        return real_fit(self, model, *a, **k)

    monkeypatch.setattr(pl.Trainer, "fit", fit)
    _, objects = train(
        compose(
            "train",
            SMOKE + [f"dataset.cache_dir={tmp_path / 'cache'}", "perf.channels_last=true", "perf.num_workers=0"],
            output_dir=tmp_path,
        )
    )
    bb = objects["backbone"]
    assert pickled and _conv_channels_last(bb) and bb.options("cpu")["channels_last"]
    copy_ = pickle.loads(pickled[0]).backbone
    x, t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([700.0, 30.0])
    with torch.no_grad():
        assert torch.equal(copy_(x, t), bb(x, t))
    assert _conv_channels_last(copy_)
    assert objects["datamodule"].num_workers == 0
    hf = torch.load(tmp_path / "checkpoints" / "hfunction.pt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in hf.values())
    # the inversion cache's key does not depend on the layout (a 1x1 conv weight in NHWC keeps odd strides)
    from asyrp.ops.io import tensor_digest

    w = torch.randn(8, 4, 1, 1)
    assert tensor_digest(w) == tensor_digest(w.to(memory_format=torch.channels_last))


def _convs(backbone) -> list[torch.Tensor]:
    """The conv weights whose NCHW and NHWC layouts differ (more than one input channel, kernel > 1x1)."""
    convs = [
        m.weight
        for m in backbone.modules()
        if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1 and m.weight.shape[2] > 1
    ]
    assert convs
    return convs


def _conv_channels_last(backbone) -> bool:
    return all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in _convs(backbone))


@pytest.fixture()
def spy_edit(monkeypatch):
    """Records, for every batch the edit task runs, the backbone, the edited images and the grad mode."""
    import asyrp.samplers as samplers

    calls: list[dict] = []
    real = samplers.edit

    def spy(backbone, *a, **k):
        res = real(backbone, *a, **k)
        calls.append(
            {
                "backbone": backbone,
                "x_edit": res.x_edit.clone(),
                "inference": torch.is_inference_mode_enabled(),
                "grad": torch.is_grad_enabled(),
            }
        )
        return res

    monkeypatch.setattr(samplers, "edit", spy)
    return calls


def _edit(smoke_run, tmp_path, name, spy, *extra):
    from asyrp.config import compose
    from asyrp.ops.io import atomic_write_png
    from asyrp.tasks.edit import edit as edit_task

    faces = tmp_path / "faces"
    if not faces.is_dir():
        for i, img in enumerate(images(3, size=32, seed=1)):
            atomic_write_png(img, faces / f"face_{i}.png")
    out, _ = smoke_run
    spy.clear()
    res = edit_task(
        compose(
            "edit",
            [
                "arch=tiny_ddpm",
                f"checkpoint={out / 'checkpoints' / 'hfunction.pt'}",
                f"input_dir={faces}",
                "batch_size=2",
                "progress=false",
                f"output_dir={tmp_path / name}",
                *extra,
            ],
            output_dir=tmp_path / "run",
        )
    )
    assert res["edited"] == 3 and len(spy) == 2
    x = torch.cat([c["x_edit"] for c in spy], 1)
    pngs = {p.name: p.read_bytes() for p in res["written"]}
    return x, pngs, list(spy)


def test_edit_with_perf_defaults_is_unchanged_on_cpu(smoke_run, tmp_path, spy_edit, monkeypatch):
    """The edit task with the perf defaults on CPU: the same images, bit for bit, as with the options forced off
    and as the task before perf was wired in; inference_mode forced on changes nothing either."""
    x_def, png_def, calls = _edit(smoke_run, tmp_path, "defaults", spy_edit)
    assert all(not c["inference"] and not c["grad"] for c in calls)  # no_grad, as before
    assert calls[0]["backbone"].options("cpu") == {
        "sdpa": None,
        "channels_last": False,
        "autocast": None,
        "compile": False,
    }  # every option off on CPU
    x_off, png_off, _ = _edit(smoke_run, tmp_path, "off", spy_edit, *FORCED_OFF)
    assert torch.equal(x_def, x_off) and png_def == png_off
    with monkeypatch.context() as m:  # the task as it was before perf was wired in
        _unwired(m)
        x_old, png_old, _ = _edit(smoke_run, tmp_path, "unwired", spy_edit)
    assert torch.equal(x_def, x_old) and png_def == png_old
    # inference_mode forced on (the CUDA default): the same images
    x_inf, png_inf, calls = _edit(smoke_run, tmp_path, "inference", spy_edit, "perf.inference_mode=true")
    assert all(c["inference"] for c in calls) and torch.equal(x_inf, x_def) and png_inf == png_def


def test_edit_channels_last_reaches_the_backbone(smoke_run, tmp_path, spy_edit):
    """perf.channels_last=true on the command line reaches the backbone edit() runs (NHWC conv weights, inputs
    converted in encode); each pass stays within the stated 1e-5, the written images within round-off."""
    import numpy as np
    from PIL import Image

    x_def, png_def, calls = _edit(smoke_run, tmp_path, "defaults", spy_edit)
    assert not any(w.is_contiguous(memory_format=torch.channels_last) for w in _convs(calls[0]["backbone"]))
    x_cl, png_cl, calls = _edit(smoke_run, tmp_path, "channels_last", spy_edit, "perf.channels_last=true")
    bb = calls[0]["backbone"]
    assert _conv_channels_last(bb) and bb.options("cpu")["channels_last"]
    # one pass of the backbone the task configured, against the same weights with the option off
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([700.0, 30.0])
    with torch.no_grad():
        out = bb(x, t)
        ref = with_perf(bb, {"channels_last": False})(x, t)
    assert _rel(out, ref) < TOLERANCE["channels_last"]
    # a whole edit (4 inversion + 4 generation steps of a random net, no denoiser): DDIM amplifies the round-off
    # (about 6e-5 here); the 8-bit images then differ by at most 2 levels (the bound tests/integration/test_edit_task.py uses)
    assert _rel(x_cl, x_def) < 1e-3
    assert png_cl.keys() == png_def.keys()
    for name in png_def:
        a, b = (np.asarray(Image.open(tmp_path / d / name), dtype=np.int16) for d in ("defaults", "channels_last"))
        assert np.abs(a - b).max() <= 2

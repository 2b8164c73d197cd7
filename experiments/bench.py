"""asyrp at the network-pass floor, measured side by side with the official structure in one run.

For a backbone config (conf/arch/<name>.yaml; random weights when its checkpoint is absent: only the architecture
matters for cost), it runs each workload twice per round, interleaved (fast and naive alternate who goes first, so
machine load hits both alike), and prints medians over the rounds after a warm-up round:

  edit         DDIM inversion + Asyrp generation of B images          (asyrp.samplers.edit)
  edit_cached  the same from a cached x_T (no inversion)               (edit(..., x_T=...))
  train        one training batch: an optimiser step per t >= t_edit   (AsyrpModule.training_step, cached P_t^orig)
  strip        K strengths of one attribute                            (edit(..., strength=[s_1..s_K]))
  compose      a Composition of K attributes (counted once, no naive) (edit(Composition, strength=coeffs))
  cache        the DataModule's inversion cache built twice            (second build: zero passes)

"naive" is the official implementation's structure, kept in this file only: every generation step runs the encoder
and then the original and the edited decoder one after the other, also below t_edit where both compute the same eps;
training recomputes the unedited reference P_t^orig with an extra full pass at every step (and epoch); a strip runs
one whole edit (inversion included) per coefficient.

Network passes are counted by instrumenting the backbone (asyrp.perf.PassCounter), in image-passes (a call on R rows
counts R), encoder and decoder separately, next to the floor. The predicted time of an edit is the sum, over the calls
it made, of the time of the same call measured alone (same rows; median of --unit-samples timings taken right after
that run, so that both see the same machine load), and wall / predicted - 1 is the overhead beyond pass count x pass
time. The counter also clocks every call inside the run: wall / (those calls) - 1 is the time spent outside the
network, measured in the same run and therefore insensitive to load that changes between runs. cpu = the thread's CPU
time / wall (below 100%: the run waited for a core). expected fast/naive = predicted naive / predicted fast with each
call kind's cost pooled over all measured runs (for training: + the non-network time of the fast run, CLIP loss,
backward and optimiser, which both pay). Peak memory: peak RSS of a fresh process running one
repeat of the variant (--memory), or torch.cuda.max_memory_allocated on CUDA.

    python experiments/bench.py --arch synthfaces --batch 8                     # the table in docs/performance.md
    python experiments/bench.py --arch tiny_ddpm --batch 2 --n-inv 6 --n-gen 8 --repeats 1   # seconds
    python experiments/bench.py --arch celeba_hq --batch 1 --n-inv 4 --n-gen 6 --repeats 1 --workloads edit,edit_cached
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]

from asyrp import build, samplers  # noqa: E402
from asyrp.config import compose, plain  # noqa: E402
from asyrp.ddim import P_t, ddim_update, ddim_walk  # noqa: E402
from asyrp.hfunctions import Composition, DeltaBlock, apply_hfunction  # noqa: E402
from asyrp.perf import PassCounter, with_perf  # noqa: E402
from asyrp.plan import EditPlan, generation_pairs, inversion_pairs  # noqa: E402
from asyrp.schedules import alpha_at, timesteps  # noqa: E402

_DDIM_INVERT = samplers.ddim_invert  # the bench's inversion clock (patched into samplers.edit) calls the original
WORKLOADS = ("edit", "edit_cached", "train", "strip", "compose", "cache")


# ================================================================================================================
# the official structure (reference only; never used by the library)
# ================================================================================================================
def naive_pair(bb, x, t, hf, strength, editing: bool):
    """Official DDPM forward with Asyrp: encoder, original decoder, edited decoder (sequential), at every step."""
    tv = torch.full((x.shape[0],), float(t), device=x.device)
    enc = bb.encode(x, tv)
    eps = bb.eps(bb.decode(enc))
    h2 = enc.h + apply_hfunction(hf, enc.h, enc.emb, tv, strength) if editing else enc.h  # below t_edit: same eps
    return eps, bb.eps(bb.decode(enc, h2))


@torch.no_grad()
def naive_invert(bb, x0, seq, a):
    return ddim_walk(bb, x0, inversion_pairs(seq), a)


@torch.no_grad()
def naive_generate(bb, x_T, hf, a, *, n_gen, t_edit, t_boost, strength, seeds, t0=999):
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def predict(x, t):  # encoder, then both decoders at every step
        eps, eps_edit = naive_pair(bb, x, t, hf, strength, t >= t_edit)
        return x, eps_edit, eps

    return ddim_walk(
        bb,
        x_T,
        generation_pairs(timesteps(n_gen, t0)),
        a,
        eta=lambda t: 1.0 if t < t_boost else 0.0,
        predict=predict,
        noise=lambda x, t: samplers.image_noise(gens, x.shape[1:], x),
    )


def naive_edit(bb, x0, hf, a, *, n_inv, n_gen, t_edit, t_boost, strength, seeds, counter=None, t0=999):
    if counter is not None:
        counter.phase = "inversion"
    x_T = naive_invert(bb, x0, timesteps(n_inv, t0), a)
    if counter is not None:
        counter.phase = None
    return naive_generate(
        bb, x_T, hf, a, n_gen=n_gen, t_edit=t_edit, t_boost=t_boost, strength=strength, seeds=seeds, t0=t0
    )


def naive_training_step(module, batch, clock: dict[str, float], counter=None) -> None:
    """Official run_training for one batch: the unedited reference walk is recomputed alongside (one extra full pass
    per step); the edited step runs encoder + original decoder + edited decoder."""
    bb, hf, a = module.backbone, module.hfunc, module.a
    opt = module._bench_opt
    x, x_ref = batch["x_T"], batch["x_T"]
    with torch.no_grad():
        e_x0 = module.clip.encode_image(batch["x0"])
    for _, t, t_next in module.train_steps:
        if counter is not None:
            counter.phase = "reference"
        with torch.no_grad():
            eps_r = bb.eps(bb(x_ref, torch.full((x.shape[0],), float(t))))
            P_orig = P_t(x_ref, eps_r, alpha_at(a, t))
            x_ref = ddim_update(x_ref, eps_r, eps_r, alpha_at(a, t), alpha_at(a, t_next))
        if counter is not None:
            counter.phase = None
        eps, eps_edit = naive_pair(bb, x, t, hf, module.strength, True)
        with _timed(clock, "clip_loss"):
            terms = module.loss_fn(e_x0, P_t(x, eps_edit, alpha_at(a, t)), P_orig)
        opt.zero_grad()
        with _timed(clock, "backward"):
            terms["loss"].backward()
        with _timed(clock, "optimizer"):
            opt.step()
        x = ddim_update(x, eps_edit, eps, alpha_at(a, t), alpha_at(a, t_next)).detach()


# ================================================================================================================
# set-up
# ================================================================================================================
@contextlib.contextmanager
def _timed(clock: dict[str, float], name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        clock[name] = clock.get(name, 0.0) + time.perf_counter() - t0


def load_arch(name: str, device: str):
    """(arch config, bare backbone, alpha_bar, random weights?): random weights when the checkpoint is absent (only
    the architecture matters for cost)."""
    os.environ.setdefault("ASYRP_ROOT", str(ROOT))
    arch = plain(compose("train", [f"arch={name}"]).arch)
    ckpt = arch.get("checkpoint")
    random_weights = not (ckpt and Path(ckpt).exists())
    if random_weights:
        arch["checkpoint"] = None
    torch.manual_seed(0)
    return arch, build.backbone(arch, device=device), build.alpha_bar(arch), random_weights


def make_hfunc(bb, family: str, seed: int = 0):
    torch.manual_seed(seed)
    f = DeltaBlock("adm" if family == "adm" else "ddpm", bb.h_channels, bb.emb_dim)
    with torch.no_grad():  # the official block starts at zero output; give it a visible random edit
        for p in f.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return f.to(next(bb.parameters()).device)


def load_clip_for_bench(device: str):
    os.environ.setdefault("ASYRP_ROOT", str(ROOT))
    cfg = plain(compose("train", ["clip=synthfaces"]).clip)
    if not Path(cfg["weights"]).exists():
        cfg = plain(compose("train", ["clip=tiny"]).clip)
    return build.clip(cfg, device=device), cfg["name"]


def smooth_images(n: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, channels, max(size // 4, 1), max(size // 4, 1), generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)


def bench_plan(args) -> EditPlan:
    return EditPlan(n_inv=args.n_inv, n_gen=args.n_gen, t_edit=args.t_edit, t_boost=args.t_boost)


def make_module(hf, bb, clip, a, args):
    from asyrp.module import AsyrpModule

    m = AsyrpModule(
        hf,
        bb,
        clip,
        a,
        source=["face"],
        target=["smiling face"],
        optimizer=functools.partial(torch.optim.SGD, lr=0.05),
        plan=bench_plan(args),
    )
    opt = m.configure_optimizers()
    m._bench_opt = opt
    m.optimizers = lambda *a_, **k_: opt  # the Trainer's part of training_step, without a Trainer
    m.log_dict = m.log = lambda *a_, **k_: None
    return m


# ================================================================================================================
# the run
# ================================================================================================================
class Bench:
    def __init__(self, args):
        self.args = args
        self.dev = args.device
        self.arch, self.bb, self.a, self.random = load_arch(args.arch, self.dev)
        if args.perf:
            self.bb = with_perf(self.bb, json.loads(args.perf))
        self.family = self.arch["family"]
        _ = self.bb.h_shape  # probe once, before counting
        B, size = args.batch, self.bb.image_size
        self.x0 = smooth_images(B, size, self.bb.in_channels).to(self.dev)
        self.seeds = list(range(B))
        self.hf = make_hfunc(self.bb, self.family)
        self.strengths = [float(s) for s in torch.linspace(0, 1, args.k + 1)[1:].tolist()] if args.k > 1 else [1.0]
        self.comp = Composition([make_hfunc(self.bb, self.family, seed=i) for i in range(args.k)])
        self.comp_coeffs = [1.0 / args.k] * args.k
        self.kw = dict(a=self.a, n_inv=args.n_inv, n_gen=args.n_gen, t_edit=args.t_edit, t_boost=args.t_boost)
        self.plan = bench_plan(args)
        self.x_T = samplers.ddim_invert(self.bb, self.x0, timesteps(args.n_inv), self.a)
        self.outputs: dict[tuple[str, str], Any] = {}
        self._train_set_up = False

    # -- training set-up (the inversion cache of the DataModule, and the two modules) ---------------------------
    def setup_train(self) -> None:
        if self._train_set_up:
            return
        from asyrp.data.cache import InversionCache, noise_sources

        args = self.args
        self.clip, self.clip_name = load_clip_for_bench(self.dev)
        self.cache_dir = tempfile.mkdtemp(prefix="asyrp_bench_cache_")
        cache = InversionCache(self.cache_dir, self.bb, self.a, self.plan, batch_size=args.batch)
        # training items from real images: x0 given, so the cache inverts them (here in memory, as the DataModule does)
        entries = cache.compute(noise_sources(0, args.batch), self.x0)
        stack = lambda k: torch.stack([e[k] for e in entries]).to(self.dev)  # noqa: E731
        self.batch = {k: stack(k) for k in ("x0", "x_T", "x_rec", "P_orig", "t")}
        self.batch["index"] = torch.arange(args.batch)
        hf_fast, hf_naive = make_hfunc(self.bb, self.family, 7), make_hfunc(self.bb, self.family, 7)
        self.m_fast = make_module(hf_fast, self.bb, self.clip, self.a, args)
        self.m_naive = make_module(hf_naive, self.bb, self.clip, self.a, args)
        self._train_set_up = True

    def cache_twice(self, counter: PassCounter) -> dict[str, int]:
        """The DataModule's content-hash cache: build, then build again (a second run on the same images)."""
        from asyrp.data import AsyrpDataModule
        from asyrp.ops.io import atomic_write_png

        args = self.args
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "imgs"
            for i, img in enumerate(self.x0.cpu()):
                atomic_write_png(img, folder / f"img_{i:03d}.png")
            res = {}
            for run in ("first", "second"):
                dm = AsyrpDataModule(
                    kind="folder",
                    path=str(folder),
                    n_images=args.batch,
                    batch_size=args.batch,
                    cache_dir=str(Path(tmp) / "cache"),
                )
                dm.bind(self.bb, self.a, self.plan)
                counter.reset()
                dm.prepare_data()
                res[run] = counter.rows("encode")
        return res

    # -- one variant of one workload -----------------------------------------------------------------------------
    def run(self, workload: str, variant: str, counter: PassCounter) -> dict[str, Any]:
        args, bb = self.args, self.bb
        clock: dict[str, float] = {}
        counter.reset()
        counter.phase = None
        ctx = torch.no_grad() if workload != "train" else contextlib.nullcontext()

        def timed_invert(*a_, **k_):
            counter.phase = "inversion"
            try:
                return _DDIM_INVERT(*a_, **k_)
            finally:
                counter.phase = None

        cpu0 = time.thread_time()  # CPU time of this thread (torch runs single-threaded here with --threads 1)
        t0 = time.perf_counter()
        with ctx:
            if workload in ("edit", "edit_cached", "strip", "compose") and variant == "fast":
                hf, strength = (
                    (self.comp, self.comp_coeffs)
                    if workload == "compose"
                    else (self.hf, self.strengths if workload == "strip" else 1.0)
                )
                x_T = self.x_T if workload == "edit_cached" else None
                x0 = None if x_T is not None else self.x0
                with mock.patch.object(samplers, "ddim_invert", timed_invert):
                    out = samplers.edit(
                        bb, x0, hf, a=self.a, plan=self.plan, strength=strength, seeds=self.seeds, x_T=x_T
                    ).x_edit
            elif workload == "edit":
                out = naive_edit(bb, self.x0, self.hf, counter=counter, strength=1.0, seeds=self.seeds, **self.kw)
            elif workload == "edit_cached":
                out = naive_generate(
                    bb,
                    self.x_T,
                    self.hf,
                    self.a,
                    n_gen=args.n_gen,
                    t_edit=args.t_edit,
                    t_boost=args.t_boost,
                    strength=1.0,
                    seeds=self.seeds,
                )
            elif workload == "strip":  # one whole edit per coefficient
                out = torch.stack(
                    [
                        naive_edit(bb, self.x0, self.hf, counter=counter, strength=s, seeds=self.seeds, **self.kw)
                        for s in self.strengths
                    ]
                )
            elif workload == "train":
                m = self.m_fast if variant == "fast" else self.m_naive
                if variant == "fast":
                    loss_fn = m.loss_fn
                    opt = m._bench_opt

                    def timed_loss(*a_, **k_):
                        with _timed(clock, "clip_loss"):
                            return loss_fn(*a_, **k_)

                    def timed_backward(loss, *a_, **k_):
                        with _timed(clock, "backward"):
                            loss.backward()

                    orig_step = opt.step

                    def timed_step(*a_, **k_):
                        with _timed(clock, "optimizer"):
                            return orig_step(*a_, **k_)

                    m.loss_fn, m.manual_backward, opt.step = timed_loss, timed_backward, timed_step
                    try:
                        m.training_step(self.batch, 1)
                    finally:
                        m.loss_fn = loss_fn
                        del m.manual_backward, opt.step
                else:
                    naive_training_step(m, self.batch, clock, counter)
                out = torch.cat([p.detach().flatten() for p in m.hfunc.parameters()])
            else:
                raise ValueError(workload)
        if self.dev.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        cpu = time.thread_time() - cpu0
        self.outputs[(workload, variant)] = out
        calls = list(counter.calls)
        return {
            "wall": wall,
            "cpu": cpu,
            "calls": calls,
            "clock": clock,
            "t_start": t0,
            "t_end": t0 + wall,
            "net": sum(c.end - c.start for c in calls),
        }

    # -- unit costs: each distinct call of the runs, timed alone ---------------------------------------------------
    @torch.no_grad()
    def time_units(self, units: set[tuple[str, int, int]], samples: int = 1) -> dict[tuple[str, int, int], float]:
        """Each call kind timed alone (after a warm call): the median of ``samples`` timings, the kinds interleaved."""
        runs = [self._time_units_once(units) for _ in range(samples)]
        return {k: statistics.median(r[k] for r in runs) for k in runs[0]}

    @torch.no_grad()
    def _time_units_once(self, units: set[tuple[str, int, int]]) -> dict[tuple[str, int, int], float]:
        bb, size, C = self.bb, self.bb.image_size, self.bb.in_channels
        res = {}
        for kind, rows, enc_rows in sorted(units):
            x = torch.randn(enc_rows, C, size, size, device=self.dev)
            t = torch.full((enc_rows,), 500.0, device=self.dev)
            if kind == "encode":
                fn = lambda: bb.encode(x, t)  # noqa: E731
            else:
                enc = bb.encode(x, t)
                h = enc.h.repeat(rows // enc_rows, 1, 1, 1)
                fn = lambda enc=enc, h=h: bb.decode(enc, h)  # noqa: E731
            fn()
            if self.dev.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if self.dev.startswith("cuda"):
                torch.cuda.synchronize()
            res[(kind, rows, enc_rows)] = time.perf_counter() - t0
        return res


def phases(r: dict[str, Any], t_edit: int, t_boost: int, editing: bool = True) -> dict[str, float]:
    """Time per phase of an edit: steps are delimited by encoder calls; a step is labelled by the counter's phase
    (inversion / reference) or by its timestep (editing t >= t_edit, boosting t < t_boost, else ddim)."""
    encs = [c for c in r["calls"] if c.kind == "encode"]
    out: dict[str, float] = {}
    for i, c in enumerate(encs):
        end = encs[i + 1].start if i + 1 < len(encs) else r["t_end"]
        if c.phase:
            name = c.phase
        elif c.grad:
            name = "network"
        elif editing and c.t >= t_edit:
            name = "editing"
        elif c.t < t_boost:
            name = "boosting"
        else:
            name = "ddim"
        out[name] = out.get(name, 0.0) + end - c.start
    return out


def pass_counts(calls, n_items: int) -> tuple[float, float]:
    enc = sum(c.rows for c in calls if c.kind == "encode") / n_items
    dec = sum(c.rows for c in calls if c.kind == "decode") / n_items
    return enc, dec


def floors(args, workload: str) -> tuple[float, float, int]:
    """(encoder, decoder) image-passes per edited image (per image and optimiser step for train), and the number of
    items the counts are divided by."""
    B, K, n_edit = args.batch, args.k, sum(t >= args.t_edit for t in timesteps(args.n_gen))
    n_plain = args.n_gen - n_edit
    inv = args.n_inv - 1
    if workload == "edit":
        return inv + args.n_gen, inv + 2 * n_edit + n_plain, B
    if workload == "edit_cached":
        return args.n_gen, 2 * n_edit + n_plain, B
    if workload == "strip":  # one inversion per image, shared by the K settings
        return inv / K + args.n_gen, inv / K + 2 * n_edit + n_plain, K * B
    if workload == "compose":  # one setting of K attributes
        return inv + args.n_gen, inv + 2 * n_edit + n_plain, B
    if workload == "train":  # per image and optimiser step
        return 1, 2, B * n_edit
    raise ValueError(workload)


def predicted(calls, units) -> float:
    """Forward cost of the calls (each timed alone, without autograd)."""
    return sum(units[(c.kind, c.rows, c.enc_rows)] for c in calls)


def memory_probe(args, workload: str, variant: str) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--arch",
        args.arch,
        "--batch",
        str(args.batch),
        "--n-inv",
        str(args.n_inv),
        "--n-gen",
        str(args.n_gen),
        "--t-edit",
        str(args.t_edit),
        "--t-boost",
        str(args.t_boost),
        "--k",
        str(args.k),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--_probe",
        f"{workload}:{variant}",
    ]
    if args.perf:
        cmd += ["--perf", args.perf]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    return _status_mb("VmRSS")


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM), so the peak is the run's, not the set-up's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def probe_main(args) -> None:
    workload, variant = args._probe.split(":")
    bench = Bench(args)
    if workload == "train":
        bench.setup_train()
    bench.run(workload, variant, PassCounter(bench.bb))  # warm-up: lazy initialisations are not the workload's
    import gc

    gc.collect()
    base = rss_mb()
    reset = _reset_peak_rss()
    with PassCounter(bench.bb) as counter:
        bench.run(workload, variant, counter)
    peak = _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"base_mb": base, "peak_mb": peak, "peak_reset": reset}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="synthfaces", help="conf/arch/<name>.yaml (random weights if no checkpoint)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--n-inv", type=int, default=40)
    ap.add_argument("--n-gen", type=int, default=40)
    ap.add_argument("--t-edit", type=int, default=None, help="default: the middle timestep of the generation walk")
    ap.add_argument("--t-boost", type=int, default=167)
    ap.add_argument("--k", type=int, default=3, help="strengths in a strip / attributes in a composition")
    ap.add_argument("--repeats", type=int, default=3, help="measured rounds (after one warm-up round)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument(
        "--unit-samples",
        type=int,
        default=3,
        help="timings (median) of each call kind alone, taken right after every measured run",
    )
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument(
        "--timed",
        default=None,
        help="workloads to time (default: all but compose and cache); the rest are only counted",
    )
    ap.add_argument(
        "--naive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the same work in the official structure and print fast/naive (--no-naive: asyrp only)",
    )
    ap.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="peak RSS per variant from a fresh process (CPU)",
    )
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--perf", default=None, help='asyrp.perf options as JSON, e.g. \'{"autocast": "bf16"}\'')
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--_probe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.t_edit is None:
        seq = timesteps(args.n_gen)
        args.t_edit = seq[len(seq) // 2]
    if args._probe:
        return probe_main(args)

    workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)}; choose from {WORKLOADS}")
    variants = ("fast", "naive") if args.naive else ("fast",)
    bench = Bench(args)
    if "train" in workloads:
        bench.setup_train()
    timed = [w for w in workloads if w not in ("cache", "compose")]
    if args.timed is not None:  # the others are counted once (fast only)
        timed = [w for w in timed if w in args.timed.split(",")]
    counted_only = [w for w in workloads if w not in timed and w != "cache"]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    first_calls: dict[tuple[str, str], list] = {}

    with PassCounter(bench.bb, sync=args.device.startswith("cuda")) as counter:
        cache_rows = bench.cache_twice(counter) if "cache" in workloads else None
        for w in counted_only:
            bench.run(w, "fast", counter)  # counted, not timed
            first_calls[(w, "fast")] = list(counter.calls)
        for rnd in range(args.warmup + args.repeats):
            order = variants if rnd % 2 == 0 else tuple(reversed(variants))
            for w in timed:
                for v in order:
                    if args.device.startswith("cuda"):
                        torch.cuda.reset_peak_memory_stats()
                    r = bench.run(w, v, counter)
                    if args.device.startswith("cuda"):
                        r["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
                    first_calls.setdefault((w, v), r["calls"])
                    if rnd >= args.warmup:
                        # the run's call kinds timed alone right after it, in the same load window (other jobs
                        # share this machine: a pass can cost +-20% more or less a few seconds later)
                        r["units"] = bench.time_units(
                            {(c.kind, c.rows, c.enc_rows) for c in r["calls"]}, samples=args.unit_samples
                        )
                        results.setdefault((w, v), []).append(r)
            print(f"# round {rnd + 1}/{args.warmup + args.repeats} done", file=sys.stderr, flush=True)

    # pass costs pooled over every measured run (median per call kind): the load-neutral cost of a pass, used for
    # the expected fast/naive ratio (the same costs for both variants)
    samples: dict[tuple[str, int, int], list[float]] = {}
    for rs in results.values():
        for r in rs:
            for k, u in r["units"].items():
                samples.setdefault(k, []).append(u)
    pooled_units = {k: statistics.median(v) for k, v in samples.items()}

    # -- agreement between fast and naive (same images, seeds, weights) ------------------------------------------
    agree = {}
    for w in timed:
        if (w, "naive") in bench.outputs:
            f, n = bench.outputs[(w, "fast")], bench.outputs[(w, "naive")]
            agree[w] = float((f - n).abs().max() / n.abs().max().clamp(min=1e-12))

    # -- report ------------------------------------------------------------------------------------------------
    n_params = sum(p.numel() for p in bench.bb.parameters())
    load = os.getloadavg()
    print(
        f"arch={args.arch} ({'random weights' if bench.random else 'checkpoint'}, {n_params / 1e6:.2f}M params, "
        f"{bench.bb.image_size}px, h={tuple(bench.bb.h_shape)}) batch={args.batch} n_inv={args.n_inv} "
        f"n_gen={args.n_gen} t_edit={args.t_edit} t_boost={args.t_boost} k={args.k} threads={args.threads} "
        f"device={args.device} repeats={args.repeats} (+{args.warmup} warm-up, fast/naive interleaved) "
        f"loadavg={load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} torch={torch.__version__}"
    )
    if "train" in workloads:
        print(f"clip={bench.clip_name}; training: {len(bench.m_fast.train_steps)} optimiser steps per batch")
    print()
    print(
        "network passes per edited image (image-passes; train: per image and optimiser step), counted on the backbone"
    )
    print(
        f"{'workload':<12}{'variant':<7}{'enc':>8}{'dec':>8}{'floor enc':>11}{'floor dec':>11}{'  at floor':>10}"
        f"{'enc calls':>11}{'dec calls':>11}"
    )
    rows_out = []
    for (w, v), calls in sorted(first_calls.items(), key=lambda kv: (workloads.index(kv[0][0]), kv[0][1])):
        fe, fd, n = floors(args, w)
        e, d = pass_counts(calls, n)
        ok = "yes" if (abs(e - fe) < 1e-9 and abs(d - fd) < 1e-9) else ("-" if v == "naive" else "NO")
        print(
            f"{w:<12}{v:<7}{e:>8.2f}{d:>8.2f}{fe:>11.2f}{fd:>11.2f}{ok:>10}"
            f"{sum(c.kind == 'encode' for c in calls):>11}{sum(c.kind == 'decode' for c in calls):>11}"
        )
        rows_out.append({"workload": w, "variant": v, "enc": e, "dec": d, "floor_enc": fe, "floor_dec": fd})
    if cache_rows is not None:
        print(
            f"{'cache':<12}{'fast':<7} inversion-cache build: first run {cache_rows['first'] / args.batch:.0f} encoder "
            f"passes per image ((n_inv-1) + n_gen), second run on the same images: {cache_rows['second']}"
        )

    print()
    print("time (median over repeats, seconds). predicted = the run's calls, each timed alone right after the run;")
    print("overhead = wall / predicted - 1; in-run net = the run's own encode/decode calls (same clock, same moment);")
    print("outside = wall / in-run net - 1 (time the run spends outside the network); cpu = thread CPU time / wall")
    print(
        f"{'workload':<12}{'variant':<7}{'wall':>8}{'predicted':>11}{'overhead':>10}{'in-run net':>12}{'outside':>9}"
        f"{'cpu':>6}{'throughput':>20}  phases"
    )
    summary: dict[str, dict[str, Any]] = {}
    for w in timed:
        for v in variants:
            rs = results.get((w, v))
            if not rs:
                continue
            wall = statistics.median(r["wall"] for r in rs)
            pred = statistics.median(predicted(r["calls"], r["units"]) for r in rs)
            net_all = statistics.median(r["net"] for r in rs)
            outside = f"{wall / net_all - 1:+8.1%}"
            cpu = f"{statistics.median(r['cpu'] / r['wall'] for r in rs):6.0%}"
            pred_pooled = predicted(rs[0]["calls"], pooled_units)  # the same calls in every round
            _, _, n = floors(args, w)
            if w == "train":
                steps = len(bench.m_fast.train_steps)
                thr = f"{steps / wall:8.2f} opt steps/s"
                ph_keys = set().union(*(r["clock"] for r in rs)) | {"network"}
                net = statistics.median(
                    sum(c.end - c.start for c in r["calls"] if c.kind == "encode" or c.kind == "decode") for r in rs
                )
                ref = statistics.median(sum(c.end - c.start for c in r["calls"] if c.phase == "reference") for r in rs)
                ph = {k: statistics.median(r["clock"].get(k, 0.0) for r in rs) for k in ph_keys if k != "network"}
                ph["network"] = net - ref
                if ref:
                    ph["reference"] = ref
                over = ""
            else:
                thr = f"{n / wall:8.2f} images/s"
                ph_list = [phases(r, args.t_edit, args.t_boost) for r in rs]
                ph = {k: statistics.median(p.get(k, 0.0) for p in ph_list) for k in set().union(*ph_list)}
                over = f"{wall / pred - 1:+9.1%}"
            mem = ""
            if args.device.startswith("cuda"):
                mem = f"  cuda peak {statistics.median(r['cuda_peak_mb'] for r in rs):.0f} MB"
            summary[f"{w}/{v}"] = {
                "wall": wall,
                "predicted": pred,
                "net": net_all,
                "phases": ph,
                "predicted_pooled": pred_pooled,
                "overhead": None if w == "train" else wall / pred - 1,
                "outside": wall / net_all - 1,
                "cpu_per_wall": statistics.median(r["cpu"] / r["wall"] for r in rs),
                "walls": [r["wall"] for r in rs],
            }
            order = [
                "inversion",
                "editing",
                "ddim",
                "boosting",
                "reference",
                "network",
                "clip_loss",
                "backward",
                "optimizer",
            ]
            phs = " ".join(f"{k}={ph[k]:.2f}" for k in order if k in ph)
            print(
                f"{w:<12}{v:<7}{wall:>8.2f}{pred:>11.2f}{over:>10}{net_all:>12.2f}{outside:>9}{cpu}{thr:>20}  "
                f"{phs}{mem}"
            )

    if args.naive:
        print()
        print(
            "fast/naive: expected from pass costs (each call kind's cost pooled over all measured runs, the same for "
            "both variants) vs measured wall ratio (target: measured >= expected - 0.05)"
        )
        for w in timed:
            if f"{w}/naive" not in summary:
                continue
            f_, n_ = summary[f"{w}/fast"], summary[f"{w}/naive"]
            if w == "train":  # both pay the same non-network work (CLIP loss, backward, optimiser): the fast run's,
                other = f_["wall"] - f_["net"]  # measured in the run (wall minus its own network calls)
                exp = (n_["predicted_pooled"] + other) / (f_["predicted_pooled"] + other)
            else:
                exp = n_["predicted_pooled"] / f_["predicted_pooled"]
            got = n_["wall"] / f_["wall"]
            verdict = "ok" if got >= exp - 0.05 else "MISS"
            print(
                f"{w:<12} expected {exp:5.2f}x  measured {got:5.2f}x  {verdict}   (outputs agree to {agree[w]:.1e} "
                "of their scale)"
            )
            summary[w] = {"expected": exp, "measured": got}

    if args.memory and not args.device.startswith("cuda"):
        print()
        print("peak memory (fresh process, one repeat): RSS after set-up -> peak RSS")
        for w in timed:
            for v in variants:
                m = memory_probe(args, w, v)
                print(
                    f"{w:<12}{v:<7}{m['base_mb']:>8.0f} MB -> {m['peak_mb']:>6.0f} MB  (+{m['peak_mb'] - m['base_mb']:.0f} MB)"
                )
                summary.setdefault(f"{w}/{v}", {})["memory"] = m
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"args": vars(args), "passes": rows_out, "summary": summary, "cache": cache_rows}, indent=1, default=str
            )
        )


if __name__ == "__main__":
    main()

"""How our costs grow with the catalogue: 10k, 100k and 1M items (issue 15, "cost growth, measured").

For every catalogue size (synthetic, :mod:`recbole_ext.data.synthetic`: Zipf popularity, Amazon-like
sequence lengths, random semantic IDs of 3 levels x 256 codes plus TIGER's collision level) it
measures, each measurement in a fresh subprocess (so its peak memory is its own):

* ``trie``: ``SIDTrie.from_codes`` build time and the size of its per-depth tables;
* ``beam``: trie-constrained beam search of ``SIDSeq2Seq`` (small T5) in ms/user and its added peak
  memory. The T5 vocabulary depends on the codebook sizes only, so the trie is what grows;
* ``rkmeans``: residual k-means (faiss) over n_items x 64 random embeddings, the tokenizer's time;
* ``rqvae``: one RQ-VAE training epoch over the same embeddings (``train_rqvae(epochs=1)``, which also
  initialises the codebooks by k-means and encodes every item at the end);
* ``tiger_step``: a TIGER-style T5 training step (mean token CE of the next item's 4 code tokens + EOS);
* ``sasrec_step``: for contrast, RecBole's SASRec with CE, whose output layer is a full softmax over
  all items; also its full-sort top-k inference per user (the ID-based analogue of beam search).

Peak memory of a measurement = the process's resident-set high-water mark during it minus its RSS
just before (the kernel's high-water mark is reset first, /proc/self/clear_refs; without that
``resource.getrusage``'s ru_maxrss of the whole subprocess). Every child runs torch, OpenMP, MKL and
faiss on one thread. Prints the table, the log-log slopes between sizes and their least-squares fit;
writes the text, JSON and a log-log plot to ``--out-dir``::

    python benchmarks/speed/catalogue_scaling.py --sizes 10000 100000 1000000 --out-dir results/scaling

``--device cuda`` runs beam search, the training steps and the RQ-VAE on the GPU (peak memory is then
``torch.cuda.max_memory_allocated``); trie and k-means stay on the CPU.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import itertools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import Self  # type checkers only: not imported at run time (Python 3.10)

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
MEASUREMENTS = ("trie", "beam", "rkmeans", "rqvae", "tiger_step", "sasrec_step")

#: (result key, table header, unit, plot panel) of every number that is tabulated and plotted.
COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("trie_build_s", "trie build", "s", "time"),
    ("trie_mb", "trie tables", "MB", "memory"),
    ("trie_peak_mb", "trie build peak", "MB", "memory"),
    ("beam_ms_per_user", "beam search", "ms/user", "time"),
    ("beam_peak_mb", "beam peak", "MB", "memory"),
    ("rkmeans_s", "res. k-means", "s", "time"),
    ("rkmeans_peak_mb", "k-means peak", "MB", "memory"),
    ("rqvae_epoch_s", "RQ-VAE epoch", "s", "time"),
    ("rqvae_peak_mb", "RQ-VAE peak", "MB", "memory"),
    ("tiger_step_ms", "T5 step", "ms", "time"),
    ("tiger_step_peak_mb", "T5 step peak", "MB", "memory"),
    ("sasrec_step_ms", "SASRec CE step", "ms", "time"),
    ("sasrec_step_peak_mb", "SASRec step peak", "MB", "memory"),
    ("sasrec_topk_ms_per_user", "SASRec top-k", "ms/user", "time"),
)


# --- settings -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="catalogue sizes")
    p.add_argument("--measure", nargs="+", default=list(MEASUREMENTS), choices=MEASUREMENTS)
    p.add_argument("--users-per-item", type=float, default=0.125,
                   help="users = this x items (0.125: ~1.1 interactions per item at mean length 8.9)")
    p.add_argument("--zipf", type=float, default=1.0, help="item popularity exponent")
    p.add_argument("--levels", type=int, default=3, help="tokenizer levels (+1 collision level)")
    p.add_argument("--codebook", type=int, default=256, help="codes per level (the collision level too)")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2, help="T5 encoder and decoder layers each")
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--beam-users", type=int, default=64, help="users decoded (in batches of --beam-batch)")
    p.add_argument("--beam-batch", type=int, default=64)
    p.add_argument("--hist", type=int, default=20, help="history items per user / training sample")
    p.add_argument("--emb-dim", type=int, default=64, help="item embedding size fed to the tokenizers")
    p.add_argument("--kmeans-niter", type=int, default=50, help="k-means iterations per level (the YAML default)")
    p.add_argument("--train-batch", type=int, default=256)
    p.add_argument("--train-steps", type=int, default=3, help="timed training steps (after one warm-up step)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of trie build and beam search (best kept)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child-timeout", type=int, default=900, help="seconds before a measurement is given up")
    p.add_argument("--out-dir", default=None, help="write catalogue_scaling.{txt,json,png} here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: run one measurement
    return p.parse_args(argv)


def child_argv(args: argparse.Namespace, name: str, n_items: int) -> list[str]:
    """The command that runs measurement ``name`` on ``n_items`` items with the parent's settings."""
    skip = {"sizes", "measure", "out_dir", "child", "child_timeout"}
    argv = [sys.executable, os.path.abspath(__file__), "--child", name, "--sizes", str(n_items)]
    for key, value in vars(args).items():
        if key not in skip:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


# --- memory ---------------------------------------------------------------------------------------
def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    """Resident set size now (MB); without /proc, the high-water mark."""
    kb = _status_kb("VmRSS")
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def trim_heap() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so that a block's
    allocations raise the RSS instead of silently reusing pages an earlier step freed."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the added peak may then read low
        pass


class PeakMemory:
    """Added peak memory of a block (MB): RSS high-water mark minus RSS at entry (after :func:`trim_heap`);
    on CUDA, the allocator's peak minus its allocation at entry."""

    def __init__(self, device: str = "cpu"):
        self.cuda = device.startswith("cuda")
        self.added_mb = float("nan")
        self.resettable = False

    def __enter__(self) -> Self:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated() / 2**20
            return self
        trim_heap()
        try:  # writing 5 resets the kernel's RSS high-water mark (VmHWM), Linux >= 4.0
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.resettable = _status_kb("VmHWM") is not None
        except OSError:
            self.resettable = False
        self.start = rss_mb()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.added_mb = torch.cuda.max_memory_allocated() / 2**20 - self.start
            return
        peak_kb = _status_kb("VmHWM") if self.resettable else None
        peak = peak_kb / 1024 if peak_kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.added_mb = max(0.0, peak - self.start)


# --- the measurements -----------------------------------------------------------------------------
def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def catalogue(n_items: int, args: argparse.Namespace):
    """The synthetic catalogue of one size (random IDs: levels x codebook + collision level)."""
    from recbole_ext.data.synthetic import generate_catalogue

    n_users = max(1000, round(args.users_per_item * n_items))
    return generate_catalogue(n_users=n_users, n_items=n_items, zipf_exponent=args.zipf, sid="random",
                              sid_levels=args.levels, codebook_size=args.codebook, seed=args.seed)


def seq2seq(cat, args: argparse.Namespace):
    """SIDSeq2Seq (small T5) over the catalogue's IDs; item id i + 1 is catalogue item i (0 = padding)."""
    import torch

    from recbole_ext.modules.sid_seq2seq import SIDSeq2Seq
    from recbole_ext.sid.vocab import SIDVocab

    vocab = SIDVocab(cat.codebook_sizes)
    codes = torch.from_numpy(cat.codes)
    item_codes = torch.cat([codes.new_full((1, codes.shape[1]), -1), codes])  # [n_items + 1, m]
    heads = max(1, args.d_model // 32)
    backbone = {"num_layers": args.layers, "num_decoder_layers": args.layers, "d_model": args.d_model,
                "d_ff": 4 * args.d_model, "num_heads": heads, "d_kv": args.d_model // heads, "dropout": 0.1}
    torch.manual_seed(args.seed)
    return SIDSeq2Seq(vocab, item_codes, backbone).to(args.device)


def measure_trie(cat, args: argparse.Namespace) -> dict[str, Any]:
    from recbole_ext.sid.trie import SIDTrie

    times, out = [], {}
    for r in range(args.repeats):
        with PeakMemory() as mem:
            start = time.perf_counter()
            trie = SIDTrie.from_codes(cat.codes, cat.codebook_sizes)
            times.append(time.perf_counter() - start)
        if r == 0:
            out["trie_peak_mb"] = mem.added_mb
        out["trie_mb"] = sum(t.numel() * t.element_size() for t in trie.next_node) / 2**20
        out["trie_nodes"] = [t.shape[0] - 1 for t in trie.next_node]  # per depth, without the sentinel
        del trie
    out["trie_build_s"] = min(times)
    return out


def measure_beam(cat, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    model = seq2seq(cat, args).eval()
    hist, _ = cat.windows(args.beam_users, args.hist, seed=args.seed + 10)  # [U, H] item indices
    items = torch.from_numpy(hist + 1).to(args.device)  # [U, H] model item ids
    ids, mask = model.history_tokens(items)  # [U, H*m]
    with torch.no_grad():
        model.beam_search(ids[:4], mask[:4], args.beam)  # warm-up
        times = []
        with PeakMemory(args.device) as mem:
            for _ in range(args.repeats):
                sync(args.device)
                start = time.perf_counter()
                found = [model.beam_search(ids[i : i + args.beam_batch], mask[i : i + args.beam_batch], args.beam)
                         for i in range(0, len(ids), args.beam_batch)]
                sync(args.device)
                times.append(time.perf_counter() - start)
        valid = float(torch.cat([f.items for f in found]).ge(1).float().mean())  # share of beams ending in an item
    return {"beam_ms_per_user": 1000 * min(times) / len(ids), "beam_ms_per_user_median":
            1000 * statistics.median(times) / len(ids), "beam_peak_mb": mem.added_mb, "beam_valid": valid,
            "beam_users": len(ids), "t5_vocab": model.vocab.vocab_size,
            "t5_params": sum(p.numel() for p in model.t5.parameters())}


def measure_rkmeans(cat, args: argparse.Namespace) -> dict[str, Any]:
    from recbole_ext.data.synthetic import item_embeddings
    from recbole_ext.sid.collisions import add_collision_code
    from recbole_ext.sid.rkmeans import RKMeansConfig, train_rkmeans

    emb = item_embeddings(cat.config.n_items, args.emb_dim, args.seed + 2)  # [N, D]
    cfg = RKMeansConfig(n_levels=args.levels, codebook_size=args.codebook, niter=args.kmeans_niter, seed=args.seed)
    with PeakMemory() as mem:
        start = time.perf_counter()
        result = train_rkmeans(emb, cfg)
        seconds = time.perf_counter() - start
    _, stats = add_collision_code(result.codes, 1 << 30)  # only the statistics: no size limit
    return {"rkmeans_s": seconds, "rkmeans_peak_mb": mem.added_mb, "rkmeans_collision_rate": stats["collision_rate"],
            "rkmeans_max_group": stats["max_group_size"]}


def measure_rqvae(cat, args: argparse.Namespace) -> dict[str, Any]:
    from recbole_ext.data.synthetic import item_embeddings
    from recbole_ext.sid.rqvae import RQVAEConfig, train_rqvae

    emb = item_embeddings(cat.config.n_items, args.emb_dim, args.seed + 2)  # [N, D]
    cfg = RQVAEConfig(n_levels=args.levels, codebook_size=args.codebook, epochs=1, log_every=0, seed=args.seed,
                      device=args.device)
    with PeakMemory(args.device) as mem:
        sync(args.device)
        start = time.perf_counter()
        train_rqvae(emb, cfg)
        sync(args.device)
        seconds = time.perf_counter() - start
    return {"rqvae_epoch_s": seconds, "rqvae_peak_mb": mem.added_mb,
            "rqvae_batches": math.ceil(cat.config.n_items / cfg.batch_size)}


def _time_steps(step: Callable[[], None], args: argparse.Namespace) -> tuple[list[float], float]:
    """One warm-up step, then ``train_steps`` timed ones: their seconds and the added peak memory of all
    (from before the warm-up, so the optimizer's state and the gradients count)."""
    times = []
    with PeakMemory(args.device) as mem:
        step()
        for _ in range(args.train_steps):
            sync(args.device)
            start = time.perf_counter()
            step()
            sync(args.device)
            times.append(time.perf_counter() - start)
    return times, mem.added_mb


def measure_tiger_step(cat, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    model = seq2seq(cat, args).train()
    hist, target = cat.windows(args.train_batch, args.hist, seed=args.seed + 20)  # [B, H], [B]
    ids, mask = model.history_tokens(torch.from_numpy(hist + 1).to(args.device))  # [B, H*m]
    labels = model.append_eos(model.item_tokens[torch.from_numpy(target + 1).to(args.device)])  # [B, m + 1]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model.lm_loss(ids, mask, labels).backward()
        opt.step()

    times, peak = _time_steps(step, args)
    return {"tiger_step_ms": 1000 * min(times), "tiger_step_ms_median": 1000 * statistics.median(times),
            "tiger_step_peak_mb": peak}


class _SASRecData:
    """What RecBole's SASRec reads from a dataset: the number of item ids (with padding id 0)."""

    def __init__(self, n_items: int):
        self.n_items = n_items

    def num(self, field: str) -> int:
        return self.n_items


def sasrec(n_items: int, args: argparse.Namespace):
    """RecBole's SASRec (its YAML defaults, hidden size ``--d-model``) with CE over all items."""
    import torch

    from recbole_ext.compat import import_recbole_models

    import_recbole_models()  # and switch off the anomaly detection its import turns on
    from recbole.model.sequential_recommender.sasrec import SASRec

    config = {"USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list",
              "ITEM_LIST_LENGTH_FIELD": "item_length", "NEG_PREFIX": "neg_", "MAX_ITEM_LIST_LENGTH": args.hist,
              "device": args.device, "n_layers": args.layers, "n_heads": 2, "hidden_size": args.d_model,
              "inner_size": 4 * args.d_model, "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5,
              "hidden_act": "gelu", "layer_norm_eps": 1e-12, "initializer_range": 0.02, "loss_type": "CE"}
    torch.manual_seed(args.seed)
    return SASRec(config, _SASRecData(n_items + 1)).to(args.device)


def measure_sasrec_step(cat, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    model = sasrec(cat.config.n_items, args).train()
    hist, target = cat.windows(args.train_batch, args.hist, seed=args.seed + 20)  # [B, H], [B]
    batch = {"item_id_list": torch.from_numpy(hist + 1).to(args.device),  # [B, H]
             "item_length": torch.full((len(hist),), args.hist, device=args.device),  # [B]
             "item_id": torch.from_numpy(target + 1).to(args.device)}  # [B]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model.calculate_loss(batch).backward()
        opt.step()

    times, peak = _time_steps(step, args)
    # inference: full-sort scores over all items [U, n_items + 1], then the top beam-width items
    model.eval()
    users = {k: v[: args.beam_users] for k, v in batch.items()}
    infer = []
    with torch.no_grad():
        for _ in range(args.repeats):
            sync(args.device)
            start = time.perf_counter()
            model.full_sort_predict(users).topk(args.beam, dim=1)
            sync(args.device)
            infer.append(time.perf_counter() - start)
    return {"sasrec_step_ms": 1000 * min(times), "sasrec_step_ms_median": 1000 * statistics.median(times),
            "sasrec_step_peak_mb": peak, "sasrec_topk_ms_per_user": 1000 * min(infer) / len(users["item_id"]),
            "sasrec_params": sum(p.numel() for p in model.parameters())}


MEASURE: dict[str, Callable[[Any, argparse.Namespace], dict[str, Any]]] = {
    "trie": measure_trie, "beam": measure_beam, "rkmeans": measure_rkmeans, "rqvae": measure_rqvae,
    "tiger_step": measure_tiger_step, "sasrec_step": measure_sasrec_step,
}


def measure_size(n_items: int, args: argparse.Namespace, names: tuple[str, ...] | list[str] = MEASUREMENTS
                 ) -> dict[str, Any]:
    """Every measurement of ``names`` on one catalogue size, in this process: ``{key: value}``."""
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    cat = catalogue(n_items, args)
    out: dict[str, Any] = {"n_items": n_items, "n_users": cat.config.n_users, "n_interactions": cat.n_interactions,
                           "catalogue_s": time.perf_counter() - start,
                           "id_collision_rate": cat.stats["collision_rate"]}
    for name in names:
        out.update(MEASURE[name](cat, args))
    out["process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# --- the parent: one subprocess per (size, measurement), then table, slopes, JSON, plot -----------
def run_child(args: argparse.Namespace, name: str, n_items: int) -> dict[str, Any]:
    env = {**os.environ, **{var: str(args.threads) for var in THREAD_ENV}}
    start = time.perf_counter()
    try:
        proc = subprocess.run(child_argv(args, name, n_items), env=env, capture_output=True, text=True,
                              timeout=args.child_timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"{name} at {n_items} items: over {args.child_timeout} s"}
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"{name} at {n_items} items: exit {proc.returncode}: {' | '.join(tail)}"}
    result = json.loads(lines[-1])
    result[f"{name}_process_peak_rss_mb"] = result.pop("process_peak_rss_mb")
    result[f"{name}_wall_s"] = wall
    print(f"# {n_items:>9,} items  {name:<12} done in {wall:6.1f} s", file=sys.stderr, flush=True)
    return result


def fit_slopes(sizes: list[int], values: list[float | None]) -> dict[str, float | None]:
    """Log-log slopes between consecutive sizes (``a->b``) and the least-squares slope over all."""
    pts = [(math.log10(n), math.log10(v)) for n, v in zip(sizes, values)
           if v is not None and isinstance(v, (int, float)) and v > 0]
    out: dict[str, float | None] = {}
    for (n0, v0), (n1, v1) in itertools.pairwise(zip(sizes, values)):
        ok = all(isinstance(v, (int, float)) and v > 0 for v in (v0, v1))
        out[f"{n0}->{n1}"] = (math.log10(v1) - math.log10(v0)) / (math.log10(n1) - math.log10(n0)) if ok else None
    if len(pts) >= 2:
        mx = sum(x for x, _ in pts) / len(pts)
        my = sum(y for _, y in pts) / len(pts)
        sxx = sum((x - mx) ** 2 for x, _ in pts)
        out["fit"] = sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx > 0 else None
    else:
        out["fit"] = None
    return out


def _fmt(v: Any) -> str:
    if not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}" if v >= 1 else f"{v:.3f}"


def format_report(rows: list[dict[str, Any]], slopes: dict[str, dict], args: argparse.Namespace) -> list[str]:
    sizes = [r["n_items"] for r in rows]
    lines = ["", f"{'measurement':<20} {'unit':<8}" + "".join(f"{n:>12,}" for n in sizes)
             + "   log-log slope (between sizes; fit)"]
    for key, title, unit, _ in COLUMNS:
        cells = "".join(f"{_fmt(r.get(key)):>12}" for r in rows)
        s = slopes.get(key, {})
        between = ", ".join("-" if v is None else f"{v:.2f}" for k, v in s.items() if k != "fit")
        fit = "-" if s.get("fit") is None else f"{s['fit']:.2f}"
        lines.append(f"{title:<20} {unit:<8}{cells}   {between}; {fit}")
    extra = [("users", "n_users"), ("interactions", "n_interactions"), ("trie nodes / depth", "trie_nodes"),
             ("ID collision rate", "id_collision_rate"), ("k-means collisions", "rkmeans_collision_rate"),
             ("k-means max group", "rkmeans_max_group"), ("beams with an item", "beam_valid"),
             ("T5 params", "t5_params"), ("SASRec params", "sasrec_params")]
    lines.append("")
    for title, key in extra:
        cells = "  ".join(str(r.get(key, "-")) if not isinstance(r.get(key), float) else f"{r[key]:.4f}"
                          for r in rows)
        lines.append(f"{title:<20} {cells}")
    lines.append("peak RSS of each measurement's whole subprocess (MB; catalogue and imports included):")
    for name in MEASUREMENTS:
        cells = "  ".join(_fmt(r.get(f"{name}_process_peak_rss_mb")) for r in rows)
        lines.append(f"  {name:<18} {cells}")
    errors = [r["error"] for r in rows if r.get("error")] + [e for r in rows for e in r.get("errors", [])]
    lines += [f"ERROR {e}" for e in errors]
    return lines


def plot(rows: list[dict[str, Any]], slopes: dict[str, dict], path: Path, note: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for ax, panel in zip(axes, ("time", "memory")):
        for key, title, unit, which in COLUMNS:
            pts = [(r["n_items"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and r[key] > 0]
            if which != panel or len(pts) < 2:
                continue
            fit = slopes.get(key, {}).get("fit")
            label = f"{title} ({unit})" + ("" if fit is None else f", slope {fit:.2f}")
            ax.plot(*zip(*pts), marker="o", label=label)
        sizes = [r["n_items"] for r in rows]
        if len(sizes) >= 2 and ax.lines:  # a slope-1 guide (cost linear in the items) through the panel's middle
            ys = [y for line in ax.lines for y in line.get_ydata()]
            mid = math.sqrt(min(ys) * max(ys))
            ax.plot([sizes[0], sizes[-1]], [mid, mid * sizes[-1] / sizes[0]], ls="--", color="grey", lw=1,
                    label="slope 1 (linear)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("items in the catalogue")
        ax.set_ylabel("seconds / milliseconds (see legend)" if panel == "time" else "MB")
        ax.set_title("time" if panel == "time" else "memory (tables; added peak RSS)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Cost growth with the catalogue ({note})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    if args.child:  # one measurement of one size: print its result as one JSON line
        result = measure_size(args.sizes[0], args, [args.child])
        print(json.dumps(result))
        return

    from recbole_ext.provenance import output_header

    header = output_header()
    cores = os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    device_note = (f"{args.device}, {args.threads} thread(s) per measurement on a shared {cores}-core machine "
                   f"(other jobs were running; load average at start {load})")
    settings = (f"catalogue: Zipf {args.zipf}, users = {args.users_per_item} x items, lengths min 5 mean 8.9 "
                f"(lognormal), random IDs {args.levels} x {args.codebook} + collision level {args.codebook}; "
                f"T5 d_model {args.d_model} {args.layers}+{args.layers} layers; beam {args.beam}, "
                f"{args.beam_users} users in batches of {args.beam_batch}, history {args.hist} items; "
                f"training batch {args.train_batch}, best of {args.train_steps} steps after a warm-up; "
                f"k-means {args.kmeans_niter} iterations x {args.levels} levels over {args.emb_dim}-d embeddings; "
                f"trie and beam best of {args.repeats}; each (size, measurement) in a fresh subprocess")
    print("\n".join(header), flush=True)
    print(f"# timings: {device_note}")
    print(f"# settings: {settings}", flush=True)

    rows = []
    for n_items in args.sizes:
        row: dict[str, Any] = {"n_items": n_items, "errors": []}
        for name in args.measure:
            result = run_child(args, name, n_items)
            if "error" in result:
                row["errors"].append(result["error"])
                print(f"# ERROR {result['error']}", file=sys.stderr, flush=True)
            else:
                row.update(result)
        rows.append(row)

    sizes = [r["n_items"] for r in rows]
    slopes = {key: fit_slopes(sizes, [r.get(key) for r in rows]) for key, *_ in COLUMNS}
    report = format_report(rows, slopes, args)
    print("\n".join(report), flush=True)
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        text = "\n".join(header + [f"# timings: {device_note}", f"# settings: {settings}"] + report) + "\n"
        (out / "catalogue_scaling.txt").write_text(text)
        payload = {"header": header, "timings": device_note, "settings": vars(args), "rows": rows,
                   "slopes": slopes, "columns": [dict(zip(("key", "title", "unit", "panel"), c)) for c in COLUMNS]}
        (out / "catalogue_scaling.json").write_text(json.dumps(payload, indent=1) + "\n")
        plot(rows, slopes, out / "catalogue_scaling.png", f"{args.device}, {args.threads} thread(s), shared machine")
        print(f"# wrote {out}/catalogue_scaling.{{txt,json,png}}", file=sys.stderr)


if __name__ == "__main__":
    main()

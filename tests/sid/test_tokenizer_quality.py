"""Residual k-means, zero-collision reassignment, the RQ-VAE's reassignment costs, the tokenizer
report and its command line, over-length item text: hand-made cases with exact values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from recbole_ext.sid import build_semantic_ids
from recbole_ext.sid.collisions import CollisionError, reassign_last_level, resolve_collisions
from recbole_ext.sid.report import semantic_codes, tokenizer_report
from recbole_ext.sid.rkmeans import train_rkmeans

# 1-d embeddings: two coarse groups around 0 and 10, each point 1 or 2 away from its group's centre
X = np.array([[-2.0], [2.0], [8.0], [12.0], [-1.0], [1.0], [9.0], [11.0]])


def test_residual_kmeans_hand_case():
    res = train_rkmeans(X, {"n_levels": 2, "codebook_size": 2, "niter": 20, "nredo": 5})
    level0 = [float(res.centroids[0][c, 0]) for c in res.codes[:, 0]]
    level1 = [float(res.centroids[1][c, 0]) for c in res.codes[:, 1]]
    assert level0 == [0, 0, 10, 10, 0, 0, 10, 10]  # level 0: the two group centres
    assert level1 == [-1.5, 1.5] * 4  # level 1 clusters the residuals -2, 2, -1, 1 into -1.5, 1.5
    stats = res.stats
    assert stats["codebook_usage"] == [1.0, 1.0] and stats["n_distinct_ids"] == 4
    assert stats["collision_rate"] == 0.5  # -2 and -1 (etc.) end on one ID
    assert stats["recon_mse"] == pytest.approx(0.25)  # every final residual is +-0.5
    assert stats["recon_rel"] == pytest.approx(2 / 220)  # 8 x 0.25 over the total variance 220
    # reassignment cost: squared distance of the last residual (-2 for item 0) to -1.5 and 1.5
    c = int(res.codes[0, 1])
    assert res.last_cost[0, c] == pytest.approx(0.25) and res.last_cost[0, 1 - c] == pytest.approx(12.25)


def test_reassign_last_level_is_a_minimum_cost_assignment():
    codes = torch.tensor([[0, 0], [0, 0], [0, 1], [1, 0]])  # items 0 and 1 collide
    cost = np.array([[0.0, 1.0, 2.0],
                     [0.1, 0.5, 3.0],
                     [2.0, 0.0, 0.2],
                     [0.0, 1.0, 1.0]])
    out, stats = reassign_last_level(codes, cost)
    # group (0,): the cheapest distinct codes are 0, 1, 2 (0 + 0.5 + 0.2 = 0.7; keeping item 2 on 1
    # would cost 3.0 for item 1); item 3 is alone in its group and keeps its code
    assert out.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0]]
    assert stats == {"n_items": 4, "n_colliding_items": 2, "collision_rate": 0.25, "max_group_size": 2,
                     "n_groups_reassigned": 1, "n_reassigned_items": 2, "added_cost": pytest.approx(0.6)}
    with pytest.raises(CollisionError, match=r"3 items share the ID prefix \[0\] but the last level has only 2"):
        reassign_last_level(codes[:3], cost[:3, :2])


def test_resolve_collisions_modes():
    codes = torch.tensor([[1, 2], [1, 2], [0, 0]])
    appended, k, stats = resolve_collisions(codes, None, 4, None)
    assert appended.tolist() == [[1, 2, 0], [1, 2, 1], [0, 0, 0]] and k == 4 and stats["n_colliding_items"] == 2
    cost = np.array([[0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    reassigned, k, stats = resolve_collisions(codes, "reassign", 4, cost)
    assert k is None and stats["mode"] == "reassign" and len(torch.unique(reassigned, dim=0)) == 3
    unique = torch.tensor([[0, 1], [1, 1]])
    assert resolve_collisions(unique, "reassign", 4, None)[0].tolist() == [[0, 1], [1, 1]]  # nothing to move
    with pytest.raises(ValueError, match="needs a tokenizer with codeword distances"):
        resolve_collisions(codes, "reassign", 4, None)
    with pytest.raises(ValueError, match="choose append or reassign"):
        resolve_collisions(codes, "shuffle", 4, cost)


def test_rqvae_costs_and_reassignment_through_the_cache(tmp_path):
    items = [f"i{i}" for i in range(40)]
    emb = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    rq = {"hidden_dims": [16], "latent_dim": 4, "epochs": 3, "batch_size": 32, "log_every": 0}
    base = {"method": "rqvae", "n_levels": 2, "codebook_size": 8, "collision_codebook_size": 40, "rqvae": rq}
    plain = build_semantic_ids(items, emb, base, tmp_path)
    zcr = build_semantic_ids(items, emb, {**base, "collision": "reassign"}, tmp_path)
    assert plain.codebook_sizes == (8, 8, 40) and zcr.codebook_sizes == (8, 8)  # no appended level
    tokenizer = plain.codes[:, :2]  # the RQ-VAE's own codes (same training: same seed)
    assert plain.stats["collision"]["n_colliding_items"] > 0  # 40 items on 32 distinct IDs: collisions to resolve
    assert len(torch.unique(zcr.codes, dim=0)) == 40 and torch.equal(zcr.codes[:, 0], tokenizer[:, 0])
    groups: dict[int, list[int]] = {}  # level-0 code -> items
    for i, code in enumerate(tokenizer[:, 0].tolist()):
        groups.setdefault(code, []).append(i)
    assert max(len(g) for g in groups.values()) == 8  # every group fits the 8 last-level codes (the largest exactly)
    clean = [i for g in groups.values() if len({tuple(tokenizer[j].tolist()) for j in g}) == len(g) for i in g]
    assert clean and all(torch.equal(zcr.codes[i], tokenizer[i]) for i in clean)  # groups without a collision stay
    stats = zcr.stats["collision"]
    assert stats["mode"] == "reassign" and stats["n_colliding_items"] == plain.stats["collision"]["n_colliding_items"]
    assert stats["added_cost"] >= 0  # the RQ-VAE's own codes are each item's cheapest: moving costs
    from recbole_ext.sid.rqvae import train_rqvae

    res = train_rqvae(emb, {"n_levels": 2, "codebook_size": 8, **rq})
    assert torch.equal(res.codes, tokenizer)
    assert torch.equal(torch.from_numpy(res.last_cost.argmin(1)), res.codes[:, -1])  # cost minimum = its code
    assert res.stats["steps"] == 3 * 2  # 3 epochs x ceil(40 / 32) batches
    assert set(res.stats["final_epoch_losses"]) == {"loss", "recon_loss", "codebook_loss", "commit_loss",
                                                    "dead_codes_reset"}
    json.dumps(res.stats)  # plain values only: the stats go into run records


def test_rkmeans_through_the_cache(tmp_path):
    items = [f"i{i}" for i in range(8)]
    cfg = {"method": "rkmeans", "n_levels": 2, "codebook_size": 2, "collision_codebook_size": 4,
           "rkmeans": {"niter": 20, "nredo": 5}}
    sids = build_semantic_ids(items, X.astype(np.float32), cfg, tmp_path)
    assert sids.codebook_sizes == (2, 2, 4) and sids.stats["rkmeans"]["collision_rate"] == 0.5
    assert sids.codes[:, 2].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]  # -1 is second on -2's ID, and so on
    with pytest.raises(CollisionError, match="4 items share the ID prefix"):  # 4 per level-0 group > 2 codes
        build_semantic_ids(items, X.astype(np.float32), {**cfg, "collision": "reassign"}, None)
    with pytest.raises(ValueError, match="the rkmeans tokenizer needs item embeddings"):
        build_semantic_ids(items, None, cfg, None)


def test_report_hand_case():
    codes = torch.tensor([[0, 0], [0, 1], [0, 1], [1, 2], [2, 3]])
    pairs = torch.tensor([[0, 1], [1, 2], [3, 4], [2, 2], [0, 3]])  # (2, 2) is a repeat: not a pair
    rep = tokenizer_report(codes, (4, 4), pairs)

    def perplexity(p):
        return round(math.exp(-sum(x * math.log(x) for x in p)), 6)

    assert rep["levels"] == [
        {"used": 3, "usage": 0.75, "perplexity": perplexity([0.6, 0.2, 0.2])},  # 2.586...
        {"used": 4, "usage": 1.0, "perplexity": perplexity([0.2, 0.4, 0.2, 0.2])},
    ]
    assert (rep["n_items"], rep["collision_rate"], rep["n_colliding_items"], rep["largest_group"]) == (5, 0.2, 2, 2)
    assert rep["fanout"] == [{"depth": 0, "prefixes": 1, "mean": 3.0, "max": 3},
                             {"depth": 1, "prefixes": 3, "mean": 1.333333, "max": 2}]
    # depth 1: (0,1), (1,2) share code 0; random: groups 3, 1, 1 -> 3*2 / (5*4) = 0.3
    # depth 2: only (1,2) share [0, 1]; random: groups 1, 2, 1, 1 -> 2 / 20 = 0.1
    assert rep["cooccurrence"] == {"n_pairs": 4, "by_depth": [
        {"depth": 1, "shared": 0.5, "random": 0.3, "lift": 1.666667},
        {"depth": 2, "shared": 0.25, "random": 0.1, "lift": 2.5}]}
    assert "cooccurrence" not in tokenizer_report(codes, (4, 4))
    with pytest.raises(ValueError, match="1 codebook sizes for 2 levels"):
        tokenizer_report(codes, (4,))


def test_semantic_codes_drop_only_an_appended_level():
    codes = torch.tensor([[1, 2, 0], [1, 2, 1]])
    assert semantic_codes(codes, {"collision": {"n_items": 2}}).tolist() == [[1, 2], [1, 2]]
    assert semantic_codes(codes, {"collision": {"mode": "reassign"}}).tolist() == codes.tolist()
    assert semantic_codes(codes, {"method": "external"}).tolist() == codes.tolist()  # unique as shipped


def _tiny_pairs(root, name):
    """Consecutive (previous, next) items of the training part of each sequence, from the .inter file:
    RecBole trains on targets 1 .. n-3 of a user's n items (n-2 is validation, n-1 test)."""
    seqs: dict[str, list[str]] = {}
    for line in (root / name / f"{name}.inter").read_text().splitlines()[1:]:
        user, item, _ = line.split("\t")
        seqs.setdefault(user, []).append(item)
    return [(s[i - 1], s[i]) for s in seqs.values() for i in range(1, len(s) - 2)]


def test_report_in_the_record_and_on_the_command_line(tiny_dataset, tmp_path):
    from pathlib import Path

    from recbole_ext.runner import run
    from recbole_ext.sid.__main__ import main
    from synthetic_data import TINY_GENERATIVE

    data_path, name = tiny_dataset
    pairs = _tiny_pairs(Path(data_path), name)
    n_pairs = sum(a != b for a, b in pairs)
    out = tmp_path / "report.json"
    args = ["report", f"--dataset={name}", f"--data_path={data_path}", "--sid_tokenizer=random", "--sid_levels=2",
            "--sid_codebook_size=8", f"--sid_cache_dir={tmp_path / 'sid'}", f"--json={out}"]
    assert main(args) == 0
    result = json.loads(out.read_text())
    rep = result["report"]
    assert result["method"] == "random" and result["codebook_sizes"] == [8, 8, 8]
    assert rep["collision_rate"] == 0.0 and len(rep["levels"]) == 2  # the collision level is not reported
    assert rep["cooccurrence"]["n_pairs"] == n_pairs
    record = run("TIGER", name, overrides={"data_path": data_path, "sid_cache_dir": str(tmp_path / "sid"),
                                           **TINY_GENERATIVE}, output_dir=tmp_path / "out", run_id="r")
    assert record["extra"]["sid"]["report"] == rep  # same IDs, same training pairs
    assert main(["other"]) == 2

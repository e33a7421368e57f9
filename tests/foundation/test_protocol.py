"""The evaluation protocol as RecBole applies it under properties/overall.yaml: leave-one-out by time.

The input rows are shuffled and many users' rows are written latest first, so neither the file
order nor the row order within a user can stand in for time: each user's test target must be
their latest item, the validation target the one before, and the histories the items before
those, oldest first (capped at MAX_ITEM_LIST_LENGTH).
"""

from __future__ import annotations

import random

import pytest

N_USERS, N_ITEMS, MAX_LEN = 30, 60, 20


def write_shuffled(folder, name):
    """Each user's items, distinct, in time order; rows shuffled, timestamps decreasing down the file
    for the even users. Returns {user token: [item tokens oldest first]}."""
    rng = random.Random(3)
    truth, rows = {}, []
    for u in range(N_USERS):
        length = rng.randint(5, 25)  # some longer than MAX_ITEM_LIST_LENGTH + 2
        items = [f"i{n}" for n in rng.sample(range(N_ITEMS), length)]
        stamps = sorted(rng.sample(range(1_000, 100_000), length))  # strictly increasing in time
        truth[f"u{u}"] = items
        user_rows = [(f"u{u}", item, stamp) for item, stamp in zip(items, stamps)]
        rows += user_rows[::-1] if u % 2 == 0 else user_rows  # latest first for even users
    rng.shuffle(rows)
    (folder / name).mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"] + [f"{u}\t{i}\t{t}" for u, i, t in rows]
    (folder / name / f"{name}.inter").write_text("\n".join(lines) + "\n")
    return truth


def split_of(loader, dataset):
    """{user token: (target item token, history item tokens oldest first)} of an evaluation loader."""
    out = {}
    for interaction, *_ in loader:
        users = dataset.id2token(dataset.uid_field, interaction[dataset.uid_field])
        targets = dataset.id2token(dataset.iid_field, interaction[dataset.iid_field])
        for row, user in enumerate(users):
            length = int(interaction["item_length"][row])
            history = interaction["item_id_list"][row, :length]
            assert user not in out, "a user evaluated twice"
            out[str(user)] = (str(targets[row]), [str(t) for t in dataset.id2token(dataset.iid_field, history)])
    return out


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec"])
def test_leave_one_out_by_time_on_shuffled_rows(tmp_path, model):
    from recbole.data import create_dataset, data_preparation

    from recbole_ext.config import ExtConfig

    truth = write_shuffled(tmp_path, "shuffled")
    config = ExtConfig(model, "shuffled", config_dict={"data_path": str(tmp_path), "use_gpu": False,
                                                       "eval_batch_size": 7})  # several batches
    dataset = create_dataset(config)
    _, valid, test = data_preparation(config, dataset)
    valid_split, test_split = split_of(valid, dataset), split_of(test, dataset)
    assert set(test_split) == set(valid_split) == set(truth)
    for user, items in truth.items():
        assert test_split[user] == (items[-1], items[:-1][-MAX_LEN:]), user
        assert valid_split[user] == (items[-2], items[:-2][-MAX_LEN:]), user

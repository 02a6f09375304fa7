"""Models: each overfits one batch, cold items are scored from content, masks hold, checkpoints round-trip."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from support.tiny import make_tiny

from recsys.checkpoint import CheckpointError, SharedItemTable, load_checkpoint, save_checkpoint, store_item_table
from recsys.config import ExperimentConfig, TrainConfig, parse_config
from recsys.errors import ConfigError
from recsys.features.feature_map import OOV
from recsys.features.item_table import ItemInputs
from recsys.losses import total_loss
from recsys.models import MODELS, UserSide, build_model
from training.step import build_optimizer, train_step


@pytest.fixture(scope="module")
def tiny():
    return make_tiny()


def build(tiny, name: str, **update):
    torch.manual_seed(0)
    cfg = tiny.config.model.model_copy(update={"name": name, **update})
    return build_model(cfg, tiny.feature_map, tiny.table.dims()), cfg


@pytest.mark.parametrize(
    ("name", "options"),
    [(name, {}) for name in MODELS] + [("marn", {"user_tower": True})],
    ids=[*MODELS, "marn-user_tower"],
)
def test_each_model_overfits_one_batch(tiny, name: str, options: dict) -> None:
    model, cfg = build(tiny, name, **options)
    items = ItemInputs.from_table(tiny.table)
    batch = next(tiny.examples.split("train").batches(64))
    # One fixed label per item: memorisable by every model, logistic regression included.
    batch.label = (batch.item % 2).float()
    train = TrainConfig(learning_rate=0.05 if name == "lr" else 0.01)
    opt = build_optimizer(model, train)
    first = None
    for _ in range(300):
        parts = train_step(model, batch, items, opt, cfg)
        first = parts["click"] if first is None else first
    model.eval()
    with torch.no_grad():
        click = torch.nn.functional.binary_cross_entropy_with_logits(model(batch, items).logits, batch.label)
    assert float(click) <= 0.1 * first, (name, first, float(click))


def test_marn_reports_every_adversarial_term(tiny) -> None:
    model, cfg = build(tiny, "marn", lambda_orth=0.1)
    out = model(next(tiny.examples.split("train").batches(32)), ItemInputs.from_table(tiny.table))
    _, parts = total_loss(out, torch.zeros(32), cfg)
    assert {"click", "d0", "d1", "ds", "orth", "total"} <= set(parts)
    w = out.adversarial.d1_weights
    assert ((w >= 0) & (w <= 1)).all()
    assert torch.allclose(w.sum(dim=1), torch.ones(w.shape[0]))
    assert out.modal_attention.shape == (32, 3)  # id, image, audio
    share = out.modal_attention  # each modality's share of the fused feature: sums to 1, 0 where absent
    assert torch.allclose(share.sum(dim=1), torch.ones(32)) and (share >= 0).all()
    ablation, cfg1 = build(tiny, "man_d1")
    parts1 = total_loss(
        ablation(next(tiny.examples.split("train").batches(32)), ItemInputs.from_table(tiny.table)),
        torch.zeros(32),
        cfg1,
    )[1]
    assert "d1" in parts1 and "d0" not in parts1 and "ds" not in parts1


@pytest.mark.parametrize("name", ["marn", "man", "concat"])
def test_masked_modality_values_change_no_output(tiny, name: str) -> None:
    model, _ = build(tiny, name)
    model.eval()
    batch = next(tiny.examples.split("train").batches(64))
    items = ItemInputs.from_table(tiny.table)
    before = model(batch, items).logits
    tensors = dict(items.tensors)
    absent = ~tensors["mask.audio"]
    assert absent[1:].any()
    poisoned = tensors["vector.audio"].clone()
    poisoned[absent] = float("nan")
    tensors["vector.audio"] = poisoned
    after = model(batch, ItemInputs(tensors)).logits
    assert torch.equal(before, after)


def test_cold_items_get_finite_scores_that_depend_on_content(tiny) -> None:
    cold = tiny.examples.split("test")
    cold = cold.subset(np.flatnonzero(cold.meta["is_cold"].to_numpy()))
    assert len(cold) > 0
    batch = next(cold.batches(len(cold)))
    for name, depends in (("marn", True), ("din", False)):
        model, _ = build(tiny, name)
        model.eval()
        items = ItemInputs.from_table(tiny.table)
        scores = model(batch, items).logits
        assert torch.isfinite(scores).all()
        tensors = dict(items.tensors)
        tensors["vector.image"] = tensors["vector.image"] + 1.0  # change every item's picture
        moved = (model(batch, ItemInputs(tensors)).logits - scores).abs().max()
        assert (moved > 1e-4) == depends, (name, float(moved))


def test_save_load_gives_identical_logits(tiny, tmp_path: Path) -> None:
    variants = (
        ("marn", {}),
        ("marn_paper", {}),
        ("din", {}),
        ("lr", {}),
        ("marn", {"id_embeddings": []}),
        ("marn", {"id_path": "beside"}),
        ("marn", {"id_path": "beside", "content_merge": "add", "content_gate": True, "simtier_bins": 8}),
    )
    for i, (name, options) in enumerate(variants):
        model, cfg = build(tiny, name, **options)
        model.eval()
        config = tiny.config.model_copy(update={"model": cfg})
        path = save_checkpoint(
            tmp_path / f"{name}-{i}", model, config, tiny.feature_map, tiny.table, metrics={"auc": 0.5}
        )
        ckpt = load_checkpoint(path, expected_config=config)
        batch = next(tiny.examples.split("valid").batches(50))
        before = model(batch, ItemInputs.from_table(tiny.table)).logits
        after = ckpt.model(batch, ItemInputs.from_table(ckpt.item_table)).logits
        assert torch.equal(before, after)
        assert ckpt.metrics == {"auc": 0.5} and ckpt.meta["model"] == name


def test_bad_checkpoints_are_refused_with_the_file_and_reason(tiny, tmp_path: Path) -> None:
    model, cfg = build(tiny, "marn")
    config = tiny.config.model_copy(update={"model": cfg})
    good = save_checkpoint(tmp_path / "good", model, config, tiny.feature_map, tiny.table)

    truncated = tmp_path / "truncated"
    shutil.copytree(good, truncated)
    data = (truncated / "model.pt").read_bytes()
    (truncated / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.pt: .*truncated"):
        load_checkpoint(truncated)

    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        load_checkpoint(tmp_path / "nope")
    missing = tmp_path / "missing"
    shutil.copytree(good, missing)
    (missing / "feature_map.json").unlink()
    with pytest.raises(CheckpointError, match=r"feature_map\.json: missing"):
        load_checkpoint(missing)

    other = config.model_copy(update={"model": cfg.model_copy(update={"item_dim": 8})})
    with pytest.raises(CheckpointError, match=r"incompatible .*model\.item_dim: checkpoint 16, config 8"):
        load_checkpoint(good, expected_config=other)


def test_a_checkpoint_referencing_the_runs_item_table_loads_it_verified_and_can_store_it(tiny, tmp_path: Path) -> None:
    """Training's epoch checkpoints reference the run's one item table: loaded and verified from there,
    refused when it is gone or changed, and made self-contained by a hard link (no second copy on disk)."""
    model, cfg = build(tiny, "marn")
    model.eval()
    config = tiny.config.model_copy(update={"model": cfg})
    tiny.table.save(tmp_path / "item_table.pt")
    shared = SharedItemTable.of(tmp_path / "item_table.pt")
    path = save_checkpoint(tmp_path / "epoch-1", model, config, tiny.feature_map, tiny.table, shared_item_table=shared)
    assert not (path / "item_table.pt").exists()
    loaded = load_checkpoint(path)
    assert np.array_equal(loaded.item_table.vectors["image"], tiny.table.vectors["image"])

    original = shared.path.read_bytes()
    shared.path.write_bytes(original[:-10])
    with pytest.raises(CheckpointError, match=r"item_table\.pt: content does not match meta\.json"):
        load_checkpoint(path)
    shared.path.unlink()
    with pytest.raises(CheckpointError, match=r"item_table\.pt: missing; .*epoch-1 references it as its item table"):
        load_checkpoint(path)

    shared.path.write_bytes(original)
    store_item_table(path)
    assert (path / "item_table.pt").stat().st_ino == shared.path.stat().st_ino  # a hard link, not a copy
    shared.path.unlink()  # the checkpoint no longer needs the run's file
    assert np.array_equal(load_checkpoint(path).item_table.vectors["image"], tiny.table.vectors["image"])


def test_unknown_model_or_fusion_is_refused_with_valid_names(tiny) -> None:
    with pytest.raises(Exception, match=r"'marn'.*'din'"):
        ExperimentConfig.model_validate({"model": {"name": "deepfm"}})
    with pytest.raises(Exception, match=r"'modal_attention'.*'concat'"):
        ExperimentConfig.model_validate({"model": {"fusion": "gated"}})
    bad = tiny.config.model.model_construct(**{**tiny.config.model.model_dump(), "name": "deepfm"})
    with pytest.raises(ConfigError, match=r"valid names: lr, dnn, din, concat, man, man_d1, marn"):
        build_model(bad, tiny.feature_map, tiny.table.dims())
    with pytest.raises(ConfigError, match=r"unknown modality \['video'\]; available: \['id', 'image', 'audio'\]"):
        build(tiny, "marn", modalities=["id", "video"])
    with pytest.raises(ConfigError, match=">= 2 modalities"):
        build(tiny, "marn", modalities=["image"])


def test_one_modality_dropped_ablation_builds(tiny) -> None:
    model, _ = build(tiny, "marn", modalities=["id", "image"])
    assert model.modalities == ["id", "image"]
    out = model(next(tiny.examples.split("train").batches(8)), ItemInputs.from_table(tiny.table))
    assert out.modal_attention.shape == (8, 2)


@pytest.mark.parametrize("specific_norm", [False, True])
def test_specific_norm_bounds_the_specific_features(tiny, specific_norm: bool) -> None:
    """model.specific_norm: each modality-specific feature has RMS 1, so the fused specific feature
    (sum of a_m s_m, |a_m| <= 1) stays within the number of modalities however large the inputs;
    without it, its scale follows the inputs' (what let MARN's Ds loss inflate it in training)."""
    model, _ = build(tiny, "marn", specific_norm=specific_norm)
    model.eval()
    base = ItemInputs.from_table(tiny.table)
    scaled = ItemInputs({k: v * 1000 if k.startswith("vector.") else v for k, v in base.tensors.items()})
    rows = torch.arange(1, base.id_index.shape[0])  # every item (row 0 is padding)
    with torch.no_grad():
        rms = model.item_representations(rows, scaled).adversarial.specific.pow(2).mean(dim=1).sqrt()
    n_modalities = len(model.modalities)
    if specific_norm:
        assert float(rms.max()) <= n_modalities + 1e-4
    else:
        assert float(rms.max()) > 10 * n_modalities


def test_user_tower_reads_the_real_history_and_moves_the_scores(tiny) -> None:
    """model.user_tower: one vector per user from the user's fields and the mean history rep; the
    history changes it, padded positions never do, and the scores use it."""
    model, _ = build(tiny, "marn", user_tower=True)
    model.eval()
    items = ItemInputs.from_table(tiny.table)
    batch = next(tiny.examples.split("test").batches(16))
    assert batch.hist_mask.any(dim=1).all()  # every test row has some history
    rows = torch.cat([batch.item.unsqueeze(1), batch.hist], dim=1)
    with torch.no_grad():
        reps = model.item_representations(rows.reshape(-1), items).rep.reshape(*rows.shape, -1)
        fields, history = batch.user, reps[:, 1:]
        user = model.user_vector(fields, history, batch.hist_mask)
        # pad the two oldest positions of every row: what they hold must not matter, their absence must
        mask = batch.hist_mask.clone()
        mask[:, :2] = False
        assert mask.any(dim=1).all() and (batch.hist_mask & ~mask).any()
        shorter = model.user_vector(fields, history, mask)
        garbage = torch.where(mask.unsqueeze(-1), history, torch.full_like(history, float("nan")))
        assert torch.allclose(model.user_vector(fields, garbage, mask), shorter, atol=1e-6)
        assert not torch.allclose(shorter, user)
        other_users = model.user_vector(fields, history.roll(1, dims=0), batch.hist_mask.roll(1, dims=0))
        assert not torch.allclose(other_users, user)
        # the logits use it: with the tower's output zeroed the scores move
        logits = model(batch, items).logits
        torch.nn.init.zeros_(model.user_tower.layers[-1].weight)
        torch.nn.init.zeros_(model.user_tower.layers[-1].bias)
        assert not torch.allclose(model(batch, items).logits, logits)


VARIANTS = {
    "marn-user_tower": {"user_tower": True},
    "marn-apgru": {"sequence": "apgru"},
    "marn-beside": {"id_path": "beside", "user_tower": True},
    "marn-simtier": {"id_path": "beside", "user_tower": True, "simtier_bins": 8},
    "marn-add": {"id_path": "beside", "content_merge": "add", "simtier_bins": 8},
    "din-simtier": {"simtier_bins": 8},
}


@pytest.mark.parametrize("name", [*MODELS, *VARIANTS])
def test_score_candidates_scores_one_user_like_the_batch_forward(tiny, name: str) -> None:
    """The serving fast path (one user against many cached candidate reps, the user side computed once)
    gives the logits the training forward gives the same rows."""
    options = VARIANTS.get(name, {})
    model, _ = build(tiny, name.split("-")[0], **options)
    model.eval()
    items = ItemInputs.from_table(tiny.table)
    one = next(tiny.examples.split("test").batches(1))
    assert one.hist_mask.any()
    candidates = torch.arange(1, 9)
    n = len(candidates)
    rows = dataclasses.replace(
        one,
        item=candidates,
        **{k: getattr(one, k).expand(n, -1).contiguous() for k in ("hist", "hist_mask", "user", "context", "numeric")},
        label=torch.zeros(n),
    )
    with torch.no_grad():
        expected = model(rows, items).logits
        reps = model.item_representations(torch.cat([candidates, one.hist[0]]), items).rep
        side = UserSide.one_user(one.user[0], one.context[0], one.numeric[0], reps[n:], one.hist_mask[0])
        fast = model.score_candidates(side, reps[:n])
    assert torch.allclose(fast, expected, atol=1e-5)


def test_user_tower_runs_once_per_user_on_the_serving_path(tiny) -> None:
    model, _ = build(tiny, "marn", user_tower=True)
    model.eval()
    items = ItemInputs.from_table(tiny.table)
    one = next(tiny.examples.split("test").batches(1))
    calls = []
    hook = model.user_tower.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        reps = model.item_representations(torch.arange(1, 9), items).rep
        hist = model.item_representations(one.hist[0], items).rep
        model.score_candidates(
            UserSide.one_user(one.user[0], one.context[0], one.numeric[0], hist, one.hist_mask[0]), reps
        )
    hook.remove()
    assert calls == [1]


@pytest.mark.parametrize("name", ["marn", "din", "lr"])
def test_id_embeddings_off_makes_scores_independent_of_the_ids(tiny, name: str) -> None:
    """`model.id_embeddings: []` gives a model that cannot see (or memorise) user or item ids."""
    batch = next(tiny.examples.split("train").batches(64))
    items = ItemInputs.from_table(tiny.table)
    other_ids = dict(items.tensors)
    real = other_ids["id_index"]
    other_ids["id_index"] = torch.where(real > 1, real.flip(0).clamp(min=2), real)  # every warm item, another id
    assert not torch.equal(other_ids["id_index"], real)
    other_users = dataclasses.replace(batch, user=batch.user.clone())
    other_users.user[:, 0] = other_users.user[:, 0].flip(0)
    assert not torch.equal(other_users.user, batch.user)

    def scores(model, b, tensors):
        with torch.no_grad():
            return model(b, ItemInputs(tensors)).logits

    for id_embeddings, moves in (([], False), (["user", "item"], True)):
        model, _ = build(tiny, name, id_embeddings=id_embeddings)
        model.eval()
        base = scores(model, batch, items.tensors)
        moved = [
            not torch.allclose(base, scores(model, batch, other_ids)),
            not torch.allclose(base, scores(model, other_users, items.tensors)),
        ]
        assert moved == [moves, moves], (name, id_embeddings, moved)
    only_item, _ = build(tiny, name, id_embeddings=["item"])  # the user id alone is off
    only_item.eval()
    base = scores(only_item, batch, items.tensors)
    assert torch.allclose(base, scores(only_item, other_users, items.tensors))
    assert not torch.allclose(base, scores(only_item, batch, other_ids))


def test_id_embeddings_refuses_an_empty_id_modality_and_duplicates(tiny) -> None:
    import dataclasses

    no_attributes = dataclasses.replace(
        tiny.feature_map,
        fields={k: f for k, f in tiny.feature_map.fields.items() if f.source != "item" or k == "item_id"},
    )
    for name in ("din", "lr", "marn"):
        cfg = tiny.config.model.model_copy(update={"name": name, "id_embeddings": ["user"]})
        with pytest.raises(
            ConfigError, match=rf"model.id_embeddings: without the item id, model '{name}' has no item features"
        ):
            build_model(cfg, no_attributes, tiny.table.dims())
    content_only = tiny.config.model.model_copy(update={"id_embeddings": [], "modalities": ["image", "audio"]})
    assert build_model(content_only, no_attributes, tiny.table.dims()).modalities == ["image", "audio"]
    with pytest.raises(Exception, match="id_embeddings lists a value twice"):
        ExperimentConfig.model_validate({"model": {"id_embeddings": ["user", "user"]}})
    with pytest.raises(Exception, match="id_embeddings"):
        ExperimentConfig.model_validate({"model": {"id_embeddings": ["session"]}})


@pytest.mark.parametrize("name", ["din", "marn", "lr"])
def test_without_item_ids_every_parameter_still_gets_a_gradient(tiny, name: str) -> None:
    """Distributed training (DDP) fails when a parameter is left out of a step's graph: items with list
    attributes only and no id embedding still use every parameter."""
    import dataclasses

    lists_only = dataclasses.replace(
        tiny.feature_map,
        fields={
            k: f
            for k, f in tiny.feature_map.fields.items()
            if not (f.source == "item" and f.kind == "categorical" and k != "item_id")
        },
    )
    assert [f.name for f in lists_only.by("item", "list")] == ["tags"] and len(
        lists_only.by("item", "categorical")
    ) == 1
    table = dataclasses.replace(tiny.table, categorical=tiny.table.categorical[:, :0])
    cfg = tiny.config.model.model_copy(update={"name": name, "id_embeddings": []})
    torch.manual_seed(0)
    model = build_model(cfg, lists_only, table.dims())
    out = model(next(tiny.examples.split("train").batches(32)), ItemInputs.from_table(table))
    total_loss(out, torch.ones(32), cfg)[0].backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, unused


# --------------------------------------------------------------------------- ids beside content (model.id_path)


def test_ids_beside_content_keep_their_own_path_whatever_the_content(tiny) -> None:
    """id_path beside: the item representation starts with DIN's id part, which content cannot change; the
    content part beside it moves with the content vectors, and so do the scores."""
    model, _ = build(tiny, "marn", id_path="beside")
    model.eval()
    dim = tiny.config.model.item_dim
    assert model.item_encoder.out_dim == 2 * dim and model.modalities[0] == "id"
    items = ItemInputs.from_table(tiny.table)
    poisoned = dict(items.tensors)
    for name in list(poisoned):
        if name.startswith("vector."):
            poisoned[name] = torch.randn_like(poisoned[name]) * 5  # every item's content replaced
    rows = torch.arange(1, tiny.table.n_items + 1)
    batch = next(tiny.examples.split("valid").batches(32))
    with torch.no_grad():
        before = model.item_representations(rows, items)
        after = model.item_representations(rows, ItemInputs(poisoned))
        assert torch.equal(before.rep[:, :dim], after.rep[:, :dim])  # the id part reaches attention and head as is
        assert not torch.allclose(before.rep[:, dim:], after.rep[:, dim:])
        assert not torch.allclose(model(batch, items).logits, model(batch, ItemInputs(poisoned)).logits)
        shares = before.attention  # id first, then each content modality: shares of the representation
        assert shares.shape == (len(rows), len(model.modalities))
        assert torch.allclose(shares.sum(dim=1), torch.ones(len(rows)), atol=1e-5)
    # the adversarial parts still train on the content modalities
    model.train()
    out = model(batch, items)
    assert out.adversarial is not None and out.adversarial.mask.shape[1] == len(model.modalities) - 1


def test_content_added_to_the_ids_keeps_dins_width_and_starts_as_the_ids(tiny) -> None:
    """model.content_merge 'add': the content representation is summed into the id representation (width D);
    with the content gate closed (its start) the representation is exactly the id part, whatever the content."""
    model, _ = build(tiny, "marn", id_path="beside", content_merge="add", content_gate=True)
    model.eval()
    dim = tiny.config.model.item_dim
    assert model.item_encoder.out_dim == dim
    items = ItemInputs.from_table(tiny.table)
    rows = torch.arange(1, tiny.table.n_items + 1)
    with torch.no_grad():
        rep = model.item_representations(rows, items).rep
        assert torch.equal(rep, model.item_encoder.ids(rows, items).rep)
        model.item_encoder.gate.fill_(1.0)
        opened = model.item_representations(rows, items).rep
        content = model.item_encoder.content(rows, items).rep
        assert torch.allclose(opened, rep + content, atol=1e-6)


def test_content_dropout_drops_whole_items_content_in_training_only(tiny) -> None:
    """model.content_dropout: in training some items' representation is their id part alone (the content part
    dropped as a whole, the kept ones scaled by 1 / (1 - p)); scoring keeps every item's content."""
    model, _ = build(tiny, "marn", id_path="beside", content_merge="add", content_dropout=0.5, id_dropout=0.0)
    items = ItemInputs.from_table(tiny.table)
    rows = torch.arange(1, tiny.table.n_items + 1)
    model.eval()
    with torch.no_grad():
        ids = model.item_encoder.ids(rows, items).rep
        content = model.item_encoder.content(rows, items).rep
        assert torch.allclose(model.item_representations(rows, items).rep, ids + content, atol=1e-6)
        model.train()
        torch.manual_seed(1)
        trained = model.item_representations(rows, items).rep - ids
    dropped = (trained.abs() < 1e-6).all(dim=1)
    kept = torch.isclose(trained, 2 * content, atol=1e-5).all(dim=1)
    assert (dropped | kept).all() and 0 < dropped.sum() < len(rows)


def test_id_dropout_trains_the_out_of_vocabulary_rows(tiny) -> None:
    """model.id_dropout / model.user_id_dropout: in training, some rows see the OOV item / user id, so the OOV
    embeddings get gradients (cold items and users are scored with a trained id part); off, they get none."""
    batch = next(tiny.examples.split("train").batches(64))
    items = ItemInputs.from_table(tiny.table)
    for dropout, trained in ((0.0, False), (0.5, True)):
        model, cfg = build(tiny, "marn", id_path="beside", id_dropout=dropout, user_id_dropout=dropout)
        model.train()
        loss, _ = total_loss(model(batch, items), batch.label, cfg)
        loss.backward()
        item_table = model.item_encoder.ids.id_features.categorical.table.weight.grad
        user_table = model.user.table.weight.grad
        assert (item_table[OOV].abs().sum() > 0) == trained  # item_id is the first field: its OOV row is 1
        assert (user_table[OOV].abs().sum() > 0) == trained
    model.eval()  # no dropout when scoring: the same rows score the same twice
    with torch.no_grad():
        assert torch.equal(model(batch, items).logits, model(batch, items).logits)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("id_path", "sideways", "model.id_path"),
        ("user_id_dropout", 1.5, "model.user_id_dropout"),
        ("user_id_dropout", -0.1, "model.user_id_dropout"),
        ("simtier_bins", 1, "simtier_bins"),
        ("simtier_bins", 65, "model.simtier_bins"),
        ("content_merge", "mix", "model.content_merge"),
        ("content_dropout", 1.0, "model.content_dropout"),
        ("content_dropout", 0.2, "content_dropout: only with id_path: beside"),
        ("content_merge", "add", "content_merge: only with id_path: beside"),
    ],
)
def test_new_model_switches_reject_bad_values_naming_the_field(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"model": {key: value}})


def test_ids_beside_content_needs_a_content_modality(tiny) -> None:
    with pytest.raises(ConfigError, match="model.id_path: 'beside' needs a content modality"):
        build(tiny, "marn", id_path="beside", modalities=["id"])


def test_content_gate_starts_from_the_id_only_representation(tiny) -> None:
    """model.content_gate: the content part is scaled by a learned scalar that starts at 0, so at
    initialisation content moves nothing; the gate gets a gradient, so training can let content in."""
    model, cfg = build(tiny, "marn", id_path="beside", content_gate=True)
    dim = tiny.config.model.item_dim
    items = ItemInputs.from_table(tiny.table)
    rows = torch.arange(1, tiny.table.n_items + 1)
    with torch.no_grad():
        assert (model.item_representations(rows, items).rep[:, dim:] == 0).all()
    batch = next(tiny.examples.split("train").batches(64))
    loss, _ = total_loss(model(batch, items), batch.label, cfg)
    loss.backward()
    assert model.item_encoder.gate.grad is not None and model.item_encoder.gate.grad.abs() > 0


def test_cold_content_gate_scores_out_of_vocabulary_items_from_content(tiny) -> None:
    """model.cold_content_gate: items whose id is OOV (cold; in training also the id-dropout rows) have
    their own gate, starting at 1, so they are scored from content from the first step while known items
    start id-only; the id-dropout rows train the content part even while the known items' gate is 0."""
    model, cfg = build(tiny, "marn", id_path="beside", content_gate=True, cold_content_gate=True, id_dropout=0.5)
    dim = tiny.config.model.item_dim
    items = ItemInputs.from_table(tiny.table)
    rows = torch.arange(1, tiny.table.n_items + 1)
    cold = items.id_index[rows] == OOV
    assert cold.any() and (~cold).any()
    model.eval()
    with torch.no_grad():
        content = model.item_representations(rows, items).rep[:, dim:]
    assert (content[~cold] == 0).all() and (content[cold].abs().sum(dim=1) > 0).all()
    model.train()
    batch = next(tiny.examples.split("train").batches(64))
    loss, _ = total_loss(model(batch, items), batch.label, cfg)
    loss.backward()
    encoder = model.item_encoder
    assert encoder.cold_gate.grad is not None and encoder.cold_gate.grad.abs() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.content.parameters())
    with pytest.raises(ConfigError, match="cold_content_gate: a cold-item gate needs content_gate"):
        parse_config({"model": {"cold_content_gate": True}})


def test_maturity_gates_let_content_in_by_how_established_the_item_is(tiny) -> None:
    """model.maturity_tiers: one content gate per tier of the item's training rows; cold items and rows whose
    id is dropped in training are tier 0, so each tier's gate decides how much content its items get."""
    model, cfg = build(tiny, "marn", id_path="beside", content_gate=True, maturity_tiers=3, id_dropout=0.0)
    encoder, dim = model.item_encoder, tiny.config.model.item_dim
    items = ItemInputs.from_table(tiny.table)
    rows = torch.arange(1, tiny.table.n_items + 1)
    cold = items.id_index[rows] == OOV
    counts = items.train_rows[rows]
    assert (counts[cold] == 0).all() and (counts[~cold] >= 2).all()  # tiny: warm items have >= 2 training rows
    model.eval()
    for gates, content_on in (([0.0, 0.0, 1.0], ~cold), ([1.0, 0.0, 0.0], cold)):
        with torch.no_grad():
            encoder.gate.copy_(torch.tensor(gates))
            content = model.item_representations(rows, items).rep[:, dim:]
        assert (content[~content_on] == 0).all() and (content[content_on].abs().sum(dim=1) > 0).all()
    oov = torch.full_like(rows, OOV)
    assert (encoder.maturity(rows, items, oov) == 0).all()  # an id-dropout row is scored as cold
    assert encoder.maturity(rows, items, items.id_index[rows]).tolist() == [0 if c else 2 for c in cold.tolist()]
    for bad, message in (
        ({"maturity_tiers": 3}, "maturity_tiers: per-maturity gates need content_gate"),
        ({"maturity_tiers": 1, "content_gate": True, "id_path": "beside"}, "maturity_tiers: 1 tier"),
        ({"maturity_tiers": -1}, "maturity_tiers"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_config({"model": bad})


def test_ids_beside_content_needs_the_id_modality(tiny) -> None:
    with pytest.raises(ConfigError, match="model.id_path: 'beside' .* has no 'id'"):
        build(tiny, "marn", id_path="beside", modalities=["image", "audio"])


def test_simtier_features_are_the_histogram_of_content_similarities(tiny) -> None:
    """model.simtier_bins: per content modality, the share of the history in each cosine tier over [-1, 1],
    computed from the frozen vectors, with missing modalities and padded history left out."""
    from recsys.modules import SimTier

    rng = np.random.default_rng(0)
    sim = SimTier({"a": 4, "b": 3}, bins=4)
    vectors = {m: torch.from_numpy(rng.normal(size=(6, d))).float() for m, d in sim.dims.items()}
    masks = {"a": torch.tensor([True] * 6), "b": torch.tensor([True, True, False, True, True, True])}
    keys = sim.keys(vectors, masks)  # rows 0-1: candidates, rows 2-5: one user's history (the last padded)
    history_mask = torch.tensor([[True, True, True, False]])
    got = sim(keys[:2], keys[2:][None], history_mask)
    assert got.shape == (2, 8)
    for c in range(2):
        for j, m in enumerate(sim.dims):
            expected = np.zeros(4)
            if masks[m][c]:
                valid = [h for h in (2, 3, 4) if masks[m][h]]
                for h in valid:
                    x, y = vectors[m][c].numpy(), vectors[m][h].numpy()
                    cos = float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))
                    expected[min(int((cos + 1) * 2), 3)] += 1 / len(valid)
            assert np.allclose(got[c, 4 * j : 4 * j + 4].numpy(), expected, atol=1e-6), (c, m)


def test_simtier_reaches_the_head_and_leaves_the_id_path_alone(tiny) -> None:
    model, cfg = build(tiny, "marn", id_path="beside", simtier_bins=8)
    plain, _ = build(tiny, "marn", id_path="beside")
    assert model.head.in_dim == plain.head.in_dim + 8 * len(tiny.table.dims())
    items = ItemInputs.from_table(tiny.table)
    rows = torch.arange(1, 9)
    with torch.no_grad():
        reps = model.item_representations(rows, items).rep
    dim = model.item_encoder.out_dim
    assert reps.shape[1] == dim + sum(tiny.table.dims().values())  # the keys follow the D columns
    din, _ = build(tiny, "din", simtier_bins=8)  # DIN + similarity features: its item representation stays id-only
    assert din.item_representations(rows, items).rep.shape[1] == din.item_encoder.out_dim + reps.shape[1] - dim
    with pytest.raises(ConfigError, match="model.simtier_bins: lr uses no content"):
        build(tiny, "lr", simtier_bins=8)
    with pytest.raises(ConfigError, match="model.simtier_bins: .* needs a content modality"):
        build(tiny, "man", modalities=["id"], simtier_bins=8)


def test_comparisons_keep_baselines_id_only_and_the_paper_model_selectable(tiny) -> None:
    from recsys.models import comparison_config

    chosen = tiny.config.model.model_copy(update={"id_path": "beside", "content_gate": True, "simtier_bins": 8})
    assert comparison_config(chosen, "din").simtier_bins == 0  # DIN in a comparison: no content at all
    assert comparison_config(chosen, "marn").simtier_bins == 8
    paper = build_model(comparison_config(chosen, "marn_paper"), tiny.feature_map, tiny.table.dims())
    assert paper.similarity is None and "id" in paper.item_encoder.modalities  # ids inside the fusion
    assert not hasattr(paper.item_encoder, "gate")

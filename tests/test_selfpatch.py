"""SelfPatch: neighbour selection against a plain loop, targets, loss, centres, one CPU step."""

from __future__ import annotations

import pytest
import torch

from densessl.errors import ConfigError
from densessl.models.neighbours import neighbour_table, selfpatch_neighbors
from densessl.models.vit import patch_tokens

from conftest import augmented_batch as make_batch
from conftest import state_at
from conftest import tiny_vit_method as make
from reference.plain_dino import plain_selfpatch_neighbors, plain_window

GRIDS = [(14, 14), (6, 6), (4, 7), (7, 3), (3, 3), (2, 5), (1, 4)]


@pytest.mark.parametrize("border", ["wrap", "clamp"])
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("k", [1, 4, 8])
def test_neighbours_match_plain_loop(grid, border, k):
    h, w = grid
    tokens = torch.randn(2, h * w, 5, generator=torch.Generator().manual_seed(h * 31 + w))
    got = selfpatch_neighbors(tokens.double(), grid, k, border)
    assert got.dtype == torch.int64 and got.shape == (2, h * w, k)
    assert got.tolist() == plain_selfpatch_neighbors(tokens, grid, k, border)


@pytest.mark.parametrize("border", ["wrap", "clamp"])
@pytest.mark.parametrize("grid", GRIDS)
def test_neighbour_table_lists_each_window_cell_once(grid, border):
    h, w = grid
    table = neighbour_table(grid, border)
    for i, row in enumerate(table.tolist()):
        cells = [j for j in row if j >= 0]
        assert len(cells) == len(set(cells)) and set(cells) == plain_window(
            i // w, i % w, h, w, border
        )


def test_wrap_is_the_reference_torus_and_clamp_keeps_a_corner_inside():
    # Patch (0, 0) of the 14x14 grid wraps to the opposite edges (the SelfPatch code's table).
    expected = {(0, 1), (0, 13), (1, 0), (1, 1), (1, 13), (13, 0), (13, 1), (13, 13)}
    assert {divmod(j, 14) for j in neighbour_table((14, 14), "wrap")[0].tolist()} == expected
    clamp = {divmod(j, 14) for j in neighbour_table((14, 14), "clamp")[0].tolist() if j >= 0}
    assert clamp == {(0, 1), (1, 0), (1, 1)}
    # A corner has 3 neighbours when clamped: with k = 4 the last slot is empty.
    index = selfpatch_neighbors(torch.randn(1, 196, 8), (14, 14), k=4, border="clamp")
    assert index[0, 0, :3].min() >= 0 and index[0, 0, 3] == -1
    assert (index[0, 15] >= 0).all()  # an interior patch has 8 candidates


def test_neighbours_follow_similarity():
    # Tokens equal to their column index: the best neighbours share the patch's column.
    grid = (5, 5)
    tokens = torch.stack([torch.tensor([1.0, c]) for r in range(5) for c in range(5)])[None]
    index = selfpatch_neighbors(tokens, grid, k=2, border="clamp")
    centre = 2 * 5 + 2
    assert sorted(index[0, centre].tolist()) == [1 * 5 + 2, 3 * 5 + 2]


def test_selfpatch_backbone_has_no_class_token_and_no_final_norm(tmp_path):
    method = make("selfpatch", tmp_path)
    keys = set(method.student.backbone.state_dict())
    assert "cls_token" not in keys and not any(k.startswith("norm.") for k in keys)
    assert method.student.backbone.pos_embed.shape == (1, 36, 48)  # 48 px / patch 8 = 6x6


@pytest.mark.parametrize("border", ["wrap", "clamp"])
def test_teacher_patch_targets_aggregate_the_selected_neighbours(tmp_path, border):
    method = make("selfpatch", tmp_path, **{"method.border": border})
    views = make_batch(method).views
    _, patches = method.teacher_outputs(views)
    teacher = method.teacher
    with torch.no_grad():
        for v in (0, 2):  # a 6x6 global view and a 3x3 local one (corners: 3 neighbours)
            grid = teacher.backbone(views[v])["patch"]
            tokens = patch_tokens(grid)
            hw = tuple(grid.shape[-2:])
            picked = plain_selfpatch_neighbors(tokens, hw, 4, border)
            for b in (0, 3):
                for i in (0, hw[1] + 1, hw[0] * hw[1] - 1):
                    cells = [j for j in picked[b][i] if j >= 0]
                    target = teacher.aggregator.summarise(tokens[b, cells][None])  # (1, D)
                    expected = teacher.patch_head(target)[0]
                    torch.testing.assert_close(patches[v][b, i], expected, rtol=1e-4, atol=1e-5)


def test_centres_follow_teacher_means_over_all_views(tmp_path):
    method = make("selfpatch", tmp_path)
    batch = make_batch(method)
    images, patches = method.teacher_outputs(batch.views)
    method(batch, state_at(method, 0))
    method.after_step(state_at(method, 0))
    expected = 0.1 * torch.cat(images).mean(0, keepdim=True)  # all 4 views, not only global
    torch.testing.assert_close(method.center, expected, rtol=1e-4, atol=1e-6)
    pooled = torch.cat([p.flatten(0, 1) for p in patches])  # 2·B·36 + 2·B·9 patch rows
    assert pooled.shape[0] == 2 * 4 * 36 + 2 * 4 * 9
    torch.testing.assert_close(method.patch_center, 0.1 * pooled.mean(0, keepdim=True))


@pytest.mark.parametrize("border", ["wrap", "clamp"])
def test_one_step_trains_student_only(tmp_path, border):
    method = make("selfpatch", tmp_path, **{"method.border": border})
    assert all(not p.requires_grad for p in method.teacher.parameters())
    out = method(make_batch(method), state_at(method, 0))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    student = method.student
    for module in (student.backbone, student.aggregator, student.head.mlp, student.patch_head.mlp):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    frozen = {id(p) for p in method.frozen_parameters(state_at(method, 0))}
    assert frozen == {id(student.head.last_layer.weight), id(student.patch_head.last_layer.weight)}


def test_unknown_border_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="border"):
        make("selfpatch", tmp_path, **{"method.border": "reflect"})

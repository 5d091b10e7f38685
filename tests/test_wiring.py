"""Every method's wiring: its loss recomputed from the networks' parts, away from its own code.

For each registered method the student is first moved away from the teacher (so a loss built on
the wrong network gives another value). The test then runs the encoders' parts itself (backbone,
FPN, heads: the modules, not the method's functions), pairs each view or branch with its target,
and applies the labels, temperatures and weights of the paper, written out here, through the
plain float64 loops of ``tests/reference``. Nothing from ``densessl.methods`` or
``densessl.losses`` computes the expected value. The method's own loss must agree to ~1e-5.

This is the check that catches a method pairing a view with its own targets, taking targets or
keys from the student, matching the wrong features, using the wrong neighbours or centres: the
loss functions alone are tested in the per-method files, and stay right when the wiring is wrong.
"""

from __future__ import annotations

import pytest
import torch

from densessl.data.montage import mcl_level
from densessl.data.proposals import assign_levels
from densessl.models.box_head import roi_align_assigned
from densessl.models.window_head import cut_windows

from conftest import state_at
from reference.plain_byol import plain_byol_loss
from reference.plain_dino import plain_dino_loss, plain_multicrop_loss, plain_selfpatch_neighbors
from reference.plain_losses import plain_densecl_dense_loss, plain_info_nce
from reference.plain_mcl import plain_cell_loss
from reference.plain_pixpro import (
    plain_coords,
    plain_pairs,
    plain_pixpro_loss,
    plain_propagation,
)
from reference.plain_soco import reference_regression_loss
from tiny_methods import perturb_student, tiny_batch, tiny_method

REL = 1e-5


def unit(t: torch.Tensor) -> torch.Tensor:
    return t / t.norm(dim=-1, keepdim=True)


def pooled_c5(encoder, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, C): the backbone's C5 map averaged over space."""
    return encoder.backbone(images)["c5"].mean(dim=(2, 3))


def perturbed(name: str, tmp_path, **extra):
    """The method at its tiny size, its student moved off the teacher, and a batch."""
    method, cfg = tiny_method(name, tmp_path, **extra)
    perturb_student(method)
    return method, tiny_batch(method, cfg)


# ---------------------------------------------------------------- CNN, image level


def test_mocov2_queries_of_view_one_against_teacher_keys_of_view_two(tmp_path):
    method, batch = perturbed("mocov2", tmp_path)
    query_view, key_view = batch.views
    with torch.no_grad():
        q = unit(method.student.global_head(pooled_c5(method.student, query_view)))
        k = unit(method.teacher.global_head(pooled_c5(method.teacher, key_view)))
    expected = plain_info_nce(q.double(), k.double(), method.queue.keys.double(), 0.2)
    assert method(batch, state_at(method, 0)).loss.item() == pytest.approx(expected, rel=REL)


def test_densecl_matches_student_to_teacher_features_and_mixes_half_and_half(tmp_path):
    """At 128 px the C5 map is 4x4: 16 locations per image, so a wrong matching shows."""
    method, batch = perturbed("densecl", tmp_path, **{"data.image_size": 128})
    query_view, key_view = batch.views
    rows = lambda t: t.flatten(2).transpose(1, 2).double()  # noqa: E731  (B, C, h, w) -> (B, N, C)
    with torch.no_grad():
        q_c5 = method.student.backbone(query_view)["c5"]
        k_c5 = method.teacher.backbone(key_view)["c5"]
        q_global = unit(method.student.global_head(q_c5.mean(dim=(2, 3))))
        k_global = unit(method.teacher.global_head(k_c5.mean(dim=(2, 3))))
        q_dense = unit(rows(method.student.dense_head(q_c5)))
        k_dense = unit(rows(method.teacher.dense_head(k_c5)))
    global_term = plain_info_nce(q_global.double(), k_global.double(), method.queue.keys, 0.2)
    dense_term = plain_densecl_dense_loss(
        q_dense, k_dense, rows(q_c5), rows(k_c5), method.dense_queue.keys.double(), 0.2
    )
    out = method(batch, state_at(method, 0))
    assert out.logs["loss_global"].item() == pytest.approx(global_term, rel=REL)
    assert out.logs["loss_dense"].item() == pytest.approx(dense_term, rel=1e-4)
    assert out.loss.item() == pytest.approx(0.5 * global_term + 0.5 * dense_term, rel=1e-4)


def test_byol_predicts_the_teachers_projection_of_the_other_view(tmp_path):
    method, batch = perturbed("byol", tmp_path)
    first, second = batch.views
    with torch.no_grad():
        p1, p2 = (method.predictor(method.student.projector(pooled_c5(method.student, v)))
                  for v in (first, second))  # fmt: skip
        z1, z2 = (method.teacher.projector(pooled_c5(method.teacher, v)) for v in (first, second))
    expected = plain_byol_loss(p1.double(), z2.double()) + plain_byol_loss(p2.double(), z1.double())
    assert method(batch, state_at(method, 0)).loss.item() == pytest.approx(expected, rel=REL)


def test_pixpro_propagates_student_pixels_onto_the_other_views_teacher_pixels(tmp_path):
    """At 128 px the C5 map is 4x4; the pairs come from each view's crop box and flip through
    the reference's coordinates, the propagation and the loss from the plain loops."""
    method, batch = perturbed("pixpro", tmp_path, **{"data.image_size": 128})
    rows = lambda t: t.flatten(2).transpose(1, 2).double().tolist()  # noqa: E731  per image (N, D)
    with torch.no_grad():
        x = [method.student.projector(method.student.backbone(v)["c5"]) for v in batch.views]
        t = [method.teacher.projector(method.teacher.backbone(v)["c5"]) for v in batch.views]
        g = [method.propagation.transform(xv) for xv in x]  # the module's own 1x1 conv
    h, w = x[0].shape[-2:]
    coords = [
        [
            plain_coords(box.tolist(), bool(flip), int(size[0]), int(size[1]))
            for box, flip, size in zip(
                batch.crop_boxes[:, v], batch.flipped[:, v], batch.source_sizes, strict=True
            )
        ]
        for v in range(2)
    ]
    pairs = [
        [
            plain_pairs(cq, ck, h, w, h, w, 0.7)
            for cq, ck in zip(coords[v], coords[1 - v], strict=True)
        ]
        for v in range(2)
    ]
    paired = sum(value for image in pairs[0] for row in image for value in row)
    assert 0 < paired < len(pairs[0]) * (h * w) ** 2  # some pixels pair, not all
    y = [
        [plain_propagation(xb, gb, 2.0) for xb, gb in zip(rows(x[v]), rows(g[v]), strict=True)]
        for v in range(2)
    ]
    expected = plain_pixpro_loss(y[0], rows(t[1]), pairs[0]) + plain_pixpro_loss(
        y[1], rows(t[0]), pairs[1]
    )
    assert method(batch, state_at(method, 0)).loss.item() == pytest.approx(expected, rel=REL)


# ---------------------------------------------------------------- CNN + FPN, object level


def soco_boxes(encoder, view, boxes, thresholds, predictor=None):
    """(N, K, 4) view-pixel boxes -> (N, K, D): RoIAlign on each box's level, box head,
    projector, and the predictor on the online side."""
    n, k = boxes.shape[:2]
    flat = boxes.reshape(n * k, 4)
    level = torch.as_tensor(assign_levels(flat, thresholds))
    assert (level >= 0).all()  # every box has a level at these sizes
    image_index = torch.arange(n).repeat_interleave(k)
    pyramid = encoder.fpn(encoder.backbone(view))
    rois = roi_align_assigned(pyramid, flat, image_index, level, tuple(view.shape[-2:]), 7)
    z = encoder.projector(encoder.box_head(rois))
    return (z if predictor is None else predictor(z)).reshape(n, k, -1)


def test_soco_predicts_each_box_from_the_other_views_target(tmp_path):
    """Pairs (V1, V2) and (V1, V3); in each, V_a's predictions against V_b's teacher projections
    and the reverse, slots matched by proposal id."""
    method, batch = perturbed("soco", tmp_path)
    boxes, ids = batch.extras["boxes"], batch.extras["box_ids"]  # (N, P, 2, K, 4), (N, P, 2, K)
    thresholds = (48.0, 96.0, 192.0, 224.0)  # the paper's, in view pixels
    no_levels = torch.zeros(ids.shape[0], ids.shape[-1], dtype=torch.long)  # levels don't matter
    expected = 0.0
    with torch.no_grad():
        for p, (a, b) in enumerate([(0, 1), (0, 2)]):
            sides = [(batch.views[v], boxes[:, p, side], ids[:, p, side])
                     for side, v in enumerate((a, b))]  # fmt: skip
            predictor = method.predictor
            q = [soco_boxes(method.student, v, x, thresholds, predictor) for v, x, _ in sides]
            z = [soco_boxes(method.teacher, v, x, thresholds) for v, x, _ in sides]
            (_, _, ids_a), (_, _, ids_b) = sides
            args = (no_levels, no_levels)
            expected += reference_regression_loss(q[0].double(), z[1].double(), ids_a, ids_b, *args)
            expected += reference_regression_loss(q[1].double(), z[0].double(), ids_b, ids_a, *args)
    assert method(batch, state_at(method, 0)).loss.item() == pytest.approx(expected, rel=REL)


def mcl_branch_cells(method, views):
    """One branch's L views -> per level, (cell predictions, cell source labels); the montages
    draw from the global generator, as the method's."""
    built = [mcl_level(v, level) for level, v in enumerate(views)]
    student = method.student
    pyramid = student.fpn(student.backbone(torch.cat([x for x, _ in built])))  # one BN batch
    cells, start = [], 0
    for level, (inputs, sources) in enumerate(built):
        feature = pyramid[3 - level][start : start + inputs.shape[0]]  # P(5 - level)
        embedded = student.head(cut_windows(feature, 2**level))  # row-major cells
        cells.append((method.predictors[level](embedded), sources.reshape(-1)))
        start += inputs.shape[0]
    return cells


def test_mcl_compares_each_branchs_cells_with_the_other_branchs_targets(tmp_path):
    method, batch = perturbed("mcl", tmp_path)
    weights = (0.5, 0.25, 0.125, 0.125)  # w_i of the released config; T = 1
    first, second = batch.views[:4], batch.views[4:]
    with torch.no_grad():
        torch.manual_seed(5)
        cells_q, cells_k = mcl_branch_cells(method, first), mcl_branch_cells(method, second)
        z_q, z_k = (unit(method.teacher.head(method.teacher.fpn(method.teacher.backbone(v[0]))[-1]))
                    for v in (first, second))  # fmt: skip
    expected = sum(
        w * (plain_cell_loss(p, z_k, y, 1.0) + plain_cell_loss(pk, z_q, yk, 1.0))
        for w, (p, y), (pk, yk) in zip(weights, cells_q, cells_k, strict=True)
    )
    torch.manual_seed(5)  # the same montages
    assert method(batch, state_at(method, 0)).loss.item() == pytest.approx(expected, rel=REL)


# ---------------------------------------------------------------- ViT, image and patch level


def vit_method(name: str, tmp_path):
    """Without stochastic depth (the student gives the same logits twice) and with random
    centres (so a dropped or swapped centre shows)."""
    method, batch = perturbed(name, tmp_path, **{"method.drop_path_rate": 0.0})
    for center in (method.center, getattr(method, "patch_center", None)):
        if center is not None:
            center.normal_(generator=torch.Generator().manual_seed(center.shape[-1]))
    return method, batch


def test_dino_teacher_global_views_against_every_other_student_view(tmp_path):
    method, batch = vit_method("dino", tmp_path)
    center = method.center.clone()
    logits = lambda net, v: net.head(net.backbone(v)["cls"]).double()  # noqa: E731
    with torch.no_grad():
        teacher = [logits(method.teacher, v) for v in batch.views[:2]]
        student = [logits(method.student, v) for v in batch.views]
    state = state_at(method, 0)  # τ_t starts its warm-up at 0.04; τ_s = 0.1
    expected = plain_multicrop_loss(student, teacher, center, 0.1, 0.04)
    assert method(batch, state).loss.item() == pytest.approx(expected, rel=REL)
    method.after_step(state)  # c ← 0.9·c + 0.1·mean of the teacher's global-view logits
    want = 0.9 * center + 0.1 * torch.cat(teacher).mean(dim=0, keepdim=True).float()
    torch.testing.assert_close(method.center, want, rtol=1e-5, atol=1e-6)


def selfpatch_tokens(encoder, view) -> torch.Tensor:
    """(B, 3, H, W) -> (B, h·w, D) last-block patch tokens, row-major."""
    return encoder.backbone(view)["patch"].flatten(2).transpose(1, 2)


def selfpatch_teacher(teacher, view):
    """Image logits (B, K) and patch-target logits (B·N, Kp) of one view: each patch's target
    summarises its 4 most similar 3x3-window cells (wrapped at the border)."""
    grid = teacher.backbone(view)["patch"]
    tokens = grid.flatten(2).transpose(1, 2)
    batch = tokens.shape[0]
    picked = plain_selfpatch_neighbors(tokens, tuple(grid.shape[-2:]), 4, "wrap")
    neighbours = torch.stack([tokens[b, cells] for b in range(batch) for cells in picked[b]])
    targets = teacher.patch_head(teacher.aggregator.summarise(neighbours))  # (B·N, Kp)
    return teacher.head(teacher.aggregator.summarise(tokens)), targets


def test_selfpatch_patches_against_their_neighbours_targets_and_own_centres(tmp_path):
    method, batch = vit_method("selfpatch", tmp_path)
    center, patch_center = method.center.clone(), method.patch_center.clone()
    student = method.student
    with torch.no_grad():
        teacher = [selfpatch_teacher(method.teacher, v) for v in batch.views]
        t_images, t_patches = [t for t, _ in teacher], [p for _, p in teacher]
        s_tokens = [selfpatch_tokens(student, v) for v in batch.views]
        s_images = [student.head(student.aggregator.summarise(t)) for t in s_tokens]
        s_patches = [student.patch_head(student.aggregator.norm(t)).flatten(0, 1) for t in s_tokens]
    image = plain_multicrop_loss(
        [s.double() for s in s_images], [t.double() for t in t_images[:2]], center, 0.1, 0.04
    )  # τ_t constant 0.04, τ_s = 0.1
    patch = sum(
        plain_dino_loss(s.double(), t.double(), patch_center, 0.1, 0.04)
        for s, t in zip(s_patches, t_patches, strict=True)
    ) / len(s_patches)
    state = state_at(method, 0)
    out = method(batch, state)
    assert out.logs["loss_image"].item() == pytest.approx(image, rel=REL)
    assert out.logs["loss_patch"].item() == pytest.approx(patch, rel=REL)
    assert out.loss.item() == pytest.approx(image + 0.1 * patch, rel=REL)
    method.after_step(state)  # both centres over every view (DINO's: the global ones only)
    torch.testing.assert_close(
        method.center, 0.9 * center + 0.1 * torch.cat(t_images).mean(0, keepdim=True)
    )
    torch.testing.assert_close(
        method.patch_center, 0.9 * patch_center + 0.1 * torch.cat(t_patches).mean(0, keepdim=True)
    )

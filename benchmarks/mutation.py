"""Mutation check: does the test suite notice when a method's wiring is broken?

Each mutation below changes one line of the losses, the methods or the EMA (a swapped pair, the
wrong network, a dropped term, a swapped momentum, a frozen centre, a skipped enqueue ...), in
the kind of mistake a refactor makes. The script applies them one at a time, runs the tests
that cover that file, and counts the mutation as killed when they fail. The source is restored
after every mutation (and checked byte for byte at the end), but run it in a scratch clone all
the same:

    git clone -q . /tmp/mut && cd /tmp/mut && ln -s <your .venv> .venv
    PYTHONPATH=src .venv/bin/python benchmarks/mutation.py [--only NAME ...] [--list]

It prints one line per mutation and the score; docs/testing.md records the last result.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "densessl"


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # under src/densessl
    old: str  # must occur exactly once in the file
    new: str
    kind: str


M = Mutation
MUTATIONS = [
    # ---- losses
    M(
        "info_nce_no_negatives",
        "losses/moco.py",
        "denominator = exp_neg.sum(dim=1) + exp_pos",
        "denominator = exp_pos",
        "dropped term",
    ),
    M(
        "info_nce_temperature",
        "losses/moco.py",
        "q_scaled = q.to(dtype) / temperature",
        "q_scaled = q.to(dtype) * temperature",
        "wrong constant",
    ),
    M(
        "densecl_match_self",
        "losses/densecl.py",
        "index = match_by_similarity(q_feat.detach(), k_feat.detach())",
        "index = match_by_similarity(q_feat.detach(), q_feat.detach())",
        "swapped pair",
    ),
    M(
        "densecl_match_identity",
        "losses/densecl.py",
        "matched_keys = torch.gather(k_dense.detach(), 1, gather_index)",
        "matched_keys = k_dense.detach()",
        "dropped term",
    ),
    M(
        "byol_loss_sign",
        "losses/byol.py",
        "return (2 - 2 * (p * z).sum(dim=-1)).mean()",
        "return (2 + 2 * (p * z).sum(dim=-1)).mean()",
        "wrong sign",
    ),
    M(
        "byol_loss_unnormalised",
        "losses/byol.py",
        "z = F.normalize(target.detach().to(dtype), dim=-1)",
        "z = target.detach().to(dtype)",
        "dropped term",
    ),
    M(
        "soco_loss_all_pairs",
        "losses/soco.py",
        "matches = (pred_ids[:, :, None] == target_ids[:, None, :]).to(dtype)",
        "matches = torch.ones_like(similarity)",
        "dropped term",
    ),
    M(
        "soco_loss_sign",
        "losses/soco.py",
        "return -2 * per_image.mean()",
        "return 2 * per_image.mean()",
        "wrong sign",
    ),
    M(
        "mcl_loss_scale",
        "losses/mcl.py",
        "return F.cross_entropy(logits, labels) * (2 * temperature)",
        "return F.cross_entropy(logits, labels)",
        "dropped term",
    ),
    M(
        "mcl_loss_temperature",
        "losses/mcl.py",
        "logits = p @ targets.detach().to(dtype).t() / temperature",
        "logits = p @ targets.detach().to(dtype).t()",
        "dropped term",
    ),
    M(
        "dino_loss_no_centre",
        "losses/dino.py",
        "teacher = teacher_logits.detach().to(dtype) - center.to(dtype)",
        "teacher = teacher_logits.detach().to(dtype)",
        "frozen centre",
    ),
    M(
        "dino_loss_temps_swapped",
        "losses/dino.py",
        "log_prob = F.log_softmax(student_logits.to(dtype) / student_temp, dim=-1)",
        "log_prob = F.log_softmax(student_logits.to(dtype) / teacher_temp, dim=-1)",
        "swapped pair",
    ),
    # ---- EMA and matching helpers
    M(
        "ema_swapped_momentum",
        "models/ema.py",
        "torch._foreach_add_(teacher_params, student_params, alpha=1.0 - momentum)",
        "torch._foreach_add_(teacher_params, student_params, alpha=momentum)",
        "swapped momentum",
    ),
    M(
        "ema_copy_shortcut_off",
        "models/ema.py",
        "    if momentum == 0.0:",
        "    if momentum == -1.0:",
        "dropped term",
    ),
    M(
        "matching_argmin",
        "models/matching.py",
        "return similarity.argmax(dim=2)",
        "return similarity.argmin(dim=2)",
        "wrong choice",
    ),
    M(
        "neighbours_least_similar",
        "models/neighbours.py",
        "best, slot = candidates.topk(k, dim=2)",
        "best, slot = candidates.topk(k, dim=2, largest=False)",
        "wrong choice",
    ),
    M(
        "queue_pointer_frozen",
        "models/queue.py",
        "self.ptr.fill_((start + count) % self.length)",
        "self.ptr.fill_(start)",
        "skipped enqueue",
    ),
    # ---- MoCo-v2 / DenseCL
    M(
        "moco_student_keys",
        "methods/mocov2.py",
        "keys = self.encode(self.teacher, images)",
        "keys = self.encode(self.student, images)",
        "wrong network",
    ),
    M(
        "moco_skip_enqueue",
        "methods/mocov2.py",
        '        for keys in self._pending_keys:\n            self.queue.enqueue(dist.all_gather(keys["global"]))\n',
        "",
        "skipped enqueue",
    ),
    M(
        "moco_no_ema",
        "methods/mocov2.py",
        "        super().after_step(state)  # the EMA update\n",
        "",
        "dropped term",
    ),
    M(
        "moco_no_unshuffle",
        "methods/mocov2.py",
        "keys = {name: dist.batch_unshuffle(t, unshuffle) for name, t in keys.items()}",
        "keys = keys",
        "dropped term",
    ),
    M(
        "densecl_swapped_weights",
        "methods/densecl.py",
        "loss = (1.0 - lam) * loss_global + lam * loss_dense",
        "loss = lam * loss_global + (1.0 - lam) * loss_dense",
        "swapped pair",
    ),
    M(
        "densecl_dense_dropped",
        "methods/densecl.py",
        "loss = (1.0 - lam) * loss_global + lam * loss_dense",
        "loss = (1.0 - lam) * loss_global + 0.0 * loss_dense",
        "dropped term",
    ),
    M(
        "densecl_match_on_projections",
        "methods/densecl.py",
        'q["dense"], k["dense"], q["feat"].detach(), k["feat"], self.dense_queue.negatives(), t',
        'q["dense"], k["dense"], q["dense"].detach(), k["dense"], self.dense_queue.negatives(), t',
        "swapped pair",
    ),
    M(
        "densecl_skip_dense_enqueue",
        "methods/densecl.py",
        '            self.dense_queue.enqueue(dist.all_gather(keys["pooled"]))\n',
        "",
        "skipped enqueue",
    ),
    M(
        "densecl_dense_queue_global",
        "methods/densecl.py",
        'self._pending_keys.append({"global": k["global"], "pooled": k["pooled"]})',
        'self._pending_keys.append({"global": k["global"], "pooled": k["global"]})',
        "swapped pair",
    ),
    # ---- BYOL
    M(
        "byol_online_targets",
        "methods/byol.py",
        "z1, z2 = (self.project(self.teacher, v) for v in (first, second))",
        "z1, z2 = (self.project(self.student, v) for v in (first, second))",
        "wrong network",
    ),
    M(
        "byol_same_view_pairs",
        "methods/byol.py",
        "loss = byol_loss(p1, z2) + byol_loss(p2, z1)",
        "loss = byol_loss(p1, z1) + byol_loss(p2, z2)",
        "swapped pair",
    ),
    M(
        "byol_momentum_now",
        "schedules.py",
        "return Cosine(base, 1.0, ahead=1)",
        "return Cosine(base, 1.0)",
        "swapped momentum",
    ),
    # ---- PixPro
    M(
        "pixpro_threshold",
        "models/pixel_pairs.py",
        "return (distance < threshold).float()",
        "return (distance < 2 * threshold).float()",
        "wrong constant",
    ),
    M(
        "pixpro_no_sharpening",
        "models/propagation.py",
        "weights = similarity**self.gamma",
        "weights = similarity",
        "dropped term",
    ),
    M(
        "pixpro_online_targets",
        "methods/pixpro.py",
        "target = [self.encode(self.teacher, view) for view in batch.views]",
        "target = [self.encode(self.student, view) for view in batch.views]",
        "wrong network",
    ),
    M(
        "pixpro_pairs_across_images",
        "methods/pixpro.py",
        "pairs = positive_pairs(coords[0], coords[1], grids[0], grids[1], self.cfg.pos_ratio)",
        "pairs = positive_pairs(coords[0], coords[1].roll(1, 0), grids[0], grids[1], "
        "self.cfg.pos_ratio)",
        "swapped pair",
    ),
    # ---- SoCo
    M(
        "soco_own_view_targets",
        "methods/soco.py",
        "pair = box_pair_loss(q_a, z_b, ids_a, ids_b) + box_pair_loss(q_b, z_a, ids_b, ids_a)",
        "pair = box_pair_loss(q_a, z_a, ids_a, ids_a) + box_pair_loss(q_b, z_b, ids_b, ids_b)",
        "swapped pair",
    ),
    M(
        "soco_online_targets",
        "methods/soco.py",
        "z_b, _ = self.box_embeddings(self.teacher, teacher[b], second, sizes[b], False)",
        "z_b, _ = self.box_embeddings(self.student, student[b], second, sizes[b], False)",
        "wrong network",
    ),
    M(
        "soco_no_predictor",
        "methods/soco.py",
        "q_a, none_a = self.box_embeddings(self.student, student[a], first, sizes[a], True)",
        "q_a, none_a = self.box_embeddings(self.student, student[a], first, sizes[a], False)",
        "dropped term",
    ),
    M(
        "soco_one_direction",
        "methods/soco.py",
        "pair = box_pair_loss(q_a, z_b, ids_a, ids_b) + box_pair_loss(q_b, z_a, ids_b, ids_a)",
        "pair = 2 * box_pair_loss(q_a, z_b, ids_a, ids_b)",
        "dropped term",
    ),
    # ---- MCL
    M(
        "mcl_own_branch_targets",
        "methods/mcl.py",
        "loss_q, levels_q = cross_branch_loss(pred_q, sources_q, z_k, weights, temperature)",
        "loss_q, levels_q = cross_branch_loss(pred_q, sources_q, z_q, weights, temperature)",
        "swapped pair",
    ),
    M(
        "mcl_online_targets",
        "methods/mcl.py",
        "z_k = F.normalize(self.embed_views(self.teacher, second[0]).float(), dim=1)",
        "z_k = F.normalize(self.embed_views(self.student, second[0]).float(), dim=1)",
        "wrong network",
    ),
    M(
        "mcl_level_weights_dropped",
        "methods/mcl.py",
        "total = sum(w * loss for w, loss in zip(weights, per_level, strict=False))",
        "total = sum(per_level)",
        "dropped term",
    ),
    M(
        "mcl_wrong_level_map",
        "methods/mcl.py",
        "grid, feature = 2**level, pyramid[len(LEVELS) - 1 - level]",
        "grid, feature = 2**level, pyramid[level]",
        "swapped pair",
    ),
    M(
        "mcl_rank_offset_dropped",
        "methods/mcl.py",
        "mcl_cell_loss(p, every_target, s.reshape(-1) + offset, temperature)",
        "mcl_cell_loss(p, every_target, s.reshape(-1), temperature)",
        "dropped term",
    ),
    M(
        "mcl_shared_predictor",
        "methods/mcl.py",
        "predictions.append(self.predictors[level](embedded))",
        "predictions.append(self.predictors[0](embedded))",
        "swapped pair",
    ),
    # ---- DINO / SelfPatch
    M(
        "dino_student_targets",
        "methods/dino.py",
        "teacher = self.image_logits(self.teacher, views[:2])  # 2 x (B, K)",
        "teacher = self.image_logits(self.student, views[:2])  # 2 x (B, K)",
        "wrong network",
    ),
    M("dino_same_view_pairs", "losses/dino.py", "        if a != b\n", "", "swapped pair"),
    M(
        "dino_frozen_centre",
        "methods/dino.py",
        "self.update_center_(self.center, self._pending_centers, self.cfg.center_momentum)",
        "self._pending_centers.clear()",
        "frozen centre",
    ),
    M(
        "dino_centre_momentum_swapped",
        "methods/dino.py",
        "center.mul_(momentum).add_(batch_mean, alpha=1.0 - momentum)",
        "center.mul_(1.0 - momentum).add_(batch_mean, alpha=momentum)",
        "swapped momentum",
    ),
    M(
        "dino_temperature_fixed",
        "methods/dino.py",
        "temp = state.teacher_temp",
        "temp = self.cfg.teacher_temp",
        "dropped term",
    ),
    M(
        "dino_momentum_constant",
        "methods/dino.py",
        '"teacher_momentum": Cosine(c.momentum, 1.0),',
        '"teacher_momentum": Cosine(c.momentum, c.momentum),',
        "swapped momentum",
    ),
    M(
        "selfpatch_own_token_targets",
        "methods/selfpatch.py",
        "patches.append(teacher.patch_head(targets.reshape(batch, n, dim)).float())",
        "patches.append(teacher.patch_head(teacher.aggregator.norm(tokens)).float())",
        "dropped term",
    ),
    M(
        "selfpatch_frozen_patch_centre",
        "methods/selfpatch.py",
        "self._pending_patch_centers.append(all_patches.mean(dim=0, keepdim=True))",
        "pass",
        "frozen centre",
    ),
    M(
        "selfpatch_patch_term_dropped",
        "methods/selfpatch.py",
        "loss = loss_image + c.patch_loss_weight * loss_patch",
        "loss = loss_image + 0.0 * loss_patch",
        "dropped term",
    ),
    M(
        "selfpatch_image_centre_for_patches",
        "methods/selfpatch.py",
        "dino_loss(s.flatten(0, 1), t.flatten(0, 1), self.patch_center, c.student_temp, temp)",
        "dino_loss(s.flatten(0, 1), t.flatten(0, 1), 0 * self.patch_center, c.student_temp, temp)",
        "frozen centre",
    ),
    # ---- the teacher-student base
    M(
        "base_ema_frozen",
        "methods/base.py",
        "ema_update_(self.teacher, self.student, state.teacher_momentum)",
        "ema_update_(self.teacher, self.student, 1.0)",
        "swapped momentum",
    ),
    M(
        "base_export_always_student",
        "methods/base.py",
        'return self.teacher if (name or self.export_network) == "teacher" else self.student',
        "return self.student",
        "wrong network",
    ),
]

# The tests that cover each file, fastest and most specific first (pytest -x stops at the first
# failure): the independent recomputations, the file's own tests, then the checks that loop
# over every method. The golden record (tests/test_golden.py) would kill nearly every mutation
# on its own, since each changes the training results; --golden adds it, to measure the suite
# as CI runs it.
FIRST = ["tests/test_wiring.py"]
OWN = {
    "losses": ["tests/test_losses.py", "tests/test_dino.py", "tests/test_byol.py",
               "tests/test_soco.py", "tests/test_mcl.py", "tests/test_pixpro.py"],
    "models": ["tests/test_models.py", "tests/test_methods.py", "tests/test_selfpatch.py",
               "tests/test_pixpro.py"],
    "methods/mocov2.py": ["tests/test_methods.py", "tests/test_dist.py"],
    "methods/densecl.py": ["tests/test_methods.py", "tests/test_engine.py"],
    "methods/byol.py": ["tests/test_byol.py"],
    "methods/soco.py": ["tests/test_soco.py"],
    "methods/mcl.py": ["tests/test_mcl.py"],
    "methods/pixpro.py": ["tests/test_pixpro.py"],
    "methods/dino.py": ["tests/test_dino.py", "tests/test_selfpatch.py"],
    "methods/selfpatch.py": ["tests/test_selfpatch.py"],
    "methods/base.py": ["tests/test_methods.py", "tests/test_export.py"],
    "schedules.py": ["tests/test_method_schedules.py", "tests/test_byol.py"],
}  # fmt: skip
EVERY_METHOD = [
    "tests/test_method_schedules.py",
    "tests/test_contract.py",
    "tests/test_loss_falls.py",
    "tests/test_autocast_cpu.py",
    "tests/test_engine_step_every_method.py",
    "tests/test_export_every_method.py",
    "tests/test_resume_every_method.py",
    "tests/test_ddp_every_method.py",
]


def tests_for(path: str, golden: bool) -> list[str]:
    """The test files for a mutated source file, in the order they run."""
    own = OWN.get(path) or OWN[path.split("/")[0]]
    files = [*FIRST, *own, *EVERY_METHOD, *(["tests/test_golden.py"] if golden else [])]
    present = [f for f in dict.fromkeys(files) if (ROOT / f).exists()]
    return present


def run_one(mutation: Mutation, timeout: int, golden: bool) -> tuple[bool, float]:
    """Apply, test, restore. Returns (killed, seconds)."""
    path = SRC / mutation.path
    original = path.read_text()
    if original.count(mutation.old) != 1:
        raise SystemExit(f"{mutation.name}: the text to mutate occurs "
                         f"{original.count(mutation.old)} times in {mutation.path}")  # fmt: skip
    started = time.perf_counter()
    try:
        path.write_text(original.replace(mutation.old, mutation.new))
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                   *tests_for(mutation.path, golden)]  # fmt: skip
        try:
            result = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=timeout)
            killed = result.returncode != 0
        except subprocess.TimeoutExpired:
            killed = True  # a hang is noticed too
    finally:
        path.write_text(original)
    return killed, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="mutation names to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and stop")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per mutation")
    parser.add_argument("--golden", action="store_true", help="also run the golden record")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:38s} {m.kind:16s} {m.path}")
        return 0
    before = {p: p.read_text() for p in SRC.rglob("*.py")}
    survivors = []
    for m in chosen:
        killed, seconds = run_one(m, args.timeout, args.golden)
        print(f"{'killed ' if killed else 'SURVIVED'} {m.name:38s} {m.kind:16s} {seconds:6.1f} s",
              flush=True)  # fmt: skip
        if not killed:
            survivors.append(m.name)
    assert all(p.read_text() == text for p, text in before.items()), "source not restored"
    killed = len(chosen) - len(survivors)
    print(f"mutation score: {killed}/{len(chosen)} killed ({100 * killed / len(chosen):.1f}%)")
    if survivors:
        print("survivors: " + ", ".join(survivors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

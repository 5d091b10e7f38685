"""Every paper-recipe YAML, resolved through the method's defaults, carries the values of the
reference run its header names. The numbers below are written from the reference files (scripts,
configs, argument defaults), not from densessl's defaults, so a default that drifts fails here."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from densessl.config import build_config
from densessl.methods import get_method
from densessl.recipes import RECIPES_DIR

RECIPES = RECIPES_DIR

# LARS eta 1e-3 and momentum 0.9 in all three: byol/configs/byol.py (eta=1e-3, momentum=.9);
# SoCo contrast/lars.py (trust_coef=0.001) with option.py --momentum 0.9; MCL's OpenSelfSup
# LARS default eta=0.001 with momentum=0.9 in configs/selfsup/MCL/MCL.py. Each excludes biases
# and norm parameters from decay and adaptation. Views 224 px in each.
LARS_COMMON = {
    "optim.name": "lars",
    "optim.decay_norm_and_bias": False,
    "optim.lars_eta": 0.001,
    "optim.momentum": 0.9,
    "optim.warmup_epochs": 10.0,
    "batch_norm": "sync",
    "backbone": "resnet50",
    "data.image_size": 224,
}
# google-deepmind/deepmind-research byol/configs/byol.py presets; batch 4096; networks.py widths;
# utils/dataset.py crops area (0.08, 1); float32 throughout (no half precision in byol/).
BYOL = {
    **LARS_COMMON,
    "batch_size": 4096,
    "precision": "fp32",
    "method.crop_scale": [0.08, 1.0],
    "method.dim": 256,
    "method.hidden_dim": 4096,
    "optim.lars_variant": "trust_on_update",
    "optim.schedule": "cosine",
}
# hologerry/SoCo tools/SoCo_FPN_*.sh: 16 GPUs x 128, --base_lr 1.0 --weight_decay 1e-5
# --amp_opt_level O1 --crop 0.5 --contrast_momentum 0.99 --select_k 4 --jitter_prob 0.5
# --jitter_ratio 0.1; cosine to 1e-6 (contrast/lr_scheduler.py).
SOCO = {
    **LARS_COMMON,
    "batch_size": 2048,
    "optim.base_lr": 1.0,
    "optim.weight_decay": 1e-5,
    "optim.min_lr": 1e-6,
    "precision": "fp16",
    "method.momentum": 0.99,
    "method.crop_scale": [0.5, 1.0],
    "method.boxes_per_pair": 4,
    "method.jitter_p": 0.5,
    "method.jitter_ratio": 0.1,
    "method.cutout_scale": [0.1, 0.3],
}
# zdaxie/PixPro tools/pixpro_base_r50_{100,400}ep.sh: 8 GPUs x 128, --base-lr 1.0
# --weight-decay 1e-5 --warmup-epoch 5 --crop 0.08 --aug BYOL --pixpro-p 2
# --pixpro-momentum 0.99 --pixpro-pos-ratio 0.7 --pixpro-transform-layer 1
# --pixpro-ins-loss-weight 0. --amp-opt-level O1; contrast/models/PixPro.py Proj_Head
# 2048-4096-256 and clamp 0 (option.py); contrast/resnet.py zero-starts bn3; cosine to 1e-6.
PIXPRO = {
    **LARS_COMMON,
    "batch_size": 1024,
    "optim.base_lr": 1.0,
    "optim.weight_decay": 1e-5,
    "optim.warmup_epochs": 5.0,
    "optim.min_lr": 1e-6,
    "optim.lars_variant": "trust_on_update",
    "precision": "fp16",
    "method.momentum": 0.99,
    "method.crop_scale": [0.08, 1.0],
    "method.dim": 256,
    "method.hidden_dim": 4096,
    "method.gamma": 2.0,
    "method.pos_ratio": 0.7,
    "method.clamp": 0.0,
    "method.transform_layers": 1,
    "method.instance_weight": 0.0,
    "method.zero_init_residual": True,
}
# facebookresearch/dino main_dino.py argument defaults; DINOHead(hidden_dim=2048,
# bottleneck_dim=256); utils.get_params_groups leaves biases and norms undecayed; 224 / 96 px.
DINO = {
    "backbone": "vit_small_patch16",
    "data.image_size": 224,
    "method.local_crop_size": 96,
    "method.hidden_dim": 2048,
    "method.bottleneck_dim": 256,
    "optim.decay_norm_and_bias": False,
    "optim.name": "adamw",
    "optim.base_lr": 5e-4,
    "optim.min_lr": 1e-6,
    "optim.warmup_epochs": 10.0,
    "optim.weight_decay": 0.04,
    "optim.weight_decay_end": 0.4,
    "optim.clip_grad": 3.0,
    "optim.clip_mode": "per_param",
    "precision": "fp16",
    "method.out_dim": 65536,
    "method.momentum": 0.996,
    "method.student_temp": 0.1,
    "method.warmup_teacher_temp": 0.04,
    "method.freeze_last_layer_epochs": 1.0,
    "method.drop_path_rate": 0.1,
    "method.local_crops": 8,
}
# WXinlong/DenseCL configs/selfsup/densecl/*.py: SGD 0.9, wd 1e-4, cosine, 8 GPUs x 32, fp32;
# no paramwise_options, so weight decay reaches every parameter (openselfsup/apis/train.py).
MOCO = {
    "backbone": "resnet50",
    "data.image_size": 224,
    "optim.decay_norm_and_bias": True,
    "batch_size": 256,
    "optim.name": "sgd",
    "optim.momentum": 0.9,
    "optim.weight_decay": 1e-4,
    "optim.schedule": "cosine",
    "precision": "fp32",
    "method.queue_size": 65536,
    "method.temperature": 0.2,
    "method.momentum": 0.999,
    "method.crop_scale": [0.2, 1.0],  # moco/main_moco.py --aug-plus: RandomResizedCrop(0.2, 1)
    "method.blur_p": 0.5,  # GaussianBlur([.1, 2.]) with p=0.5
    "method.blur_sigma": [0.1, 2.0],
}

REFERENCE_RUNS = {
    "byol_r50_in1k_300ep.yaml": {
        **BYOL,
        "epochs": 300.0,
        "optim.base_lr": 0.3,
        "optim.weight_decay": 1e-6,
        "method.momentum": 0.99,
    },
    "byol_r50_in1k_1000ep.yaml": {
        **BYOL,
        "epochs": 1000.0,
        "optim.base_lr": 0.2,
        "optim.weight_decay": 1.5e-6,
        "method.momentum": 0.996,
    },
    "soco_r50_in1k_100ep.yaml": {
        **SOCO,
        "epochs": 100.0,
        "method.cutout_p": 0.5,
        "method.star": False,
    },
    "soco_r50_in1k_400ep.yaml": {
        **SOCO,
        "epochs": 400.0,
        "method.cutout_p": 0.0,
        "method.star": False,
    },
    "soco_star_r50_in1k_400ep.yaml": {**SOCO, "epochs": 400.0, "method.star": True},
    # GuoQiushan/MCL configs/selfsup/MCL/MCL.py: 32 x 128, LARS lr 16 = 1.0 x 4096/256, wd 1e-5,
    # CosineAnnealingInterval min_lr 1e-4, linear warm-up ratio 1e-4, grad_clip 500, use_fp16.
    "mcl_r50_in1k_100ep.yaml": {
        **LARS_COMMON,
        "batch_size": 4096,
        "epochs": 100.0,
        "optim.base_lr": 1.0,
        "optim.weight_decay": 1e-5,
        "optim.min_lr": 1e-4,
        "optim.clip_grad": 500.0,
        "optim.lars_variant": "lr_in_buffer",
        "optim.schedule": "cosine_times_warmup",
        "optim.warmup_ratio": 1e-4,
        "precision": "fp16",
        "method.momentum": 0.99,
        "method.temperature": 1.0,
        "method.crop_scale": [0.2, 1.0],
        "method.level_weights": [0.5, 0.25, 0.125, 0.125],
    },
    # README "vanilla": default arguments on 8 GPUs x 64.
    "dino_vits16_in1k_100ep.yaml": {
        **DINO,
        "batch_size": 512,
        "epochs": 100.0,
        "method.teacher_temp": 0.04,
        "method.warmup_teacher_temp_epochs": 0.0,
        "method.norm_last_layer": True,
        "method.global_crop_scale": [0.4, 1.0],
        "method.local_crop_scale": [0.05, 0.4],
    },
    # README "boosted": 16 GPUs x 64, --epochs 300 --teacher_temp 0.07
    # --warmup_teacher_temp_epochs 30 --norm_last_layer false.
    "dino_vits16_in1k_300ep.yaml": {
        **DINO,
        "batch_size": 1024,
        "epochs": 300.0,
        "method.teacher_temp": 0.07,
        "method.warmup_teacher_temp_epochs": 30.0,
        "method.norm_last_layer": False,
    },
    # alinlab/SelfPatch README command (8 x 128) with main_selfpatch.py defaults.
    "selfpatch_vits16_in1k_300ep.yaml": {
        **DINO,
        "batch_size": 1024,
        "epochs": 300.0,
        "method.teacher_temp": 0.04,
        "method.warmup_teacher_temp_epochs": 0.0,
        "method.norm_last_layer": True,
        "method.global_crop_scale": [0.25, 1.0],
        "method.local_crop_scale": [0.05, 0.25],
        "method.patch_out_dim": 4096,
        "method.patch_loss_weight": 0.1,
        "method.neighbours": 4,  # --k_num 4: top 4 of the 8 neighbours in a 3 x 3 window
    },
    "pixpro_r50_in1k_100ep.yaml": {**PIXPRO, "epochs": 100.0},
    "pixpro_r50_in1k_400ep.yaml": {**PIXPRO, "epochs": 400.0},
    "mocov2_r50_in1k_200ep.yaml": {**MOCO, "epochs": 200.0, "optim.base_lr": 0.03},
    "densecl_r50_in1k_200ep.yaml": {
        **MOCO,
        "epochs": 200.0,
        "optim.base_lr": 0.03,
        "method.dense_weight": 0.5,
    },
    "densecl_r50_coco_800ep.yaml": {
        **MOCO,
        "epochs": 800.0,
        "optim.base_lr": 0.3,
        "method.dense_weight": 0.5,
    },
}


def test_every_paper_recipe_is_pinned_here():
    papers = {p.name for p in RECIPES.glob("*_*ep.yaml")}
    assert papers == set(REFERENCE_RUNS)


@pytest.mark.parametrize("name", sorted(REFERENCE_RUNS))
def test_recipe_matches_its_reference_run(name):
    path = RECIPES / name
    method = OmegaConf.load(path).method.name
    cfg = build_config(get_method(method), config_file=path)
    wrong = {}
    for key, expected in REFERENCE_RUNS[name].items():
        value = OmegaConf.select(cfg, key)
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        value = list(value) if isinstance(value, tuple) else value
        if value != expected:
            wrong[key] = (value, expected)
    assert not wrong, f"{name}: (resolved, reference) {wrong}"


def test_moco_family_views_crop_as_the_reference():
    """WXinlong/DenseCL configs (moco/r50_v2.py, densecl/*.py): RandomResizedCrop(224,
    scale=(0.2, 1.)) for both views of MoCo-v2 and DenseCL; the crop is not a setting."""
    from densessl.data.views import moco_v2_views

    views = moco_v2_views(224)
    assert len(views) == 2
    assert all((v.size, tuple(v.scale)) == (224, (0.2, 1.0)) for v in views)

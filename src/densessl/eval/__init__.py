"""Downstream evaluation of pretrained backbones (a backbone in, scores out; never a method).

Modules: :mod:`.weights` (load a backbone), :mod:`.segmentation` (labelled datasets),
:mod:`.features` (cached frozen dense features), :mod:`.linear_seg` (linear probe),
:mod:`.knn_seg` (dense k-NN retrieval), :mod:`.metrics`, :mod:`.detection` (Faster / Mask R-CNN,
COCO AP), :mod:`.scene_export`. Each probe takes a backbone, data and one options object built
with :func:`densessl.config.build_options`.
"""

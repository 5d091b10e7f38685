"""Downstream evaluation of pretrained backbones (a backbone in, scores out; never a method).

* :mod:`densessl.eval.weights`: load a backbone from a run, an exported file, or random init.
* :mod:`densessl.eval.segmentation`: labelled datasets, one file per layout (``SEG_LAYOUTS``).
* :mod:`densessl.eval.features`: frozen dense features of a labelled set, cached.
* :mod:`densessl.eval.linear_seg`: per-pixel linear probe (BN + 1x1 conv), mIoU.
* :mod:`densessl.eval.knn_seg`: Hummingbird-style dense nearest-neighbour retrieval, mIoU.
* :mod:`densessl.eval.metrics`: confusion matrices and segmentation scores.
* :mod:`densessl.eval.detection`: Faster / Mask R-CNN fine-tune on COCO-format data, COCO AP.
* :mod:`densessl.eval.scene_export`: the held-out split plan of the written built-in scenes.

Each probe takes the backbone, the data and one options object (``LinearSegOptions``,
``KnnSegOptions``, ``DetectOptions``), built by the CLI with :func:`densessl.config.build_options`.
"""

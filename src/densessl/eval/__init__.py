"""Downstream evaluation of pretrained backbones.

* :mod:`densessl.eval.weights`: load a backbone from a run, an exported file, or random init.
* :mod:`densessl.eval.features`: frozen dense features of a labelled set, cached.
* :mod:`densessl.eval.linear_seg`: per-pixel linear probe (BN + 1x1 conv), mIoU.
* :mod:`densessl.eval.knn_seg`: Hummingbird-style dense nearest-neighbour retrieval, mIoU.
* :mod:`densessl.eval.metrics`: confusion matrices and segmentation scores.
"""

"""Downstream evaluation of pretrained backbones (a backbone in, scores out; never a method).

Each probe takes a backbone, data and one options object built with
:func:`densessl.config.build_options`.
"""

"""densessl: dense self-supervised pretraining (DenseCL, SoCo, MCL, SelfPatch) in one engine."""

__version__ = "0.1.0"

"""The ImageNet mean and standard deviation of RGB in [0, 1], per channel (R, G, B).

Every pretrained backbone the project loads or writes expects inputs normalised with these, so
the pretraining augmentation, the exported model cards, evaluation and the visualisations all
read them from here.
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

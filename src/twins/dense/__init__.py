"""Dense prediction: semantic segmentation (and detection) built on the Twins backbones."""

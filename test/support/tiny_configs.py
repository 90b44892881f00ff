"""Tiny model configs shared by the unit tests: fast on a CPU, and enough for checks that hold
for any weights."""

# PointGMM: two levels under the roots, a narrow encoder (tests of the model and of its stage).
POINTGMM_TINY = dict(latent=16, hidden=32, depth=2, encoder_widths=(16, 32, 64), encoder_fc=(32,))

# DeepGMR: four components, a narrow backbone (the training command's smoke and DDP tests).
DEEPGMR_TINY = dict(components=4, feature_dim=32, encoder_widths=[16, 32], head_widths=[32, 16],
                    use_rri=True, rri_neighbours=8)

"""The potential: UMA architecture, checkpoints, inference settings, predictor and
ASE calculator. Knows nothing about sockets."""

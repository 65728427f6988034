"""The synthetic demo and test data: VoxCeleb-shaped corpus, MUSAN/RIR-shaped folders, random-weight checkpoints."""

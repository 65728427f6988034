"""Data preparation and checks: training lists (VoxCeleb lists, Kaldi data folders), the data check, MUSAN
splitting, RIR indexing, VoxCeleb folder trees and m4a conversion. Command lines are in ``tools/``."""

"""Foundation of the toolkit: configuration, errors, plug-in lookup, logging, device, audio and file I/O.

Imports nothing else of the project (see README, "Layout").
"""

"""Comparing arrays, images, folders and reference dumps, like h5diff."""

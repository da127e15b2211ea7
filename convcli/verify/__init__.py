"""Comparing arrays, images, folders and reference dumps, like h5diff.

This package imports nothing: the command line reads :data:`EXPECTED_LAYOUTS` from here when
it starts, and loads the comparison modules only when ``convcli verify`` runs.
"""

#: Layouts the expected side may be in; the actual side is always channels-last.
EXPECTED_LAYOUTS = ("NHWC", "NCHW")

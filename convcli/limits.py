"""Every size default of the spec's Safety section, in one place.

Each limit is checked before the memory it guards is allocated: image pixels from the header,
array bytes from the .npy header, kernel weights from the file's size and shape. The command
line exposes the first two as ``--max-pixels`` and ``--max-bytes``; the library functions take
them as keyword arguments with these defaults.
"""

from __future__ import annotations

from typing import Final

#: Largest array, output or scratch block, in bytes (``--max-bytes``).
DEFAULT_MAX_BYTES: Final = 4 * 1024**3
#: Largest image read by default, in pixels: Pillow's own decompression-bomb limit
#: (``--max-pixels``).
DEFAULT_MAX_PIXELS: Final = 89_478_485
#: Most weights a kernel may have.
MAX_KERNEL_WEIGHTS: Final = 1_000_000
#: Largest kernel file, in bytes.
MAX_KERNEL_FILE_BYTES: Final = 16 * 1024 * 1024
#: Deepest nesting of brackets a JSON kernel file may have (Python's parser recurses).
MAX_JSON_DEPTH: Final = 64
#: Most digits of an integer in a JSON kernel file (CPython's int() is quadratic in them).
MAX_INT_DIGITS: Final = 400
#: Longest .npy header read (numpy's own reader refuses over 10,000 bytes, after reading).
MAX_NPY_HEADER_BYTES: Final = 64 * 1024
#: Most members an ``.npz`` may hold.
MAX_NPZ_MEMBERS: Final = 64
#: Largest accepted ratio of declared to compressed size of an ``.npz`` member.
MAX_COMPRESSION_RATIO: Final = 1000
#: A 4-D ``.npy`` larger than this is processed this many input bytes at a time along N.
CHUNK_BYTES = 64 * 1024**2
#: Bytes read from standard input at a time: nothing is allocated for data not yet sent.
STDIN_PIECE_BYTES: Final = 1024**2
#: TIFF and .npy inputs larger than this (decoded) whose output is TIFF or .npy are streamed
#: tile by tile (:mod:`convcli.batch.stream`); smaller ones are faster decoded whole.
STREAM_MIN_BYTES: Final = 64 * 1024**2
#: Side of the output tiles of a streamed image (``--tile``), and of the tiled TIFF written.
DEFAULT_TILE: Final = 512
#: Decoded TIFF strips or tiles a streamed read keeps for the halos of neighbouring tiles.
TILE_CACHE_BYTES: Final = 192 * 1024**2

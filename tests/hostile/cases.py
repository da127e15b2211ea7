"""The hostile-input cases: what to run on which corpus file, and what must come out.

Every case is run by ``tests/test_hostile.py``, which checks, beyond the exit code and the
message fragments given here: that stderr holds exactly one ``Error:`` line naming the culprit
(for click's own usage errors the ``Usage:``/``Try`` lines come first, as click prints them),
that stdout is empty and no traceback appears, that the output folder holds nothing new (no
output, no ``.convcli-tmp-*`` file), that no input changed, that no pickle payload ran, and
that the case took under a few seconds.

Arguments are templates: ``{c}`` is the corpus folder, ``{large}`` the folder of big files
written at test time (see ``make_corpus.write_large``), ``{out}`` a fresh, empty output folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

IMAGE_FORMATS = ("png", "jpg", "gif", "tif", "bmp", "webp")
#: click's own usage errors print "Usage:" and "Try ..." lines before their "Error:" line.
USAGE = "usage"


@dataclass(frozen=True)
class Case:
    """One hostile invocation and its expected outcome."""

    id: str
    args: tuple[str, ...]
    fragments: tuple[str, ...]
    #: The file (or preset, or option) the one Error: line must name; "" for none.
    culprit: str
    exit_code: int = 2
    #: A corpus file fed to stdin instead of a path.
    stdin: str | None = None
    #: "usage" for click's own parameter errors (several stderr lines, one Error: line).
    kind: str = "error"
    #: Files to create in {out} before the run: relative path -> corpus file name to copy, or
    #: None for a small text file. They must be unchanged afterwards.
    setup: dict[str, str | None] = field(default_factory=dict)
    #: Also run it through a real ``python -m convcli`` subprocess.
    subprocess: bool = False

    @property
    def command(self) -> str:
        return self.args[0]


def conv(name: str, *extra: str, output: str = "{out}/result.png") -> tuple[str, ...]:
    """``conv {c}/name -k sharpen -o output extra...`` (a name starting with { is kept)."""
    source = name if name.startswith("{") else f"{{c}}/{name}"
    return ("conv", source, "-k", "sharpen", "-o", output, *extra)


def kernel(spec: str, *extra: str) -> tuple[str, ...]:
    """``conv {c}/valid_rgb.png -k spec -o {out}/result.png extra...``."""
    return ("conv", "{c}/valid_rgb.png", "-k", spec, "-o", "{out}/result.png", *extra)


CASES: list[Case] = []


def case(
    id: str, args: tuple[str, ...], *fragments: str, culprit: str | None = None, **options: object
) -> None:
    if culprit is None:
        files = [arg for arg in args if arg.startswith(("{c}/", "{large}/"))]
        culprit = files[0].split("/", 1)[1] if files else ""
    CASES.append(Case(id, args, fragments, culprit, **options))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- decompression bombs

case(
    "png-ihdr-30000",
    conv("bomb_png_30000x30000.png"),
    "30000x30000",
    "--max-pixels",
    subprocess=True,
)
case("jpeg-sof-65000", conv("bomb_jpeg_65000x65000.jpg"), "65000x65000", "--max-pixels")
# The GIF is a palette image: planning its decode must not load the palette (which decodes).
case("gif-screen-65535", conv("bomb_gif_65535x65535.gif"), "65535x65535", "--max-pixels")
case("bmp-100000", conv("bomb_bmp_100000x100000.bmp"), "100000x100000", "--max-pixels")
case("webp-vp8l-16384", conv("bomb_webp_16384x16384.webp"), "16384x16384", "--max-pixels")
case("tiff-header-20000", conv("bomb_tiff_20000x20000.tif"), "20000x20000", "--max-pixels")
case(
    "tiff-zlib-400KB",
    conv("{large}/bomb_tiff_zlib_20000x20000.tif"),
    "20000x20000",
    "--max-pixels",
    subprocess=True,
)
case("tiff-one-4GiB-tile", conv("bomb_tiff_tile_65536.tif"), "TIFF tile", "65536x65536")
case(
    "tiff-65535-samples",
    conv("bomb_tiff_65535_samples.tif", output="{out}/result.npy"),
    "65535 uint8 samples",
    "--max-bytes",
)
case(
    "pool-png-bomb",
    ("pool", "{c}/bomb_png_30000x30000.png", "--size", "2", "-o", "{out}/result.png"),
    "30000x30000",
)
case(
    "stdin-png-bomb",
    ("conv", "-", "-k", "sharpen", "-o", "-", "--format", "png"),
    "30000x30000",
    culprit="<stdin>",
    stdin="bomb_png_30000x30000.png",
)
case("max-pixels-10", conv("valid_rgb.png", "--max-pixels", "10"), "64 pixels", "--max-pixels")

# --------------------------------------------------------------------------- broken images

case("png-2-bytes", conv("two_bytes.png"), "not a supported image")
case("bmp-just-BM", conv("just_bm.bmp"), "cannot read image")
case("png-named-BM", conv("just_bm_named.png"), "cannot read image")
case("png-signature-only", conv("png_signature_only.png"), "cannot read image")
case("png-bad-crc", conv("png_bad_crc.png"), "cannot read image")
case("png-zero-width", conv("png_zero_width.png"), "cannot read image")
case("png-bad-zlib", conv("png_bad_zlib.png"), "cannot read image")
case("tiff-ifd-loop", conv("tiff_ifd_loop.tif"), "cannot read image")
# tifffile logs a warning for this one: it must not reach stderr.
case("tiff-bad-offset", conv("tiff_bad_offset.tif"), "no readable page", subprocess=True)
case("tiff-strip-past-end", conv("tiff_strip_past_end.tif"), "cannot read image")
case("jpeg-zero-height", conv("jpeg_sof_zero_height.jpg"), "cannot read image")
case("npy-named-png", conv("npy_named.png"), "is a NumPy .npy file, not an image")
for _fmt in IMAGE_FORMATS:
    case(
        f"truncated-{_fmt}",
        conv(f"truncated.{_fmt}"),
        "cannot read image",
        subprocess=_fmt == "tif",
    )
    case(f"random-bytes-{_fmt}", conv(f"random_bytes.{_fmt}"), "not a supported image")
    case(f"empty-{_fmt}", conv(f"empty.{_fmt}"), "empty file")
for _name in ("png", "jpeg", "gif", "tiff", "webp"):
    _ext = {"jpeg": "jpg", "tiff": "tif"}.get(_name, _name)
    case(f"{_name}-magic-garbage", conv(f"{_name}_magic_then_garbage.{_ext}"), "cannot read image")
case(
    "stdin-random",
    ("conv", "-", "-k", "sharpen", "-o", "-", "--format", "png"),
    "unrecognized data",
    culprit="<stdin>",
    stdin="random_bytes.png",
)
case(
    "stdin-empty",
    ("conv", "-", "-k", "sharpen", "-o", "-", "--format", "png"),
    "no data",
    culprit="<stdin>",
    stdin="empty.png",
)

# --------------------------------------------------------------------------- .npy


def npy(name: str, *extra: str) -> tuple[str, ...]:
    return conv(name, *extra, output="{out}/result.npy")


case("npy-claims-75GiB", npy("npy_claims_75GiB.npy"), "80,530,636,800 bytes", "--max-bytes")
case(
    "npy-claims-75GiB-over-64-bytes",
    npy("npy_claims_75GiB.npy", "--max-bytes", "100G"),
    "declares 80,530,636,800 bytes",
    "holds 64",
)
case("npy-pickle", npy("npy_pickle_payload.npy"), "refusing to unpickle", subprocess=True)
case(
    "stdin-npy-pickle",
    ("conv", "-", "-k", "sharpen", "-o", "-", "--format", "npy"),
    "refusing to unpickle",
    culprit="<stdin>",
    stdin="npy_pickle_payload.npy",
)
case("npy-header-code", npy("npy_header_code.npy"), "not a valid .npy file")
case("npy-complex", npy("npy_complex.npy"), "complex")
case("npy-strings", npy("npy_strings.npy"), "string")
case("npy-bool", npy("npy_bool.npy"), "bool")
case("npy-datetime", npy("npy_datetime.npy"), "datetime64")
case("npy-structured", npy("npy_structured.npy"), "structured dtype")
case("npy-5d", npy("npy_5d.npy"), "5-D")
case("npy-1d", npy("npy_1d.npy"), "1-D")
case("npy-0d", npy("npy_0d.npy"), "0-D")
case("npy-empty-batch", npy("npy_empty_batch.npy"), "empty dimension")
case("npy-negative-shape", npy("npy_negative_shape.npy"), "invalid shape")
case("npy-version-9", npy("npy_version_9.npy"), "format version")
case("npy-header-2GiB", npy("npy_header_len_2GiB.npy"), "not a valid .npy file")
case("npy-truncated", npy("npy_truncated.npy"), "the file holds 156")
case("npy-magic-only", npy("npy_magic_only.npy"), "not a valid .npy file")
case("npy-empty", npy("empty.npy"), "not a valid .npy file")
case("npy-max-bytes-1K", npy("valid_x.npy", "--max-bytes", "1K"), "1,536 bytes", "--max-bytes")

# --------------------------------------------------------------------------- .npz


def npz(name: str, *extra: str) -> tuple[str, ...]:
    return conv(name, *extra, output="{out}/result.npz")


case("npz-65-members", npz("npz_65_members.npz"), "65 members", "limit of 64")
case("npz-text-member", npz("npz_text_member.npz"), "'readme.txt' is not a .npy array")
case("npz-ratio-bomb", npz("npz_ratio_bomb.npz"), "ratio over 1000")
case("npz-declares-4GiB", npz("npz_declares_4GiB.npz", "--max-bytes", "100G"), "ratio over 1000")
case("npz-member-dotdot", npz("npz_dotdot_member.npz"), "'../../evil.npy'", "'..'")
case("npz-member-absolute", npz("npz_absolute_member.npz"), "'/tmp/evil.npy'", "absolute")
case("npz-member-control-chars", npz("npz_control_chars_member.npz"), "control characters")
case("npz-member-twice", npz("npz_duplicate_member.npz"), "'a.npy' appears more than once")
case("npz-pickle-member", npz("npz_pickle_member.npz"), "refusing to unpickle")
case("npz-encrypted", npz("npz_encrypted.npz"), "encrypted")
case("npz-deflate64", npz("npz_deflate64.npz"), "compression method")
case("npz-bad-crc", npz("npz_bad_crc.npz"), "Bad CRC-32")
case("npz-truncated", npz("npz_truncated.npz"), "not a valid .npz file")
case("npz-no-members", npz("npz_no_members.npz"), "holds no arrays")
case("npz-zip-garbage", npz("npz_zip_garbage.npz"), "not a valid .npz file")
case("npz-member-is-zip", npz("npz_member_is_zip.npz"), "not a valid .npy file")
case("npz-member-75GiB", npz("npz_member_75GiB.npz"), "80,530,636,800 bytes")
case("npz-empty", npz("empty.npz"), "not a valid .npz file")
case(
    "stdin-npz-dotdot",
    ("pool", "-", "--size", "2", "-o", "-", "--format", "npz"),
    "'../../evil.npy'",
    culprit="<stdin>",
    stdin="npz_dotdot_member.npz",
)

# --------------------------------------------------------------------------- numbers and flags

case(
    "nan-to-uint8-png",
    conv("npy_nan_inf.npy", "--out-dtype", "uint8"),
    "18 non-finite values",
    subprocess=True,
)
case(
    "nan-normalize",
    conv("npy_nan_inf.npy", "--range", "normalize", output="{out}/r.tif"),
    "non-finite values",
)
case("float-to-png", conv("npy_nan_inf.npy"), "PNG cannot hold float32")
case("8-channels-to-png", conv("npy_8_channels.npy", "--out-dtype", "uint8"), "8 channels")
case(
    "padding-100000",
    conv("valid_rgb.png", "--padding", "100000"),
    "200006x200006",
    "over the limit",
)
case("padding-1e27", conv("valid_rgb.png", "--padding", "1" + "0" * 27), "over the limit")
case(
    "dilation-empties-output",
    conv("valid_rgb.png", "--padding", "valid", "--dilation", "100"),
    "output would be empty",
)
# The engine sizes its padded scratch only after allocating: today numpy refuses the shape
# ("cannot compute"); once the engine checks it, a LimitError. Either way: exit 2, the file named.
case("dilation-1e27-same", conv("valid_rgb.png", "--dilation", "1" + "0" * 27))
case("groups-2-of-3", conv("valid_rgb.png", "--groups", "2"), "groups=2")
case("max-bytes-100", conv("valid_rgb.png", "--max-bytes", "100"), "192 bytes", "--max-bytes 100")
case("stride-0", conv("valid_rgb.png", "--stride", "0"), "--stride", culprit="--stride", kind=USAGE)
case(
    "padding-negative",
    conv("valid_rgb.png", "--padding", "-1"),
    "negative",
    culprit="--padding",
    kind=USAGE,
)
case(
    "dilation-0",
    conv("valid_rgb.png", "--dilation", "0"),
    "positive",
    culprit="--dilation",
    kind=USAGE,
)
case(
    "max-bytes-0",
    conv("valid_rgb.png", "--max-bytes", "0"),
    "at least 1 byte",
    culprit="--max-bytes",
    kind=USAGE,
)
case(
    "max-bytes-1e400",
    conv("valid_rgb.png", "--max-bytes", "1e400"),
    "not a finite size",
    culprit="--max-bytes",
    kind=USAGE,
)
case(
    "max-bytes-nan",
    conv("valid_rgb.png", "--max-bytes", "nan"),
    "not a finite size",
    culprit="--max-bytes",
    kind=USAGE,
)
case(
    "max-pixels-0",
    conv("valid_rgb.png", "--max-pixels", "0"),
    "--max-pixels",
    culprit="--max-pixels",
    kind=USAGE,
)
case(
    "quality-0",
    conv("valid_rgb.png", "--quality", "0"),
    "--quality",
    culprit="--quality",
    kind=USAGE,
)


def pool(*extra: str, source: str = "valid_rgb.png") -> tuple[str, ...]:
    return ("pool", f"{{c}}/{source}", "-o", "{out}/result.png", *extra)


case("pool-size-0", pool("--size", "0"), "--size", culprit="--size", kind=USAGE)
case(
    "pool-stride-0",
    pool("--size", "2", "--stride", "0"),
    "--stride",
    culprit="--stride",
    kind=USAGE,
)
case("pool-padding-over-half", pool("--size", "2", "--padding", "2"), "at most size // 2")
case("pool-window-100", pool("--size", "100"), "output would be empty")
case("pool-window-1e21", pool("--size", "1" + "0" * 21), "output would be empty")
case(
    "pool-stride-1e21",
    pool("--size", "3", "--padding", "1", "--stride", "1" + "0" * 21),
    "over the limit",
)
case(
    "pool-avg-dilation",
    pool("--size", "2", "--op", "avg", "--dilation", "2"),
    "--dilation applies to max pooling only",
)
case("pool-5d", ("pool", "{c}/npy_5d.npy", "--size", "2", "-o", "{out}/result.npy"), "5-D")
case(
    "pool-complex",
    ("pool", "{c}/npy_complex.npy", "--size", "2", "-o", "{out}/result.npy"),
    "complex",
)
case(
    "pool-nan-to-uint8",
    (
        "pool",
        "{c}/npy_nan_inf.npy",
        "--size",
        "2",
        "--out-dtype",
        "uint8",
        "-o",
        "{out}/result.png",
    ),
    "non-finite values",
)

# --------------------------------------------------------------------------- outputs

case(
    "output-dir-is-a-file",
    ("conv", "{out}/in", "-k", "sharpen", "-o", "{out}/afile"),
    "to be a folder, not a file",
    culprit="afile",
    setup={"afile": None, "in/valid_rgb.png": "valid_rgb.png"},
)
case(
    "output-under-a-file",
    conv("valid_rgb.png", output="{out}/afile/result.png"),
    "is a file, not a folder",
    culprit="afile/result.png",
    setup={"afile": None},
)
case(
    "output-unknown-extension",
    conv("valid_rgb.png", output="{out}/result.xyz"),
    "cannot tell the output format",
    culprit="result.xyz",
)
case(
    "output-is-the-input",
    ("conv", "{out}/x.npy", "-k", "sharpen", "-o", "{out}/x.npy"),
    "refusing to overwrite an input",
    culprit="x.npy",
    setup={"x.npy": "valid_x.npy"},
)
case(
    "output-exists",
    conv("valid_rgb.png", output="{out}/result.png"),
    "output exists",
    culprit="result.png",
    setup={"result.png": None},
)
case(
    "stdin-to-a-folder",
    ("conv", "-", "-k", "sharpen", "-o", "{out}"),
    "-o is a folder",
    culprit="",
    stdin="valid_rgb.png",
)
case(
    "json-and-stdout",
    conv("valid_rgb.png", "--json", output="-"),
    "--json",
    culprit="--json",
    kind=USAGE,
)

# --------------------------------------------------------------------------- kernels

for _file, _fragment in {
    "k_nan.json": "weights[0][1]: NaN is not a finite number",
    "k_infinity.json": "weights[0][1]: Infinity is not a finite number",
    "k_minus_infinity.json": "weights[1][0]: -Infinity is not a finite number",
    "k_1e400.json": "weights[1][1]: 1e400 overflows float64",
    "k_5000_digits.json": "weights[1][1]: a 5000-digit integer",
    "k_duplicate_keys.json": 'duplicate key "weights"',
    "k_ragged.json": "weights[1]: row has 2 numbers, expected 3",
    "k_empty_weights.json": "weights: empty",
    "k_empty_row.json": "weights[0]: empty",
    "k_string_weight.json": 'weights[0][1]: expected a number, got "2"',
    "k_bool_weight.json": "weights[0][1]: expected a number, got true",
    "k_null_weight.json": "weights[0][1]: expected a number, got null",
    "k_object_weight.json": "weights[0][1]: expected a number, got an object",
    "k_unknown_key.json": 'unknown key "strides" (did you mean "stride"?',
    "k_control_chars_key.json": 'unknown key "a\\nb\\u001b[31m"',
    "k_surrogate_value.json": "pad_mode: expected one of",
    "k_bias_length.json": "bias: has 3 numbers, expected 2",
    "k_1d.json": "weights: 1-D",
    "k_5d.json": "weights: 5-D",
    "k_scale_overflow.json": "scale: weights overflow float64",
    "k_normalize_zero_sum.json": "normalize: weights sum to 0",
    "k_stride_zero.json": "stride: expected an integer >= 1, got 0",
    "k_padding_negative.json": "padding[0]: expected an integer >= 0, got -1",
    "k_groups_zero.json": "groups: expected an integer >= 1, got 0",
    "k_layout_unknown.json": 'layout: expected one of OHWI, OIHW, HWIO, got "XYZW"',
    "k_top_level_string.json": "expected a JSON object or a nested list",
    "k_trailing_garbage.json": "invalid JSON at line 1 column 20",
    "k_missing_weights.json": 'missing the required key "weights"',
    "k_deep_1000.json": "nesting deeper than 64 levels",
    "k_padding_huge.json": "over the limit",
    "empty.json": "file is empty",
    "k_whitespace.json": "file is empty",
    "k_bom.json": "byte order mark",
    "k_latin1.json": "not UTF-8 text (byte 0xe9 at offset 31)",
    "k_utf16.json": "not UTF-8 text",
    "k_pickle.npy": "convcli never unpickles",
    "k_complex.npy": "complex64 is not a real number type",
    "k_bool.npy": "bool is not a real number type",
    "k_5d.npy": "got shape (1, 1, 1, 3, 3)",
    "k_claims_75GiB.npy": "got shape (10066329600,)",
    "k_nan.npy": "NaN or infinity",
    "k_truncated.npy": "not a valid .npy file",
}.items():
    _culprit = "valid_rgb.png" if _file == "k_padding_huge.json" else _file
    case(
        f"kernel-{_file}",
        kernel(f"{{c}}/{_file}"),
        _fragment,
        culprit=_culprit,
        subprocess=_file == "k_control_chars_key.json",
    )
case("kernel-dilation-1e30", kernel("{c}/k_dilation_huge.json"), culprit="valid_rgb.png")
case(
    "kernel-deep-100000",
    kernel("{large}/k_deep_100000.json"),
    "nesting deeper than 64",
    culprit="k_deep_100000.json",
)
case(
    "kernel-1001000-weights",
    kernel("{large}/k_1001000_weights.json"),
    "1,001,000 weights, over the limit 1,000,000",
    culprit="k_1001000_weights.json",
)
case(
    "kernel-17MiB",
    kernel("{large}/k_17MiB.json"),
    "over the limit 16,777,216",
    culprit="k_17MiB.json",
)
case("kernel-is-a-folder", kernel("{out}"), "is a folder", culprit="")
for _spec, _fragment in {
    "nosuch": "no such kernel file or preset",
    "gaussian:size=100000": "size must be an odd integer from 1 to 999",
    "gaussian:sigma=nan": "sigma must be a finite number",
    "gaussian:sigma=-1": "sigma must be > 0",
    "box:size=0": "size must be an integer from 1 to 999",
    "gaussian:foo=1": "unknown parameter 'foo'",
    "gaussian:size": "expected key=value",
    "motion-blur:angle=inf": "angle must be a finite number",
    "gaussian:size=1e400": "size must be an integer",
    "gaussian:size=7,size=9": "parameter 'size' given twice",
    "sharpen:amount=1e308": "amount must be at most",
    "unsharp:amount=1e308": "amount must be at most",
}.items():
    case(f"preset-{_spec}", kernel(_spec), _fragment, culprit=_spec.partition(":")[0])
case("kernels-nosuch", ("kernels", "nosuch"), "no such preset", culprit="nosuch")
case("kernels-size-0", ("kernels", "gaussian:size=0"), "size must be", culprit="gaussian")
case("kernels-control-chars", ("kernels", "a\nb\x1b[31m"), "no such preset", culprit="a\\nb\\x1b")

# --------------------------------------------------------------------------- verify


def verify(*args: str) -> tuple[str, ...]:
    return ("verify", *args)


case(
    "verify-truncated-actual",
    verify("{c}/truncated.png", "{c}/valid_rgb.png"),
    "cannot read image",
    subprocess=True,
)
case(
    "verify-truncated-expected",
    verify("{c}/valid_rgb.png", "{c}/truncated.png"),
    "cannot read image",
    culprit="truncated.png",
)
case(
    "verify-pickle", verify("{c}/npy_pickle_payload.npy", "{c}/valid_x.npy"), "refusing to unpickle"
)
case(
    "verify-75GiB",
    verify("{c}/valid_x.npy", "{c}/npy_claims_75GiB.npy"),
    "80,530,636,800",
    culprit="npy_claims_75GiB.npy",
)
case("verify-png-bomb", verify("{c}/bomb_png_30000x30000.png", "{c}/valid_rgb.png"), "--max-pixels")
case(
    "verify-tiff-samples-bomb",
    verify("{c}/bomb_tiff_65535_samples.tif", "{c}/valid_rgb.tif"),
    "--max-bytes",
)
case("verify-npz-65-members", verify("{c}/npz_65_members.npz", "{c}/valid_x.npz"), "65 members")
case(
    "verify-npz-dotdot",
    verify("{c}/npz_dotdot_member.npz", "{c}/npz_dotdot_member.npz"),
    "'../../evil.npy'",
)
case(
    "verify-structured",
    verify("{c}/npy_structured.npy", "{c}/npy_structured.npy"),
    "structured dtype",
)
case("verify-kernel-file", verify("{c}/k_nan.json", "{c}/k_nan.json"), "unsupported file type")
case(
    "verify-max-bytes-10",
    verify("{c}/valid_x.npy", "{c}/valid_x.npy", "--max-bytes", "10"),
    "over --max-bytes 10",
)
case(
    "verify-folder-with-corrupt-file",
    verify("{out}/a", "{out}/b"),
    "cannot read image",
    culprit="truncated.png",
    setup={
        "a/valid_rgb.png": "valid_rgb.png",
        "a/truncated.png": "truncated.png",
        "b/valid_rgb.png": "valid_rgb.png",
        "b/truncated.png": "truncated.png",
    },
)
# Differences (exit 1) and an unwritable --diff-image: trouble wins, exit 2.
case(
    "verify-diff-image-under-a-file",
    verify("{c}/valid_x.npy", "{c}/valid_x_other.npy", "--diff-image", "{out}/afile/d.png"),
    "is a file, not a folder",
    culprit="afile/d.png",
    setup={"afile": None},
)
case(
    "verify-rtol-nan",
    verify("{c}/valid_x.npy", "{c}/valid_x.npy", "--rtol", "nan"),
    "finite",
    culprit="--rtol",
    kind=USAGE,
)
case("verify-dump-not-npz", verify("{c}/valid_x.npy"), "reference dump", culprit="", kind=USAGE)
for _file, _fragment in {
    "dump_params_not_json.npz": "member 'params' is not valid JSON",
    "dump_params_nan.npz": "NaN is not allowed",
    "dump_unknown_op.npz": (
        "op must be one of conv, max_pool, avg_pool, conv_transpose, got 'rm -rf'"
    ),
    "dump_stride_zero.npz": "stride must be >= 1, got 0",
    "dump_padding_100000.npz": "over the limit",
    "dump_pickle_kernel.npz": "refusing to unpickle",
    "dump_missing_output.npz": "missing member 'output'",
    "dump_params_float.npz": "must be a 0-d string array of JSON",
    "dump_kernel_5d.npz": "5-D",
    "npz_ratio_bomb.npz": "ratio over 1000",
    "npz_65_members.npz": "65 members",
    "empty.npz": "not a valid .npz file",
}.items():
    case(f"verify-dump-{_file}", verify(f"{{c}}/{_file}"), _fragment)

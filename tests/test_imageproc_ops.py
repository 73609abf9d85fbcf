"""Golden tests of every operation on generated images: sizes, formats, known pixels."""

from __future__ import annotations

import pytest
import pyvips

from imgpipe.domain.pipeline import PipelineError, parse_pipeline
from imgpipe.imageproc.engine import Result, process
from imgpipe.imageproc.safety import configure_vips

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


@pytest.fixture(autouse=True, scope="module")
def _vips() -> None:
    configure_vips()


def quadrants(width: int = 400, height: int = 200, alpha: bool = False) -> bytes:
    """Top-left red, top-right green, bottom-left blue, bottom-right white, as PNG."""
    def block(colour: tuple[int, int, int]) -> pyvips.Image:
        return (pyvips.Image.black(width // 2, height // 2) + list(colour)).cast("uchar")

    top = block(RED).join(block(GREEN), "horizontal")
    image = top.join(block(BLUE).join(block(WHITE), "horizontal"), "vertical")
    image = image.copy(interpretation="srgb")
    if alpha:
        image = image.bandjoin(128)
    return bytes(image.pngsave_buffer())


def run(spec: str, data: bytes | None = None) -> tuple[Result, pyvips.Image]:
    result = process(data if data is not None else quadrants(), parse_pipeline(spec))
    out = pyvips.Image.new_from_buffer(result.data, "")
    assert (out.width, out.height) == (result.width, result.height)
    return result, out


def pixel(image: pyvips.Image, x: int, y: int) -> tuple[int, ...]:
    return tuple(round(v) for v in image(x, y))


def near(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 8) -> bool:
    return len(actual) >= len(expected) and all(
        abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=False)
    )


@pytest.mark.parametrize(
    ("spec", "size"),
    [
        ("resize:w=100/format:png", (100, 50)),
        ("resize:h=50/format:png", (100, 50)),
        ("resize:w=100,h=100/format:png", (100, 50)),
        ("resize:w=800/format:png", (400, 200)),
        ("resize:w=800,upscale=true/format:png", (800, 400)),
        ("resize:w=100,h=100,fit=cover/format:png", (100, 100)),
        ("resize:w=100,h=100,fit=contain/format:png", (100, 100)),
        ("resize:w=100,h=100,fit=fill/format:png", (100, 100)),
        ("resize:w=100,kernel=nearest/format:png", (100, 50)),
        ("resize:w=60,h=60,fit=cover,gravity=attention/format:png", (60, 60)),
        ("grayscale/resize:w=100,h=30,fit=cover,kernel=cubic/format:png", (100, 30)),
    ],
)
def test_resize_sizes(spec: str, size: tuple[int, int]) -> None:
    result, _ = run(spec)
    assert (result.width, result.height) == size


def test_cover_gravity_keeps_the_named_side() -> None:
    _, west = run("resize:w=100,h=100,fit=cover,gravity=west/format:png")
    _, east = run("resize:w=100,h=100,fit=cover,gravity=east/format:png")
    assert near(pixel(west, 10, 10), RED) and near(pixel(east, 90, 10), GREEN)
    _, later = run("flop/resize:w=100,h=100,fit=cover,gravity=west/format:png")
    assert near(pixel(later, 10, 10), GREEN)


def test_contain_pads_with_the_background() -> None:
    _, out = run("resize:w=100,h=100,fit=contain,bg=000000/format:png")
    assert near(pixel(out, 50, 5), (0, 0, 0)) and near(pixel(out, 10, 40), RED)
    _, clear = run("resize:w=100,h=100,fit=contain,bg=transparent/format:png")
    assert clear.bands == 4 and pixel(clear, 50, 5)[3] == 0 and pixel(clear, 10, 40)[3] == 255


@pytest.mark.parametrize(
    ("spec", "size", "checks"),
    [
        ("crop:x=0,y=0,w=50,h=50", (50, 50), [((25, 25), RED)]),
        ("crop:x=350,y=150,w=100,h=100", (50, 50), [((25, 25), WHITE)]),
        ("crop:w=100,h=50,gravity=southeast", (100, 50), [((50, 25), WHITE)]),
        ("crop:w=100,h=50,gravity=northwest", (100, 50), [((50, 25), RED)]),
        ("crop:w=100,h=80,gravity=entropy", (100, 80), []),
        ("rotate:90", (200, 400), [((10, 10), BLUE), ((190, 10), RED)]),
        ("rotate:-90", (200, 400), [((10, 10), GREEN)]),
        ("rotate:180", (400, 200), [((10, 10), WHITE)]),
        ("flip", (400, 200), [((10, 10), BLUE), ((390, 190), GREEN)]),
        ("flop", (400, 200), [((10, 10), GREEN), ((390, 190), BLUE)]),
        ("pad:top=10,left=5,bg=ff00ff", (405, 210), [((2, 2), (255, 0, 255)), ((10, 20), RED)]),
        ("brightness:0", (400, 200), [((10, 10), (0, 0, 0)), ((390, 190), (0, 0, 0))]),
        ("brightness:0.5", (400, 200), [((10, 10), (128, 0, 0))]),
        ("contrast:0", (400, 200), [((10, 10), (128, 128, 128))]),
        ("gamma:1", (400, 200), [((10, 10), RED)]),
        ("grayscale", (400, 200), [((390, 190), (255,))]),
        ("pixelate:16", (400, 200), [((10, 10), RED)]),
        ("blur:2", (400, 200), [((10, 10), RED)]),
        ("sharpen", (400, 200), [((10, 10), RED)]),
    ],
)
def test_operation_pixels(
    spec: str, size: tuple[int, int], checks: list[tuple[tuple[int, int], tuple[int, ...]]]
) -> None:
    _, out = run(spec + "/format:png")
    assert (out.width, out.height) == size
    for (x, y), colour in checks:
        assert near(pixel(out, x, y), colour), (spec, (x, y), pixel(out, x, y), colour)


def test_arbitrary_rotation_grows_and_fills_corners() -> None:
    _, out = run("rotate:45,bg=000000/format:png")
    assert out.width > 400 and out.height > 200
    assert near(pixel(out, 0, 0), (0, 0, 0))


def test_blur_mixes_neighbours_at_the_edge() -> None:
    _, out = run("blur:4/format:png")
    r, g, _ = pixel(out, 200, 50)[:3]
    assert 60 < r < 200 and 60 < g < 200


def test_gamma_brightens_mid_tones() -> None:
    grey = (pyvips.Image.black(8, 8) + 64).cast("uchar").copy(interpretation="b-w")
    _, out = run("gamma:2.2/format:png", bytes(grey.pngsave_buffer()))
    assert near(pixel(out, 4, 4), (round(255 * (64 / 255) ** (1 / 2.2)),), 2)


def test_flatten_and_jpeg_drop_alpha_onto_a_background() -> None:
    data = quadrants(alpha=True)
    _, flat = run("flatten:000000/format:png", data)
    assert flat.bands == 3 and near(pixel(flat, 10, 10), (128, 0, 0))
    _, jpeg = run("format:jpeg,bg=ffffff", data)
    assert jpeg.bands == 3 and near(pixel(jpeg, 10, 10), (255, 127, 127), 12)
    _, kept = run("format:png", data)
    assert kept.bands == 4 and pixel(kept, 10, 10)[3] == 128


def test_crop_outside_the_image_is_a_pipeline_error() -> None:
    with pytest.raises(PipelineError) as caught:
        run("crop:x=500,y=0,w=10,h=10")
    assert caught.value.status == 400 and "outside" in caught.value.message


def test_dither_mono_is_one_bit_with_the_right_average() -> None:
    grey = (pyvips.Image.black(64, 64) + 64).cast("uchar").copy(interpretation="b-w")
    _, out = run("dither/format:png", bytes(grey.pngsave_buffer()))
    values = bytes(out.write_to_memory())
    assert set(values) == {0, 255}
    assert abs(sum(values) / len(values) - 64) < 8


def test_dither_levels_and_palette() -> None:
    photo = pyvips.Image.xyz(120, 80)
    image = (photo[0] * 2).bandjoin([photo[1] * 3, photo[0] + photo[1]]).cast("uchar")
    data = bytes(image.copy(interpretation="srgb").pngsave_buffer())
    _, levels = run("dither:4/format:png", data)
    assert set(bytes(levels.write_to_memory())) <= {0, 85, 170, 255}
    _, palette = run("dither:8,mono=false/format:png", data)
    raw = bytes(palette.colourspace("srgb").write_to_memory())
    assert len({raw[i : i + 3] for i in range(0, len(raw), 3)}) <= 8
    _, gif = run("dither:8,mono=false/format:gif", data)
    assert gif.get("vips-loader") == "gifload_buffer"


def test_watermark_text_changes_only_its_corner() -> None:
    black = (pyvips.Image.black(300, 100, bands=3)).copy(interpretation="srgb")
    data = bytes(black.pngsave_buffer())
    _, out = run("watermark:imgpipe,opacity=1,size=20,gravity=southeast/format:png", data)
    corner = out.crop(200, 60, 100, 40).max()
    assert corner > 128
    assert out.crop(0, 0, 100, 40).max() == 0


def test_watermark_image_overlay_from_configured_overlays() -> None:
    mark = (pyvips.Image.black(20, 20, bands=3) + [0, 255, 0]).cast("uchar")
    overlays = {"logo": bytes(mark.copy(interpretation="srgb").pngsave_buffer())}
    black = pyvips.Image.black(100, 100, bands=3).copy(interpretation="srgb")
    pipeline = parse_pipeline("watermark:image=logo,opacity=1,gravity=northwest,margin=0/format:png")
    result = process(bytes(black.pngsave_buffer()), pipeline, overlays=overlays)
    out = pyvips.Image.new_from_buffer(result.data, "")
    assert near(pixel(out, 5, 5), GREEN) and near(pixel(out, 50, 50), (0, 0, 0))
    with pytest.raises(PipelineError):
        process(bytes(black.pngsave_buffer()), parse_pipeline("watermark:image=nope"), overlays=overlays)


@pytest.mark.parametrize(
    ("fmt", "loader"),
    [
        ("jpeg", "jpegload_buffer"),
        ("png", "pngload_buffer"),
        ("webp", "webpload_buffer"),
        ("avif", "heifload_buffer"),
        ("tiff", "tiffload_buffer"),
        ("gif", "gifload_buffer"),
    ],
)
def test_every_format_decodes_and_is_deterministic(fmt: str, loader: str) -> None:
    spec = f"resize:w=120/format:{fmt}"
    first, out = run(spec)
    second, _ = run(spec)
    assert out.get("vips-loader") == loader
    assert first.data == second.data
    assert (first.width, first.height, first.format) == (120, 60, fmt)


def test_quality_lossless_and_progressive_change_the_encoding() -> None:
    photo = pyvips.Image.xyz(300, 200)
    noise = pyvips.Image.gaussnoise(300, 200, sigma=40, mean=128)
    image = (photo[0].bandjoin([photo[1], noise])).cast("uchar").copy(interpretation="srgb")
    data = bytes(image.pngsave_buffer())
    low, _ = run("format:jpeg,q=30", data)
    high, _ = run("format:jpeg,q=95", data)
    assert len(low.data) < len(high.data)
    _, progressive = run("format:jpeg,progressive=true", data)
    assert progressive.get("interlaced") == 1
    _, decoded = run("format:webp,lossless=true", data)
    assert bytes(decoded.write_to_memory()) == bytes(image.write_to_memory())
    _, palette = run("format:png,palette=true", data)
    assert palette.get_typeof("palette")


def test_jpeg_effort_trades_bytes_for_speed_and_2_is_the_default() -> None:
    noise = pyvips.Image.gaussnoise(300, 200, sigma=30, mean=128)
    image = noise.bandjoin([pyvips.Image.xyz(300, 200)[0], noise]).cast("uchar")
    data = bytes(image.copy(interpretation="srgb").pngsave_buffer())
    sizes = [len(run(f"format:jpeg,effort={e}", data)[0].data) for e in (0, 1, 2)]
    assert sizes[0] > sizes[1] > sizes[2], sizes
    assert run("format:jpeg", data)[0].data == run("format:jpeg,effort=2", data)[0].data
    with pytest.raises(PipelineError, match="jpeg takes 0 to 2"):
        parse_pipeline("format:jpeg,effort=3")


def exif_jpeg(orientation: int) -> bytes:
    image = pyvips.Image.new_from_buffer(quadrants(), "").copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Copyright", "imgpipe test")
    return bytes(image.jpegsave_buffer(Q=95, keep=pyvips.enums.ForeignKeep.ALL))


@pytest.mark.parametrize("spec", ["format:png", "resize:w=100/format:png", "blur:1/format:png"])
def test_exif_orientation_is_honoured_and_cleared(spec: str) -> None:
    result, out = run(spec.replace("format:png", "format:png,keep=meta"), exif_jpeg(6))
    assert out.height > out.width
    assert near(pixel(out, 5, 5), BLUE, 24)
    assert not out.get_typeof("orientation") or out.get("orientation") == 1
    assert result.input.orientation == 6 and (result.input.width, result.input.height) == (400, 200)
    _, raw = run("autorotate:false/" + spec, exif_jpeg(6))
    assert raw.width > raw.height


def test_metadata_stripped_by_default_kept_on_request() -> None:
    _, stripped = run("format:jpeg", exif_jpeg(1))
    assert not stripped.get_typeof("exif-data")
    _, kept = run("format:jpeg,keep=meta", exif_jpeg(1))
    assert kept.get_typeof("exif-data")


@pytest.mark.parametrize("spec", ["format:png", "resize:w=400/format:png", "blur:0.1/format:png"])
def test_embedded_profiles_are_converted_to_srgb_before_stripping(spec: str) -> None:
    srgb = pyvips.Image.new_from_buffer(quadrants(), "")
    wide = srgb.icc_export(output_profile="p3")
    data = bytes(wide.jpegsave_buffer(Q=98, keep=pyvips.enums.ForeignKeep.ALL))
    _, out = run(spec, data)
    assert not out.get_typeof("icc-profile-data")
    assert near(pixel(out, 300, 20), GREEN, 24)
    _, kept = run(spec.replace("format:png", "format:png,keep=icc"), data)
    assert kept.get_typeof("icc-profile-data")

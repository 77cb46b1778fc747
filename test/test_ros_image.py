"""sensor_msgs/Image and CompressedImage <-> numpy: every encoding, padding, byte order, depth, bad input."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (run scripts/setup.sh)")
sensor_msgs = pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs is not installed")
cv2 = pytest.importorskip("cv2")

from online3r_ros.ros.compressed import (  # noqa: E402
    compressed_depth_to_numpy,
    compressed_image_to_numpy,
    numpy_to_compressed_depth,
    numpy_to_compressed_image,
)
from online3r_ros.ros.errors import (  # noqa: E402
    CompressedImageError,
    ConversionError,
    EncodingError,
    ImageLayoutError,
    InvalidDepthError,
)
from online3r_ros.ros.image import (  # noqa: E402
    depth_image_to_metres,
    depth_to_metres,
    encoding_info,
    image_to_numpy,
    image_to_rgb8,
    metres_to_depth_image,
    numpy_to_image,
)

pytestmark = pytest.mark.ros

ENCODINGS = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
    "32FC3": (np.float32, 3),
    "8UC3": (np.uint8, 3),
    "16SC1": (np.int16, 1),
    "64FC1": (np.float64, 1),
}


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.normal(0.0, 10.0, size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def _hand_made(pixels: np.ndarray, encoding: str, pad: int, big: bool) -> sensor_msgs.Image:
    """An Image built without the module under test: explicit byte order and row padding."""
    height, width = pixels.shape[:2]
    order = ">" if big else "<"
    rows = pixels.astype(pixels.dtype.newbyteorder(order)).reshape(height, -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((height, pad), 0xAB, np.uint8)], axis=1)
    msg = sensor_msgs.Image()
    msg.height, msg.width, msg.encoding = height, width, encoding
    msg.is_bigendian = int(big)
    msg.step = rows.shape[1] + pad
    msg.data = padded.tobytes()
    return msg


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("big", [False, True])
def test_read_hand_made_images_every_encoding(encoding: str, pad: int, big: bool) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{encoding}/{pad}/{big}".encode()))
    dtype, channels = ENCODINGS[encoding]
    shape = (5, 7) if channels == 1 else (5, 7, channels)  # odd width: padding is not a multiple of itemsize
    pixels = _random(rng, shape, dtype)
    msg = _hand_made(pixels, encoding, pad, big)
    out = image_to_numpy(msg)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == shape
    np.testing.assert_array_equal(out, pixels)
    assert out.flags.c_contiguous


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_numpy_to_image_round_trip_with_step_and_byte_order(encoding: str) -> None:
    rng = np.random.default_rng(7)
    dtype, channels = ENCODINGS[encoding]
    shape = (3, 11) if channels == 1 else (3, 11, channels)
    pixels = _random(rng, shape, dtype)
    row = 11 * channels * np.dtype(dtype).itemsize
    for step, big in ((None, False), (row + 5, False), (row + 1, True)):
        msg = numpy_to_image(
            pixels, encoding, frame_id="cam", stamp=12_000_000_123, step=step, is_bigendian=big
        )
        assert msg.step == (row if step is None else step)
        assert len(msg.data) == msg.height * msg.step
        assert msg.is_bigendian == int(big)
        assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == ("cam", 12, 123)
        np.testing.assert_array_equal(image_to_numpy(msg), pixels)
    # the bytes follow the declared order (checked independently of the reader)
    if np.dtype(dtype).itemsize > 1:
        msg = numpy_to_image(pixels, encoding, is_bigendian=True)
        expected = pixels.astype(np.dtype(dtype).newbyteorder(">")).tobytes()
        assert bytes(msg.data) == expected


def test_copy_false_returns_read_only_view_and_copy_true_is_independent() -> None:
    pixels = np.arange(4 * 6, dtype=np.uint8).reshape(4, 6)
    msg = numpy_to_image(pixels, "mono8", step=8)
    view = image_to_numpy(msg, copy=False)
    assert not view.flags.writeable
    np.testing.assert_array_equal(view, pixels)
    copy = image_to_numpy(msg)
    copy[0, 0] = 99
    assert image_to_numpy(msg)[0, 0] == 0


def test_rosbags_style_numpy_data_is_accepted() -> None:
    class FakeImage:  # rosbags messages carry data as a numpy uint8 array
        height, width, encoding, is_bigendian, step = 2, 3, "mono16", 0, 6
        data = np.arange(12, dtype=np.uint8)

    out = image_to_numpy(FakeImage())
    np.testing.assert_array_equal(out, np.arange(12, dtype=np.uint8).view("<u2").reshape(2, 3))


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [
        ("rgb8", lambda p: p),
        ("bgr8", lambda p: p[..., ::-1]),
        ("rgba8", lambda p: p),
        ("bgra8", lambda p: p[..., 2::-1]),
    ],
)
def test_image_to_rgb8_colour_orders(encoding: str, expected) -> None:
    rng = np.random.default_rng(3)
    channels = encoding_info(encoding).channels
    pixels = rng.integers(0, 256, size=(4, 5, channels), dtype=np.uint8)
    rgb = image_to_rgb8(numpy_to_image(pixels, encoding))
    np.testing.assert_array_equal(rgb, expected(pixels)[..., :3])


def test_image_to_rgb8_mono() -> None:
    mono16 = np.array([[0, 256, 65535]], np.uint16)
    rgb = image_to_rgb8(numpy_to_image(mono16, "mono16"))
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 1, 255])
    assert rgb.shape == (1, 3, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    with pytest.raises(EncodingError, match="8UC3"):
        image_to_rgb8(numpy_to_image(np.zeros((2, 2, 3), np.uint8), "8UC3"))


# ---------------------------------------------------------------------------------------------- bad input


def _msg(**overrides) -> sensor_msgs.Image:
    msg = numpy_to_image(np.zeros((4, 5, 3), np.uint8), "rgb8")
    for key, value in overrides.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize("encoding", ["yuv422", "bayer_rggb8", "RGB8", "", "16UC5"])
def test_unknown_encoding_raises_naming_it(encoding: str) -> None:
    with pytest.raises(EncodingError) as err:
        image_to_numpy(_msg(encoding=encoding))
    assert err.value.fields["encoding"] == encoding
    assert repr(encoding) in str(err.value)


@pytest.mark.parametrize(("height", "width"), [(0, 5), (4, 0), (0, 0)])
def test_zero_sizes_raise(height: int, width: int) -> None:
    with pytest.raises(ImageLayoutError) as err:
        image_to_numpy(_msg(height=height, width=width))
    assert err.value.fields == {"height": height, "width": width}


def test_negative_size_raises_for_duck_typed_message() -> None:
    class Bad:
        height, width, encoding, is_bigendian, step, data = -1, 2, "mono8", 0, 2, b""

    with pytest.raises(ImageLayoutError, match="height=-1"):
        image_to_numpy(Bad())


def test_step_smaller_than_row_raises() -> None:
    with pytest.raises(ImageLayoutError) as err:
        image_to_numpy(_msg(step=14))  # 5 px * 3 bytes = 15
    assert err.value.fields["step"] == 14 and err.value.fields["bytes_per_pixel"] == 3


@pytest.mark.parametrize("delta", [-1, 1, -15])
def test_data_length_disagreeing_with_height_times_step_raises(delta: int) -> None:
    msg = _msg()
    data = bytes(msg.data)
    msg.data = data[:delta] if delta < 0 else data + b"\0" * delta
    with pytest.raises(ImageLayoutError) as err:
        image_to_numpy(msg)
    assert err.value.fields["data_length"] == 60 + delta and err.value.fields["expected"] == 60


def test_numpy_to_image_rejects_mismatched_arrays() -> None:
    with pytest.raises(EncodingError, match="shape"):
        numpy_to_image(np.zeros((4, 5, 3), np.uint8), "rgba8")
    with pytest.raises(EncodingError, match="dtype"):
        numpy_to_image(np.zeros((4, 5), np.uint16), "mono8")
    with pytest.raises(EncodingError, match="dtype"):
        numpy_to_image(np.zeros((4, 5), np.float32), "16UC1")  # no silent float -> integer depth
    with pytest.raises(ImageLayoutError):
        numpy_to_image(np.zeros((0, 5), np.uint8), "mono8")
    with pytest.raises(ImageLayoutError, match="step"):
        numpy_to_image(np.zeros((2, 5), np.uint8), "mono8", step=4)
    float64 = numpy_to_image(np.full((2, 2), 1.5), "32FC1")  # float -> float cast is allowed
    assert image_to_numpy(float64).dtype == np.float32


def test_errors_are_value_errors_with_fields() -> None:
    with pytest.raises(ValueError):
        image_to_numpy(_msg(encoding="nope"))
    assert issubclass(ImageLayoutError, ConversionError)


# ---------------------------------------------------------------------------------------------------- depth


def test_depth_16uc1_millimetres_to_metres() -> None:
    mm = np.array([[0, 1, 1500], [65535, 250, 3]], np.uint16)
    metres = depth_image_to_metres(numpy_to_image(mm, "16UC1", step=8))
    assert metres.dtype == np.float32
    np.testing.assert_allclose(metres, mm.astype(np.float64) / 1000.0, rtol=1e-6)
    assert metres[0, 0] == 0.0


def test_depth_32fc1_nan_inf_negative_raise_by_default_and_mask_on_request() -> None:
    depth = np.array([[1.0, np.nan, 2.0], [np.inf, -0.5, -np.inf]], np.float32)
    msg = numpy_to_image(depth, "32FC1")
    with pytest.raises(InvalidDepthError) as err:
        depth_image_to_metres(msg)
    assert err.value.fields["count"] == 4
    assert err.value.fields["first_pixel"] == (0, 1)
    masked = depth_image_to_metres(msg, invalid="zero")
    np.testing.assert_array_equal(masked, [[1.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    with pytest.raises(EncodingError):
        depth_image_to_metres(numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8"))
    with pytest.raises(ValueError, match="invalid"):
        depth_to_metres(depth, "32FC1", invalid="ignore")


def test_metres_to_depth_image_encodings() -> None:
    depth = np.array([[0.0, 1.2344, 2.0006]], np.float32)
    mm = image_to_numpy(metres_to_depth_image(depth, "16UC1"))
    np.testing.assert_array_equal(mm, [[0, 1234, 2001]])
    np.testing.assert_array_equal(image_to_numpy(metres_to_depth_image(depth)), depth)
    with pytest.raises(InvalidDepthError, match="65.535"):
        metres_to_depth_image(np.array([[70.0]]), "16UC1")
    with pytest.raises(InvalidDepthError):
        metres_to_depth_image(np.array([[np.nan]]), "16UC1")
    zeroed = metres_to_depth_image(np.array([[np.nan, 1.0]]), "16UC1", invalid="zero")
    np.testing.assert_array_equal(image_to_numpy(zeroed), [[0, 1000]])
    with pytest.raises(EncodingError):
        metres_to_depth_image(depth, "mono8")


# ------------------------------------------------------------------------------------------------ compressed


def _compressed(fmt: str, payload: bytes) -> sensor_msgs.CompressedImage:
    msg = sensor_msgs.CompressedImage()
    msg.format = fmt
    msg.data = payload
    return msg


def _colour_image(rng: np.random.Generator) -> np.ndarray:
    base = rng.integers(0, 256, size=(6, 9, 3), dtype=np.uint8)
    return cv2.resize(base, (33, 21), interpolation=cv2.INTER_LINEAR)  # smooth: jpeg-friendly


@pytest.mark.parametrize("fmt", ["png", "bgr8; png compressed bgr8", "rgb8; png compressed bgr8"])
def test_png_colour_decodes_exactly(fmt: str) -> None:
    bgr = _colour_image(np.random.default_rng(1))
    ok, buf = cv2.imencode(".png", bgr)
    assert ok
    pixels, encoding = compressed_image_to_numpy(_compressed(fmt, buf.tobytes()))
    assert encoding == "bgr8"
    np.testing.assert_array_equal(pixels, bgr)
    rgb, encoding = compressed_image_to_numpy(_compressed(fmt, buf.tobytes()), "rgb8")
    assert encoding == "rgb8"
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])


def test_jpeg_decodes_close_to_source() -> None:
    bgr = _colour_image(np.random.default_rng(2))
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    pixels, encoding = compressed_image_to_numpy(_compressed("bgr8; jpeg compressed bgr8", buf.tobytes()))
    assert encoding == "bgr8" and pixels.shape == bgr.shape
    np.testing.assert_array_equal(pixels, cv2.imdecode(buf, cv2.IMREAD_COLOR))  # what libjpeg decodes
    assert np.abs(pixels.astype(int) - bgr.astype(int)).mean() < 12.0  # and close to the source
    mono, encoding = compressed_image_to_numpy(_compressed("jpeg", buf.tobytes()), "mono8")
    assert encoding == "mono8" and mono.shape == bgr.shape[:2]


def test_png_16bit_and_mono() -> None:
    rng = np.random.default_rng(4)
    mono16 = rng.integers(0, 65536, size=(5, 7), dtype=np.uint16)
    ok, buf = cv2.imencode(".png", mono16)
    pixels, encoding = compressed_image_to_numpy(_compressed("16UC1; png compressed mono16", buf.tobytes()))
    assert encoding == "16UC1"
    np.testing.assert_array_equal(pixels, mono16)
    mono8 = rng.integers(0, 256, size=(5, 7), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", mono8)
    pixels, encoding = compressed_image_to_numpy(_compressed("png", buf.tobytes()))
    assert encoding == "mono8"
    np.testing.assert_array_equal(pixels, mono8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_numpy_to_compressed_image_png_round_trip(encoding: str) -> None:
    rng = np.random.default_rng(5)
    shape = (7, 13) if encoding == "mono8" else (7, 13, 3)
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    msg = numpy_to_compressed_image(pixels, encoding, "png", frame_id="cam")
    assert msg.format.startswith(f"{encoding}; png compressed ")
    decoded, _ = compressed_image_to_numpy(msg, "passthrough" if encoding != "rgb8" else "rgb8")
    np.testing.assert_array_equal(decoded, pixels)


def test_compressed_bad_input() -> None:
    ok, png = cv2.imencode(".png", np.zeros((4, 4), np.uint8))
    with pytest.raises(EncodingError, match="tiff"):
        compressed_image_to_numpy(_compressed("tiff", png.tobytes()))
    with pytest.raises(CompressedImageError, match="no data"):
        compressed_image_to_numpy(_compressed("png", b""))
    with pytest.raises(CompressedImageError, match="neither JPEG nor PNG"):
        compressed_image_to_numpy(_compressed("png", b"\x00" * 32))
    with pytest.raises(CompressedImageError, match="disagrees"):
        compressed_image_to_numpy(_compressed("jpeg", png.tobytes()))
    with pytest.raises(CompressedImageError, match="corrupt"):
        compressed_image_to_numpy(_compressed("png", png.tobytes()[:20]))
    with pytest.raises(EncodingError):
        compressed_image_to_numpy(_compressed("png", png.tobytes()), "rgba8")


# ------------------------------------------------------------------------------------------ compressedDepth


def _upstream_compressed_depth_32f(depth: np.ndarray, depth_max: float = 10.0, z0: float = 100.0) -> bytes:
    """compressedDepth payload built the way compressed_depth_image_transport does (float32 arithmetic)."""
    quant_a = np.float32(z0) * (np.float32(z0) + np.float32(1.0))
    quant_b = np.float32(1.0) - quant_a / np.float32(depth_max)
    inverse = np.zeros(depth.shape, np.uint16)
    valid = depth < np.float32(depth_max)  # NaN compares false -> 0
    inverse[valid] = (quant_a / depth[valid] + quant_b).astype(np.uint16)  # C++ float -> ushort truncates
    ok, png = cv2.imencode(".png", inverse)
    assert ok
    return struct.pack("<iff", 0, float(quant_a), float(quant_b)) + png.tobytes()


def test_compressed_depth_32fc1_upstream_layout() -> None:
    rng = np.random.default_rng(6)
    depth = rng.uniform(0.3, 9.5, size=(9, 11)).astype(np.float32)
    depth[0, 0] = np.nan
    depth[1, 2] = 12.0  # beyond depth_max -> no measurement
    payload = _upstream_compressed_depth_32f(depth)
    out, encoding = compressed_depth_to_numpy(_compressed("32FC1; compressedDepth png", payload))
    assert encoding == "32FC1" and out.dtype == np.float32
    assert np.isnan(out[0, 0]) and np.isnan(out[1, 2])
    ok = np.isfinite(depth) & (depth < 10.0)
    # quantisation error of inverse depth: |d' - d| <= d^2 / A (one inverse-depth step)
    bound = depth[ok] ** 2 / (100.0 * 101.0) + 1e-6
    assert (np.abs(out[ok] - depth[ok]) <= bound).all()
    assert np.isfinite(out[ok]).all()
    # old-style format string without the codec name also means png
    out_old, _ = compressed_depth_to_numpy(_compressed("32FC1; compressedDepth", payload))
    np.testing.assert_array_equal(np.nan_to_num(out_old, nan=-1), np.nan_to_num(out, nan=-1))
    # and the generic entry point dispatches to it
    out_generic, _ = compressed_image_to_numpy(_compressed("32FC1; compressedDepth png", payload))
    np.testing.assert_array_equal(np.nan_to_num(out_generic, nan=-1), np.nan_to_num(out, nan=-1))
    # the NaN policy applies afterwards, explicitly
    with pytest.raises(InvalidDepthError):
        depth_to_metres(out, "32FC1")
    assert depth_to_metres(out, "32FC1", invalid="zero")[0, 0] == 0.0


def test_compressed_depth_16uc1_upstream_layout() -> None:
    rng = np.random.default_rng(8)
    mm = rng.integers(0, 9000, size=(6, 13), dtype=np.uint16)
    ok, png = cv2.imencode(".png", mm)
    payload = struct.pack("<iff", 0, 0.0, 0.0) + png.tobytes()
    out, encoding = compressed_depth_to_numpy(_compressed("16UC1; compressedDepth png", payload))
    assert encoding == "16UC1"
    np.testing.assert_array_equal(out, mm)


def test_numpy_to_compressed_depth_matches_upstream_bytes_and_round_trips() -> None:
    rng = np.random.default_rng(9)
    depth = rng.uniform(0.3, 9.5, size=(8, 10)).astype(np.float32)
    depth[2, 3] = np.nan
    msg = numpy_to_compressed_depth(depth, "32FC1")
    assert msg.format == "32FC1; compressedDepth png"
    data = bytes(msg.data)
    reference = _upstream_compressed_depth_32f(depth)
    assert data[:12] == reference[:12]  # identical header (enum + float32 quantisation parameters)
    ours = cv2.imdecode(np.frombuffer(data[12:], np.uint8), cv2.IMREAD_UNCHANGED)
    theirs = cv2.imdecode(np.frombuffer(reference[12:], np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(ours, theirs)  # identical quantised inverse depth
    mm = rng.integers(0, 12000, size=(5, 5), dtype=np.uint16)
    out, _ = compressed_depth_to_numpy(numpy_to_compressed_depth(mm, "16UC1", depth_max=10.0))
    np.testing.assert_array_equal(out, np.where(mm > 10000, 0, mm))


def test_compressed_depth_bad_input() -> None:
    ok, png16 = cv2.imencode(".png", np.ones((3, 3), np.uint16))
    ok, png8 = cv2.imencode(".png", np.ones((3, 3), np.uint8))
    header = struct.pack("<iff", 0, 10100.0, -9.0)
    with pytest.raises(CompressedImageError, match="header"):
        compressed_depth_to_numpy(_compressed("32FC1; compressedDepth png", header))
    with pytest.raises(CompressedImageError, match="format enum") as err:
        compressed_depth_to_numpy(
            _compressed("32FC1; compressedDepth png", struct.pack("<iff", 5, 1, 1) + png16.tobytes())
        )
    assert err.value.fields["format_enum"] == 5
    with pytest.raises(CompressedImageError, match="16-bit"):
        compressed_depth_to_numpy(_compressed("32FC1; compressedDepth png", header + png8.tobytes()))
    with pytest.raises(EncodingError, match="rvl"):
        compressed_depth_to_numpy(_compressed("32FC1; compressedDepth rvl", header + png16.tobytes()))
    with pytest.raises(EncodingError, match="8UC3"):
        compressed_depth_to_numpy(_compressed("8UC3; compressedDepth png", header + png16.tobytes()))
    nan_header = struct.pack("<iff", 0, float("nan"), 0.0)
    with pytest.raises(CompressedImageError, match="quantisation"):
        compressed_depth_to_numpy(_compressed("32FC1; compressedDepth png", nan_header + png16.tobytes()))
    with pytest.raises(EncodingError):
        numpy_to_compressed_depth(np.ones((2, 2), np.float32), "16UC1")

"""Frozen item encoders: each modality's vectors, their width, and errors for bad weights."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image, ImageDraw

from recsys.config import AudioEncoderConfig, ImageEncoderConfig, TitleEncoderConfig
from recsys.encoders import MediaError, MediaTooLarge, build_encoder, decode_audio, decode_image
from recsys.encoders.weights import default_aisfx_weights, default_image_weights, default_title_model_dir
from recsys.errors import EncoderError

TITLES = ["Toy Story (1995)", "a much longer title about a dog, a cat and a very small mouse", "GoldenEye"]


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> Path:
    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    draw.ellipse((4, 4, size[0] - 8, size[1] - 6), fill=(255 - colour[0], 40, colour[2] // 2))
    image.save(path)
    return path


def _wav(path: Path, seconds: float, sample_rate: int, freq: float = 440.0, channels: int = 1) -> Path:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = 0.4 * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    soundfile.write(path, data.astype(np.float32), sample_rate)
    return path


# ------------------------------------------------------------------------------ title


@pytest.fixture(scope="module")
def title_encoder():
    return build_encoder("title", TitleEncoderConfig())


def test_title_equals_direct_transformers_mean_pooling(title_encoder) -> None:
    from transformers import AutoModel, AutoTokenizer

    path = str(default_title_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    tokens = tokenizer(TITLES, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**tokens).last_hidden_state
    mask = tokens["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()

    got = title_encoder.encode(TITLES)
    assert got.shape == (3, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_title_vector_does_not_depend_on_batch_padding(title_encoder) -> None:
    batched = title_encoder.encode(TITLES)
    single = np.concatenate([title_encoder.encode([t]) for t in TITLES])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_title_model_is_frozen_and_in_eval_mode(title_encoder) -> None:
    assert not title_encoder.model.training
    assert not any(p.requires_grad for p in title_encoder.model.parameters())


# ------------------------------------------------------------------------------ image


@pytest.fixture(scope="module")
def image_encoder():
    return build_encoder("image", ImageEncoderConfig(image_size=64))


def test_image_vectors_are_finite_1280d_pooled_features(image_encoder, tmp_path: Path) -> None:
    images = [decode_image(_png(tmp_path / f"{i}.png", c)) for i, c in enumerate([(200, 10, 10), (10, 200, 90)])]
    images.append(Image.new("L", (30, 70), 128))  # grayscale, non-square: converted and resized
    got = image_encoder.encode(images)
    assert got.shape == (3, 1280) and got.dtype == np.float32
    assert np.isfinite(got).all()
    assert not np.allclose(got[0], got[1])

    # Same as torchvision's own MobileNetV2 trunk + global average pool on the same pixels.
    import torchvision

    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(default_image_weights(), weights_only=True))
    reference.eval()
    from recsys.encoders.image import images_to_tensor

    with torch.no_grad():
        features = reference.features(images_to_tensor(images, 64))
        expected = torch.nn.functional.adaptive_avg_pool2d(features, 1).flatten(1).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


# ------------------------------------------------------------------------------ audio


@pytest.fixture(scope="module")
def aisfx_encoder():
    return build_encoder("audio", AudioEncoderConfig(kind="aisfx", max_seconds=3.0))


def test_aisfx_vectors_are_finite_512d(aisfx_encoder, tmp_path: Path) -> None:
    clips = [
        decode_audio(_wav(tmp_path / "a.wav", 2.5, 44100)),
        decode_audio(_wav(tmp_path / "b.wav", 0.3, 16000, freq=1000.0, channels=2)),  # shorter than one block
        (np.zeros(22050, dtype=np.float32), 22050),  # silence
    ]
    got = aisfx_encoder.encode(clips)
    assert got.shape == (3, 512) and got.dtype == np.float32
    assert np.isfinite(got).all()
    assert not np.allclose(got[0], got[1])
    np.testing.assert_allclose(aisfx_encoder.encode(clips[:1]), got[:1], atol=1e-5)  # batching does not change it


def test_aisfx_features_match_the_aisfx_package_pipeline(aisfx_encoder, tmp_path: Path) -> None:
    from aisfx import inference, preprocessing
    from aisfx.spectrogram.spectrogram_librosa import compute_spectrogram

    from recsys.encoders import audio

    assert (audio.AISFX_SAMPLE_RATE, audio.AISFX_N_FFT, audio.AISFX_HOP, audio.AISFX_MEL_BINS) == (
        inference.SAMPLE_RATE,
        inference.SPEC_BLOCK_LENGTH,
        inference.SPEC_HOP_LENGTH,
        inference.MEL_BINS,
    )
    assert (audio.AISFX_F_MIN, audio.AISFX_F_MAX, audio.AISFX_BLOCK_FRAMES) == (
        inference.F_MIN,
        inference.F_MAX,
        inference.EMB_BLOCK_LENGTH,
    )

    path = _wav(tmp_path / "c.wav", 3.0, 44100)
    spec = compute_spectrogram(
        str(path), sr=inference.SAMPLE_RATE, block_size=2048, hop_size=1024, n_mels=96, f_min=0.0, f_max=22050.0
    )  # (96, F)
    spec = preprocessing.spectrogram_normalize(spec.T, spec_norm="original")  # (F, 96)
    blocks = preprocessing.blocking(spec, block_size=100, hop_size=50, drop_partial_block=True)  # (N, 100, 96)
    with torch.no_grad():
        expected = aisfx_encoder.net(torch.from_numpy(blocks).float()).mean(dim=0).numpy()

    got = aisfx_encoder.encode([decode_audio(path)])[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_logmel_vectors_are_mean_and_std_per_band(tmp_path: Path) -> None:
    encoder = build_encoder("audio", AudioEncoderConfig(kind="logmel", n_mels=32, sample_rate=16000))
    tone = decode_audio(_wav(tmp_path / "t.wav", 1.0, 44100, channels=2))
    silence = (np.zeros(8000, dtype=np.float32), 16000)
    got = encoder.encode([tone, silence])
    assert got.shape == (2, 64) and got.dtype == np.float32
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[1], 0.0, atol=1e-6)  # log10(1 + 0): silence has zero mean and std
    assert got[0, :32].max() > 0.5 and (got[0, 32:] >= 0).all()


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("modality", "cfg", "field"),
    [
        ("title", TitleEncoderConfig(path="/nonexistent/minilm"), "encoders.title.path"),
        ("image", ImageEncoderConfig(weights="/nonexistent/mobilenet.pth"), "encoders.image.weights"),
        ("audio", AudioEncoderConfig(weights="/nonexistent/aisfx.pth"), "encoders.audio.weights"),
    ],
)
def test_missing_weights_path_names_the_field_and_path(modality: str, cfg, field: str) -> None:
    with pytest.raises(EncoderError) as info:
        build_encoder(modality, cfg, load=False)  # found out before any model is loaded
    assert field in str(info.value) and "/nonexistent/" in str(info.value)


def test_garbage_weights_file_is_an_encoder_error(tmp_path: Path) -> None:
    garbage = tmp_path / "weights.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    for modality, cfg, field in [
        ("image", ImageEncoderConfig(weights=str(garbage)), "encoders.image.weights"),
        ("audio", AudioEncoderConfig(weights=str(garbage)), "encoders.audio.weights"),
    ]:
        with pytest.raises(EncoderError, match=field) as info:
            build_encoder(modality, cfg)
        assert str(garbage) in str(info.value)


def test_weights_of_another_architecture_are_an_encoder_error(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="encoders.image.weights.*ResNet"):
        build_encoder("image", ImageEncoderConfig(arch="resnet18", weights=str(default_image_weights())))
    with pytest.raises(EncoderError, match="encoders.image.weights.*resnet50"):
        build_encoder("image", ImageEncoderConfig(arch="resnet50"), load=False)  # no packaged default for it
    mobilenet_as_audio = AudioEncoderConfig(weights=str(default_image_weights()))
    with pytest.raises(EncoderError, match="encoders.audio.weights.*EmbeddingNet"):
        build_encoder("audio", mobilenet_as_audio)


def test_title_directory_without_a_checkpoint_is_an_encoder_error(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="encoders.title.path.*no config.json"):
        build_encoder("title", TitleEncoderConfig(path=str(tmp_path)), load=False)
    (tmp_path / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    with pytest.raises(EncoderError, match="encoders.title.path"):
        build_encoder("title", TitleEncoderConfig(path=str(tmp_path)))


# ------------------------------------------------------------------------------ fingerprint, media


def test_fingerprint_is_cheap_stable_and_tracks_parameters() -> None:
    a = build_encoder("image", ImageEncoderConfig(image_size=64), load=False)
    assert not a.loaded
    assert a.fingerprint == build_encoder("image", ImageEncoderConfig(image_size=64), load=False).fingerprint
    assert a.fingerprint != build_encoder("image", ImageEncoderConfig(image_size=96), load=False).fingerprint
    title = build_encoder("title", TitleEncoderConfig(), load=False)
    assert title.dim == 384 and not title.loaded
    assert title.fingerprint != build_encoder("title", TitleEncoderConfig(pooling="cls"), load=False).fingerprint
    logmel = build_encoder("audio", AudioEncoderConfig(kind="logmel", n_mels=40), load=False)
    assert logmel.dim == 80
    assert default_aisfx_weights().is_file()


def test_decode_from_bytes_and_typed_errors(tmp_path: Path) -> None:
    png = _png(tmp_path / "x.png", (0, 0, 255))
    assert decode_image(png.read_bytes()).size == (48, 40)
    wav = _wav(tmp_path / "x.wav", 0.1, 8000, channels=2)
    waveform, rate = decode_audio(wav.read_bytes())
    assert waveform.shape == (800,) and waveform.dtype == np.float32 and rate == 8000

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    truncated = buffer.getvalue()[:40]
    for bad in [b"\x89PNG garbage bytes", truncated, b"", tmp_path / "missing.png"]:
        with pytest.raises(MediaError):
            decode_image(bad)
    for bad in [b"RIFF garbage", png.read_bytes(), tmp_path / "missing.wav"]:
        with pytest.raises(MediaError):
            decode_audio(bad)


def test_media_over_a_limit_is_refused_from_its_header_before_decoding(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buffer, format="PNG")  # 144 Mpx in a few KB: a decompression bomb
    with pytest.raises(MediaTooLarge, match="12000x12000 = 144000000 pixels, over the limit of 25000000"):
        decode_image(buffer.getvalue(), max_pixels=25_000_000)
    png = _png(tmp_path / "x.png", (0, 0, 255))
    assert decode_image(png.read_bytes(), max_pixels=48 * 40).size == (48, 40)  # at the limit: fine
    with pytest.raises(MediaTooLarge, match="over the limit of 1919"):
        decode_image(png, max_pixels=48 * 40 - 1)
    wav = _wav(tmp_path / "x.wav", 2.0, 8000)
    assert decode_audio(wav, max_seconds=2.0)[0].shape == (16000,)
    with pytest.raises(MediaTooLarge, match=r"lasts 2.0 s, over the limit of 1.5 s"):
        decode_audio(wav.read_bytes(), max_seconds=1.5)
    assert issubclass(MediaTooLarge, MediaError)


def test_audio_decode_error_names_the_bytes_not_an_object_repr() -> None:
    with pytest.raises(MediaError) as err:
        decode_audio(b"RIFF" + b"\x00" * 1230)
    assert str(err.value).startswith("cannot decode audio <1234 bytes>: ")
    assert "BytesIO" not in str(err.value) and " at 0x" not in str(err.value)

"""Audio encoders: the pretrained aisfx sound-event CNN, or plain log-mel statistics.

Both take ``list[(waveform, sample_rate)]`` where ``waveform`` is float32, shaped (T,) or
(T, channels) as ``soundfile`` returns it. Each clip is mixed to mono, cut to ``max_seconds``
and resampled (soxr, through librosa) to the encoder's rate.

``kind: aisfx`` reproduces aisfx's own feature pipeline (``aisfx.preprocessing`` and
``aisfx/spectrogram/spectrogram_librosa.py``): 44.1 kHz, peak-normalised audio; a 96-band HTK
mel power spectrogram with unit-sum filters (2048-sample Hann window, 1024 hop, 0-22050 Hz);
``log10(1 + 10000 * mel)`` scaled by the dataset maximum the model was trained with; blocks of
100 frames (~2.3 s) every 50 frames, the last partial block dropped (a clip shorter than one
block is zero-padded to one). Each block gives a 512-d embedding; a clip's vector is their mean.
The mel front end runs batched in torch (``torch.stft`` + librosa's filterbank), which is the
same computation as ``librosa.feature.melspectrogram`` (a unit test checks this).
The aisfx model's rate and mel count are fixed by its training: ``encoders.audio.sample_rate``
and ``n_mels`` apply to ``kind: logmel`` only.

Loading the aisfx checkpoint: the shipped ``checkpoint.pth`` is a pickled tuple
``(state_dict, {dataset: (np.int64 index, n_classes)})``. ``torch.load(weights_only=True)``
refuses it only because of the numpy integer scalars, so we keep ``weights_only=True`` and
allowlist exactly the numpy scalar/dtype reconstructors (data, not code). ``weights_only=False``
(arbitrary code execution on load) is never used, for the packaged file or a user's file.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from recsys.config import AudioEncoderConfig
from recsys.encoders.base import ItemEncoder, channels_last, freeze, load_state_dict_into, make_fingerprint
from recsys.encoders.weights import AUDIO_FIELD, default_aisfx_weights, file_digest, resolve_file
from recsys.errors import EncoderError

AudioInput = tuple[np.ndarray, int]

# aisfx's constants (aisfx/inference.py, aisfx/preprocessing.py); a unit test checks they match.
AISFX_SAMPLE_RATE = 44100
AISFX_N_FFT, AISFX_HOP = 2048, 1024
AISFX_MEL_BINS = 96
AISFX_F_MIN, AISFX_F_MAX = 0.0, 22050.0
AISFX_BLOCK_FRAMES = 100
AISFX_BLOCK_HOP = 50  # aisfx's default emb_hop_size=0.5 (the ISMIR setting)
AISFX_SPEC_MAX = 9.457798957824707  # spectrogram_normalize(spec_norm='original'): min 0, this max
AISFX_DIM = 512
# Blocks per forward pass: on CPU a few at a time is fastest (activations stay in cache; ~20 MB).
AISFX_BLOCKS_PER_FORWARD = 8


def prepare_waveform(waveform: np.ndarray, sample_rate: int, target_rate: int, max_seconds: float) -> np.ndarray:
    """Mono, cut to ``max_seconds``, resampled to ``target_rate``: (T,) float32."""
    y = np.asarray(waveform, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=1)  # (T, channels) -> (T,)
    elif y.ndim != 1:
        raise ValueError(f"waveform must be (T,) or (T, channels), got shape {y.shape}")
    y = np.nan_to_num(y[: int(round(max_seconds * sample_rate))], nan=0.0, posinf=0.0, neginf=0.0)
    if sample_rate != target_rate and y.size > 0:
        import librosa

        y = librosa.resample(y, orig_sr=sample_rate, target_sr=target_rate, res_type="soxr_hq").astype(np.float32)
    return y


class MelFrontEnd:
    """Batched mel power spectrogram, equal to ``librosa.feature.melspectrogram`` (center=True, zero padding)."""

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        hop: int,
        n_mels: int,
        fmin: float,
        fmax: float,
        htk: bool,
        norm: Literal["slaney"] | float | None,
    ) -> None:
        import librosa

        self.n_fft, self.hop = n_fft, hop
        basis = librosa.filters.mel(
            sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm
        )
        self.basis = torch.from_numpy(basis.astype(np.float32))  # (n_mels, n_fft // 2 + 1)
        self.window = torch.hann_window(n_fft, periodic=True)

    def __call__(self, waves: list[np.ndarray]) -> tuple[torch.Tensor, list[int]]:
        """Clips -> ((B, n_mels, F) mel power, frames per clip); frames past a clip's end are padding."""
        lengths = [len(w) for w in waves]
        longest = max(max(lengths), 1)
        x = torch.zeros(len(waves), longest)  # (B, T)
        for i, w in enumerate(waves):
            x[i, : len(w)] = torch.from_numpy(w)
        spec = torch.stft(
            x,
            self.n_fft,
            hop_length=self.hop,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # (B, n_fft // 2 + 1, F)
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(self.basis, power)  # (B, n_mels, F)
        frames = [1 + n // self.hop for n in lengths]
        return mel, frames


def _numpy_safe_globals() -> list[Any]:
    """What a checkpoint holding numpy integer/float scalars needs on top of torch's weights_only set."""
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        multiarray = importlib.import_module("numpy.core.multiarray")
    scalar = multiarray.scalar
    dtypes = [
        np.bool_,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
    ]
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *[type(np.dtype(t)) for t in dtypes],
    ]


def load_aisfx_checkpoint(path: Path) -> tuple[dict[str, Any], dict[Any, Any] | None]:
    """``(state_dict, ds_dict or None)`` from an aisfx checkpoint, always with ``weights_only=True``."""
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        raise EncoderError(f"{AUDIO_FIELD}: cannot load weights file {path} (weights_only=True): {detail}") from None
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[0], dict) and isinstance(obj[1], dict):
        return obj[0], obj[1]  # the format aisfx ships: (state_dict, ds_dict)
    if isinstance(obj, dict):
        return obj, None
    raise EncoderError(f"{AUDIO_FIELD}: {path} is not an aisfx checkpoint (got {type(obj).__name__})")


class AisfxAudioEncoder(ItemEncoder[AudioInput]):
    """list[(waveform, sample_rate)] -> (B, 512) float32: mean of aisfx block embeddings."""

    modality = "audio"
    field = "encoders.audio"

    def __init__(self, cfg: AudioEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.weights_path = resolve_file(cfg.weights, default_aisfx_weights, AUDIO_FIELD)
        self._dim = AISFX_DIM
        self.fingerprint = make_fingerprint(
            "aisfx",
            {"modality": "audio", "weights": file_digest(self.weights_path), "max_seconds": cfg.max_seconds},
        )
        self.net: torch.nn.Module | None = None
        self.front_end: MelFrontEnd | None = None

    def _load(self) -> None:
        from aisfx.inference import load_bestModel
        from aisfx.models.cnn2d import EmbeddingNet

        state, ds_dict = load_aisfx_checkpoint(self.weights_path)
        if ds_dict is not None:
            # The full cross-dataset model, as aisfx builds it; only its embedding net is used.
            ds_dict = {str(k): (int(v[0]), int(v[1])) for k, v in ds_dict.items()}
            try:
                model = load_bestModel(state, ds_dict, "cpu")
            except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as exc:
                detail = " ".join(str(exc).split())[:500]
                raise EncoderError(
                    f"{AUDIO_FIELD}: {self.weights_path} does not match the aisfx CrossNet: {detail}"
                ) from None
            net = model.embedding_net
        else:
            # A bare state dict: the embedding net's own, or a CrossNet's (heads ignored).
            if any(k.startswith("embedding_net.") for k in state):
                state = {
                    k.removeprefix("embedding_net."): v for k, v in state.items() if k.startswith("embedding_net.")
                }
            net = EmbeddingNet("max", 3, 1, 64)
            load_state_dict_into(net, state, AUDIO_FIELD, self.weights_path)
        self.net = channels_last(freeze(net).to(self.device))
        self.front_end = MelFrontEnd(
            AISFX_SAMPLE_RATE, AISFX_N_FFT, AISFX_HOP, AISFX_MEL_BINS, AISFX_F_MIN, AISFX_F_MAX, htk=True, norm=1.0
        )

    def spectrogram_blocks(self, batch: list[AudioInput]) -> tuple[torch.Tensor, list[int]]:
        """Clips -> ((N, 100, 96) normalised log-mel blocks of all clips, blocks per clip)."""
        assert self.front_end is not None
        waves = []
        for waveform, sample_rate in batch:
            y = prepare_waveform(waveform, sample_rate, AISFX_SAMPLE_RATE, self.cfg.max_seconds)
            peak = float(np.abs(y).max()) if y.size else 0.0
            waves.append(y / peak if peak > 0 else y)  # aisfx peak-normalises every clip
        mel, frames = self.front_end(waves)  # (B, 96, F)
        spec = torch.log10(mel * 10000.0 + 1.0).div_(AISFX_SPEC_MAX).transpose(1, 2)  # (B, F, 96)
        blocks: list[torch.Tensor] = []
        counts: list[int] = []
        for i, n in enumerate(frames):
            clip = spec[i, :n]  # (n, 96)
            if n < AISFX_BLOCK_FRAMES:
                clip = torch.cat([clip, clip.new_zeros(AISFX_BLOCK_FRAMES - n, AISFX_MEL_BINS)])
            starts = range(0, max(n - AISFX_BLOCK_FRAMES, 0) + 1, AISFX_BLOCK_HOP)
            blocks.extend(clip[s : s + AISFX_BLOCK_FRAMES] for s in starts)
            counts.append(len(starts))
        return torch.stack(blocks), counts  # (N, 100, 96)

    def _encode(self, batch: list[AudioInput]) -> np.ndarray:
        assert self.net is not None
        blocks, counts = self.spectrogram_blocks(batch)
        chunks = blocks.to(self.device).split(AISFX_BLOCKS_PER_FORWARD)
        embeddings = torch.cat([self.net(chunk) for chunk in chunks]).cpu()  # (N, 512)
        per_clip = embeddings.split(counts)
        return torch.stack([e.mean(dim=0) for e in per_clip]).numpy()  # (B, 512)


class LogMelAudioEncoder(ItemEncoder[AudioInput]):
    """list[(waveform, sample_rate)] -> (B, 2 * n_mels) float32: per-band mean and std over time.

    ~46 ms Hann windows with 50 % overlap at ``sample_rate``, Slaney mel bands up to Nyquist,
    the same ``log10(1 + 10000 * mel)`` compression as aisfx (silence maps to 0). No learned
    weights: a cheap baseline and a fallback when no pretrained audio model fits.
    """

    modality = "audio"
    field = "encoders.audio"

    def __init__(self, cfg: AudioEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_fft = 2 ** round(math.log2(0.046 * cfg.sample_rate))
        self.hop = self.n_fft // 2
        self._dim = 2 * cfg.n_mels
        self.fingerprint = make_fingerprint(
            f"logmel{cfg.n_mels}",
            {
                "modality": "audio",
                "sample_rate": cfg.sample_rate,
                "n_mels": cfg.n_mels,
                "max_seconds": cfg.max_seconds,
                "n_fft": self.n_fft,
                "hop": self.hop,
            },
        )
        self.front_end: MelFrontEnd | None = None

    def _load(self) -> None:
        sr = self.cfg.sample_rate
        self.front_end = MelFrontEnd(sr, self.n_fft, self.hop, self.cfg.n_mels, 0.0, sr / 2, htk=False, norm="slaney")

    def _encode(self, batch: list[AudioInput]) -> np.ndarray:
        assert self.front_end is not None
        waves = [prepare_waveform(w, sr, self.cfg.sample_rate, self.cfg.max_seconds) for w, sr in batch]
        mel, frames = self.front_end(waves)  # (B, n_mels, F)
        logmel = torch.log10(mel * 10000.0 + 1.0)
        mask = torch.zeros(len(batch), 1, logmel.shape[-1])  # (B, 1, F): 1 on the clip's own frames
        for i, n in enumerate(frames):
            mask[i, 0, :n] = 1.0
        count = mask.sum(dim=-1)  # (B, 1)
        mean = (logmel * mask).sum(dim=-1) / count  # (B, n_mels)
        var = ((logmel - mean.unsqueeze(-1)).square() * mask).sum(dim=-1) / count
        return torch.cat([mean, var.sqrt()], dim=1).numpy()  # (B, 2 * n_mels)

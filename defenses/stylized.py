"""``stylized``: stylized pairing training (``stylized-pairing.txt`` §3.3).

Every training image ``x`` gets a stylized copy ``x'`` (AdaIN, eq. 3-4, or a weight-free
stylizer, see :mod:`defenses.adain`), generated once in :meth:`StylizedPairing.prepare` and
cached on disk (one ``.npz`` per set holding the stylized images and their key, written all
or nothing; a corrupt or mismatching one is logged in one line and rebuilt). The loss pairs
the logits of the two (eq. 5-6):

* eq. (5): ``L_s = lambda * L(F(x), F(x'))`` with ``L`` the mean squared error;
* eq. (6): ``L_t = J(theta, M) + lambda * (1/m) sum_i MSE(F(x_i), F(x'_i))``, where ``J`` is
  the cross-entropy over the mini-batch ``M`` holding the ``m`` clean images and their
  ``m`` stylized copies (so ``J = (CE(x) + CE(x')) / 2``, as in the authors' code, which
  runs one forward pass over the concatenated batch).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from defenses import adain as style
from defenses.base import Batch, Defense, DefenseOutput, TrainContext
from defenses.registry import register_defense

_FORMAT_VERSION = 2  # bump when the stylizers change their output
_CHUNK = 256


@register_defense("stylized")
class StylizedPairing(Defense):
    """Stylized pairing training, eq. (6).

    Args:
        lam: pairing weight lambda. Default 1.0: the paper gives no value; the authors'
            ``stylized_pairing_train.py`` adds the MSE unweighted.
        style_weights: directory holding ``vgg_normalised.pth`` and ``decoder.pth`` (the
            pytorch-AdaIN release). ``None``: use the weight-free stylizer.
        weight_free: ``"fourier"`` (amplitude swap, default) or ``"stats"`` (eq. 2 on pixels);
            used only when ``style_weights`` is ``None``.
        style_image: path of the single style image (PNG/JPEG); ``None``: a seeded
            procedural texture (one style: the paper finds a single style best, §5).
        alpha: AdaIN style strength in [0, 1]. Default 1.0 (full AdaIN target, the AdaIN
            release's default).
        mix: style strength of the weight-free stylizers in [0, 1]. Default 0.5 (ours: a full
            Fourier amplitude swap erases the object on 28x28 images, half keeps it visible).
        seed: seed of the procedural style (explicit randomness).
        size: AdaIN working resolution; 0 (default) = the image size rounded up to a multiple
            of 8 (the paper resizes to 224, too slow on CPU for a whole training set).
    """

    needs = frozenset()
    indexed_inputs = True  # stylized copies are looked up by batch.index

    def __init__(
        self,
        *,
        lam: float = 1.0,
        style_weights: str | None = None,
        weight_free: str = "fourier",
        style_image: str | None = None,
        alpha: float = 1.0,
        mix: float = 0.5,
        seed: int = 0,
        size: int = 0,
    ) -> None:
        self.lam = float(lam)
        self.style_weights = style_weights
        self.weight_free = str(weight_free)
        self.style_image = style_image
        self.alpha = float(alpha)
        self.mix = float(mix)
        self.seed = int(seed)
        self.size = int(size)
        self._stylized: torch.Tensor | None = None  # (N, C, H, W) uint8, set by prepare()
        self._stylizer_used = ""

    def check(self) -> None:
        """An unknown ``weight_free`` method, or a ``style_weights`` folder without the AdaIN
        files, is a ``ValueError`` (shapes are checked when the files are loaded)."""
        self.stylizer_name()
        if self.style_weights is not None:
            missing = [f for f in ("vgg_normalised.pth", "decoder.pth")
                       if not os.path.isfile(os.path.join(str(self.style_weights), f))]
            if missing:
                raise ValueError(f"style_weights directory {self.style_weights!r} lacks "
                                 f"{', '.join(missing)} (the pytorch-AdaIN weight files)")

    def stylizer_name(self) -> str:
        """``"adain"`` when weights are given, else the weight-free method's name."""
        if self.style_weights:
            return "adain"
        if self.weight_free not in ("fourier", "stats"):
            raise ValueError(f"weight_free must be 'fourier' or 'stats', got {self.weight_free!r}")
        return self.weight_free

    def prepare(self, x_train: torch.Tensor, y_train: torch.Tensor, ctx: TrainContext) -> None:
        """Stylize the uint8 training set once (or load it from ``ctx.cache_dir``)."""
        x = x_train if x_train.dim() == 4 else x_train.unsqueeze(1)  # (N, C, H, W) uint8
        name = self.stylizer_name()
        self._stylizer_used = name
        if name != "adain":
            ctx.log(f"stylized: no style_weights given; using the weight-free '{name}' stylizer")
        path, key = self._cache_key(x, ctx.cache_dir)
        if path and os.path.isfile(path):
            loaded, problem = _load_checked(path, key, tuple(x.shape))
            if loaded is not None:
                self._stylized = torch.from_numpy(loaded)
                ctx.log(f"stylized: loaded cached stylized set {path}")
                return
            ctx.log(f"stylized: cache entry {path} {problem}; rebuilding it")
            os.unlink(path)
        self._stylized = self._stylize_all(x, name)
        if path and ctx.write_file is not None:
            array = self._stylized.numpy()
            ctx.write_file(path, lambda fh: np.savez(fh, stylized=array, key=np.array(key)))
            ctx.log(f"stylized: cached stylized set at {path}")

    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> DefenseOutput:
        """Eq. (6) on one batch: one forward over clean + stylized images."""
        if self._stylized is None:
            raise RuntimeError("stylized: prepare() must run before loss()")
        idx = batch.index.to(torch.long).cpu()
        x_sty = self._stylized[idx].to(batch.x.device, batch.x.dtype) / 255.0  # (N, C, H, W)
        m = batch.x.shape[0]
        out = model(torch.cat([batch.x, x_sty]))  # (2N, K)
        logits, logits_sty = out[:m], out[m:]
        ce = F.cross_entropy(out, torch.cat([batch.y, batch.y]))  # J over the 2m batch
        pair = F.mse_loss(logits, logits_sty)  # eq. (5), mean over samples and classes
        loss = ce + self.lam * pair
        logs = {
            "ce": float(ce.detach()),
            "pair_mse": float(pair.detach()),
            "weight_free": float(self._stylizer_used != "adain"),
        }
        return DefenseOutput(loss=loss, logits=logits, logs=logs)

    # -- helpers ---------------------------------------------------------------------------

    def _style_tensor(self, size: int) -> torch.Tensor:
        """The style image (1, 3, S, S) in [0, 1]."""
        if self.style_image:
            from PIL import Image

            if not os.path.isfile(self.style_image):
                raise FileNotFoundError(f"style image not found: {self.style_image}")
            img = np.asarray(Image.open(self.style_image).convert("RGB"), dtype=np.float32)
            return torch.from_numpy(img / 255.0).permute(2, 0, 1)[None]
        gen = torch.Generator().manual_seed(self.seed)
        return style.procedural_style(size, gen)

    def _stylize_all(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Stylize (N, C, H, W) uint8 in chunks -> uint8 of the same shape."""
        size = max(int(x.shape[2]), int(x.shape[3]))
        sty = self._style_tensor(size if name != "adain" else max(size, 64))
        net = style.load_adain(self.style_weights) if name == "adain" else None
        out = torch.empty_like(x)
        with torch.no_grad():
            starts = range(0, x.shape[0], _CHUNK)
            for start in tqdm(starts, desc=f"stylize ({name})", leave=False, disable=None):
                chunk = x[start : start + _CHUNK].float() / 255.0  # (B, C, H, W)
                if net is not None:
                    res = net(chunk, sty, self.alpha, self.size)
                elif name == "stats":
                    res = style.stats_stylize(chunk, sty, self.mix)
                else:
                    res = style.fourier_stylize(chunk, sty, self.mix)
                out[start : start + _CHUNK] = (res * 255.0).round().clamp(0, 255).to(torch.uint8)
        return out

    def _cache_key(self, x: torch.Tensor, cache_dir: str | None) -> tuple[str | None, str]:
        """``(<cache_dir>/stylized-<key digest>.npz or None, key)``.

        The key names what the stylized set is computed from: the SHA-256 of the exact
        training images (a stylized image is a function of its image alone; labels do not
        enter), their shape, every stylizer setting (``lam`` only weighs the loss) and the
        SHA-256 of the style image and weight files.
        """
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(x.numpy()).tobytes())
        settings = {**self.hparams(), "v": _FORMAT_VERSION, "shape": list(x.shape)}
        settings.pop("lam")
        files = {f: _file_sha256(f) for f in (self.style_image, *_weight_files(self.style_weights))
                 if f and os.path.isfile(f)}
        key = json.dumps({"images": h.hexdigest(), "settings": settings, "files": files},
                         sort_keys=True)
        if not cache_dir:
            return None, key
        name = hashlib.sha256(key.encode()).hexdigest()[:16]
        return os.path.join(cache_dir, f"stylized-{name}.npz"), key


@functools.lru_cache(maxsize=8)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_sha256(path: str) -> str:
    """SHA-256 of a file's contents (memoised per process while its size and mtime stay)."""
    st = os.stat(path)
    return _sha256_of(os.path.abspath(path), st.st_size, st.st_mtime_ns)


def _weight_files(weights_dir: str | None) -> list[str]:
    if not weights_dir:
        return []
    return [os.path.join(weights_dir, n) for n in ("vgg_normalised.pth", "decoder.pth")]


def _load_checked(path: str, key: str, shape: tuple[int, ...]) -> tuple[np.ndarray | None, str]:
    """The cached stylized set, or ``(None, what is wrong)`` (unreadable, truncated, CRC of the
    zip member, another key, shape or dtype)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            stored_key, array = str(data["key"]), data["stylized"]
    except Exception as exc:  # noqa: BLE001 - any unreadable entry is rebuilt
        lines = str(exc).strip().splitlines()
        return None, f"is corrupt ({type(exc).__name__}: {lines[0][:200] if lines else ''})"
    if stored_key != key:
        return None, "was computed from something else (key mismatch)"
    if array.shape != shape or array.dtype != np.uint8:
        return None, f"holds {array.dtype} {array.shape}, expected uint8 {shape}"
    return array, ""

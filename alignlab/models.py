"""Loading the policy and tokenizer by track or path; the reward model; the policy with a value function.

>>> track = select_track()
>>> tokenizer = load_tokenizer(track)        # always has a pad token distinct from EOS
>>> base = load_policy(track)                # the pretrained GPT2LMHeadModel on track.device
>>> policy = load_sft_policy(track)         # the SFT policy: where reward modelling, PPO and DPO start
>>> reference = frozen_copy(policy)          # eval mode, no gradients
>>> rm = RewardModel.from_policy(policy)     # a copy of its GPT-2 backbone + scalar head at the last real token
>>> pv = PolicyWithValue.around(policy)      # forward -> (logits (B,T,V), values (B,T))
>>> pv = PolicyWithValue.around(policy, value_from=proxy)  # a separate value model copied from a reward model

Sources: a ``Track`` (its ``policy`` field), a local folder saved with
``save_pretrained``, or a Hub id such as ``"gpt2"`` (the same
``from_pretrained`` code; it needs the network). GPT-2's own tokenizer has no
pad token: ``load_tokenizer`` adds ``<|pad|>`` (distinct from EOS) and
``load_policy`` resizes the embeddings to match and records ``pad_token_id``.

All forward helpers take left- or right-padded batches: position ids come from
the attention mask, ``(attention_mask.cumsum(-1) - 1).clamp(min=0)``.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.activations import ACT2FN
from transformers.utils import logging as hf_logging

from . import paths
from .reference import last_token_index

PAD_TOKEN = "<|pad|>"


def _source(track_or_path) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether it is a local folder)."""
    src = getattr(track_or_path, "policy", track_or_path)
    if isinstance(src, Path) or os.path.isabs(str(src)) or str(src).startswith(".") or os.path.exists(str(src)):
        path = Path(src)
        if not path.is_dir():
            raise FileNotFoundError(
                f"No model folder at {path}. The tiny policy ships in data/tiny-gpt2/ of the course repository: "
                "run from a checkout (or rebuild it with `make data`), or pass select_track('tiny').")
        return str(path), True
    return str(src), False


def _load_error(src: str, local: bool, what: str, err: Exception) -> RuntimeError:
    if local:
        hint = ("The folder is incomplete or corrupt: restore it from the repository (git checkout -- data) "
                "or rebuild it with `make data`.")
    else:
        hint = (f"Could not fetch {src!r} from the Hugging Face Hub (no network?). "
                "Use the embedded offline track instead: select_track('tiny').")
    return RuntimeError(f"Could not load the {what} from {src}: {err}\n{hint}")


@contextlib.contextmanager
def _quiet():
    """No progress bar or info message on stderr while loading (nbgrader zeroes a test cell that writes to stderr)."""
    bar, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def fast_forward_settings(model: nn.Module) -> nn.Module:
    """Make a GPT-2 cheaper per call without changing what it computes; returns the model.

    - ``gelu_new`` (GPT-2's tanh GELU, written as six elementwise PyTorch ops) becomes
      ``gelu_pytorch_tanh``, the same formula in one fused kernel (outputs agree to float rounding).
    - ``config.use_cache = False``: a scoring or training forward builds no KV cache (sampling asks
      for one explicitly with ``use_cache=True``).
    On a model this small the fixed cost of each call dominates, so both show in every notebook.
    """
    config = getattr(model, "config", None)
    if config is None:
        return model
    if getattr(config, "activation_function", None) == "gelu_new":
        for module in model.modules():
            if module.__class__.__name__ == "GPT2MLP":
                module.act = ACT2FN["gelu_pytorch_tanh"]
        config.activation_function = "gelu_pytorch_tanh"
    config.use_cache = False
    return model


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """GPT-2 position ids for a left- or right-padded batch: (B, T) long, 0 on leading padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def load_tokenizer(track_or_path):
    """Load the tokenizer; add a distinct pad token when it has none (GPT-2's own tokenizer has none)."""
    src, local = _source(track_or_path)
    try:
        with _quiet():
            tok = AutoTokenizer.from_pretrained(src)
    except Exception as e:  # noqa: BLE001 - every failure gets the same advice
        raise _load_error(src, local, "tokenizer", e) from e
    if tok.eos_token is None:
        raise ValueError(f"The tokenizer in {src} has no EOS token; the course needs one to stop completions.")
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        tok.add_special_tokens({"pad_token": PAD_TOKEN})   # pad == EOS would hide the EOS from masks
    return tok


def load_policy(track_or_path, device=None):
    """Load a causal LM (GPT2LMHeadModel) in eval mode on ``device`` (default: the track's device, else CPU).

    If the tokenizer needed a new pad token, the embeddings are resized to the
    tokenizer's length and ``config.pad_token_id`` is set to it.
    """
    src, local = _source(track_or_path)
    tok = load_tokenizer(track_or_path)
    try:
        with _quiet():
            model = AutoModelForCausalLM.from_pretrained(src)
    except Exception as e:  # noqa: BLE001
        raise _load_error(src, local, "policy", e) from e
    if model.get_input_embeddings().num_embeddings < len(tok):
        with _quiet():   # the new pad row starts at the mean embedding, so its logit is typical, not huge
            model.resize_token_embeddings(len(tok))
    model.config.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = tok.eos_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
        model.generation_config.eos_token_id = tok.eos_token_id
    device = device or getattr(track_or_path, "device", None) or "cpu"
    return fast_forward_settings(model).to(device).eval()


SFT_WEIGHTS = "model.safetensors"   # in paths.SFT_DIR: the SFT policy's weights, float16, without the tied lm_head
SFT_CARD = "sft.json"               # in paths.SFT_DIR: how it was built and what it does (scripts/build_sft.py)


def save_sft_policy(policy: nn.Module, folder: Path | None = None) -> Path:
    """Store a tiny-track policy's weights as float16 safetensors (the tied ``lm_head.weight`` left out); return the file."""
    folder = Path(folder or paths.SFT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    tied = policy.lm_head.weight is policy.transformer.wte.weight
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in policy.state_dict().items()
             if not (tied and k == "lm_head.weight")}
    save_file(state, str(folder / SFT_WEIGHTS))
    (folder / SFT_WEIGHTS).chmod(0o644)                # readable by the grader's sandboxed users
    return folder / SFT_WEIGHTS


def load_sft_policy(track=None, device=None, folder: Path | None = None) -> nn.Module:
    """The SFT policy, in eval mode: the policy that reward modelling, PPO, DPO and their relatives start from.

    Tiny track (or ``track=None``): the tiny GPT-2 fine-tuned on demonstrations that end with EOS
    (``data/sft/``); ``scripts/build_sft.py`` (a step of ``make data``) builds it from ``data/tiny-gpt2/``
    and stores float16 weights, loaded here in float32 with the base policy's config and tokenizer ids.
    Another track (gpt2): no SFT stage is built for it, so this warns and returns the track's base model
    (``load_policy(track)``), whose completions rarely end; ``alignlab.sft.train_sft`` fine-tunes any policy.
    """
    name = getattr(track, "name", track)
    if name not in (None, "tiny"):
        warnings.warn(f"The {name!r} track has no SFT stage (data/sft/ is the tiny track's): starting from its base "
                      f"model {getattr(track, 'policy', track)!r}, whose completions rarely end.", stacklevel=2)
        return load_policy(track, device=device)
    weights = paths.require(Path(folder or paths.SFT_DIR) / SFT_WEIGHTS, "The SFT policy's weights")
    model = load_policy(paths.TINY_POLICY_DIR, device="cpu")
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"{weights} does not fit the tiny policy (missing {missing}, unexpected {unexpected}): "
                           "restore data/ (git checkout -- data) or rebuild it with `make data`.")
    model.tie_weights()
    device = device or getattr(track, "device", None) or "cpu"
    return model.to(device).eval()


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with every parameter frozen (requires_grad False): the reference policy."""
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def _default_last_index_fn():
    return last_token_index


def check_batch(model_config, input_ids: torch.Tensor) -> None:
    """Refuse, with advice, an empty batch or sequences longer than the model's context (GPT-2: n_positions)."""
    if input_ids.dim() != 2 or input_ids.shape[0] == 0:
        raise ValueError(f"expected a non-empty (B, T) batch of token ids, got shape {tuple(input_ids.shape)}")
    ctx = getattr(model_config, "n_positions", None) or getattr(model_config, "max_position_embeddings", None)
    if ctx is not None and input_ids.shape[1] > ctx:
        raise ValueError(f"sequences of {input_ids.shape[1]} tokens exceed the model's context of {ctx} positions: "
                         "truncate the prompt or the completion.")


def _check_mask(attention_mask: torch.Tensor) -> None:
    empty = (attention_mask.sum(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"rows {empty} of attention_mask are all zeros: there is no real token to read a "
                         "score from. Drop empty sequences before scoring.")


class RewardModel(nn.Module):
    """GPT-2 backbone + a scalar head read at the last real token: ``forward(input_ids, attention_mask) -> (B,)``.

    ``last_index_fn(attention_mask (B,T)) -> (B,) long`` picks the token whose
    hidden state is scored (default ``alignlab.reference.last_token_index``;
    notebook 02 passes the learner's own). Rows whose mask is all zeros raise
    a ValueError. Rewards are float32.
    """

    def __init__(self, backbone: nn.Module, last_index_fn=None):
        super().__init__()
        self.backbone = backbone                                  # GPT2Model
        hidden = backbone.config.n_embd
        self.head = nn.Linear(hidden, 1)
        nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(hidden + 1))
        nn.init.zeros_(self.head.bias)
        self.last_index_fn = last_index_fn or _default_last_index_fn()

    @classmethod
    def from_policy(cls, policy_or_source, last_index_fn=None, device=None) -> "RewardModel":
        """Start from a policy's transformer (a copy of its weights) with a fresh head.

        ``policy_or_source``: a loaded causal LM (e.g. ``load_sft_policy(track)``; it is copied, not
        shared), or a Track, folder or Hub id for ``load_policy`` (the base model).
        """
        if isinstance(policy_or_source, nn.Module):
            policy = copy.deepcopy(policy_or_source).requires_grad_(True)
            if device is not None:
                policy = policy.to(device)
        else:
            policy = load_policy(policy_or_source, device=device)
        rm = cls(policy.transformer, last_index_fn=last_index_fn)
        return rm.to(next(policy.parameters()).device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        _check_mask(attention_mask)
        hidden = self._hidden(input_ids, attention_mask)                      # (B, T, H)
        last = self.last_index_fn(attention_mask).long()                      # (B,)
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, H)
        return self.head(picked).squeeze(-1).float()                          # (B,)

    def scores_at_every_position(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T): entry t is the score the head gives the text x[..t], as if it ended there (padding: junk)."""
        return self.head(self._hidden(input_ids, attention_mask)).squeeze(-1).float()   # (B, T)

    def _hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The backbone's last hidden states (B, T, H), positions counted from the mask."""
        check_batch(self.backbone.config, input_ids)
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids_from_mask(attention_mask)).last_hidden_state


class PolicyWithValue(nn.Module):
    """A causal LM plus a value function: ``forward -> (logits (B,T,V), values (B,T))``.

    ``values[:, t]`` estimates the return from the state x[..t]. ``.policy`` is the plain
    causal LM (use it for sampling and saving). Two layouts:

    - ``PolicyWithValue(policy)``: a value head on the policy's own last hidden states, one
      shared transformer; the head starts at zero, so the first values are 0.
    - ``PolicyWithValue(policy, value_model=rm, shift=s, scale=c)``: a separate value model,
      TRL's layout: a trainable reward model read at every position,
      ``values[:, t] = (rm head at t - s) / c``. Started from a copy of the reward model PPO
      optimizes (``from_policy(..., value_from=reward)``), it knows from the first iteration
      which texts score well, so its advantages credit the tokens that change the score.
    """

    def __init__(self, policy: nn.Module, value_model: "RewardModel | None" = None,
                 shift: float = 0.0, scale: float = 1.0):
        super().__init__()
        self.policy = policy                                      # GPT2LMHeadModel
        self.value_model = value_model
        self.shift, self.scale = float(shift), float(scale)
        if value_model is None:
            self.value_head = nn.Linear(policy.config.n_embd, 1)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)

    @classmethod
    def from_policy(cls, track_or_path, device=None, value_from=None) -> "PolicyWithValue":
        """The policy at ``track_or_path`` with a value head, or with a value model copied from ``value_from``."""
        return cls.around(load_policy(track_or_path, device=device), value_from)

    @classmethod
    def around(cls, policy: nn.Module, value_from=None) -> "PolicyWithValue":
        """Wrap a loaded causal LM: a value head (``value_from=None``) or a value model copied from ``value_from``.

        ``value_from``: a reward model (``RewardModel``) or a PPO reward wrapping one
        (``alignlab.ppo.ModelReward``, whose shift and scale the values then share).
        The copy is trainable; the reward model itself is not touched.
        """
        device = next(policy.parameters()).device
        if value_from is None:
            return cls(policy).to(device)
        rm = getattr(value_from, "reward_model", value_from)
        if not isinstance(rm, RewardModel):
            raise TypeError(f"value_from must be a RewardModel or a reward wrapping one (ModelReward), "
                            f"not {type(value_from).__name__}")
        value_model = copy.deepcopy(rm).requires_grad_(True)
        shift, scale = getattr(value_from, "shift", 0.0), getattr(value_from, "scale", 1.0)
        return cls(policy, value_model, shift, scale).to(device)

    def hidden_and_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """(the policy's last hidden states (B, T, H), values (B, T)): ``forward`` before the vocabulary projection.

        For a caller that needs log-probabilities at a few positions only: project those with
        ``self.policy.lm_head`` (on a small model the projection onto the vocabulary is over half the work).
        """
        check_batch(self.policy.config, input_ids)
        position_ids = position_ids_from_mask(attention_mask)
        hidden = self.policy.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                         position_ids=position_ids).last_hidden_state   # (B, T, H)
        if self.value_model is not None:
            values = (self.value_model.scores_at_every_position(input_ids, attention_mask) - self.shift) / self.scale
        else:
            values = self.value_head(hidden).squeeze(-1).float()
        return hidden, values                                                     # (B, T, H), (B, T)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        check_batch(self.policy.config, input_ids)
        position_ids = position_ids_from_mask(attention_mask)
        if self.value_model is not None:
            logits = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
            values = (self.value_model.scores_at_every_position(input_ids, attention_mask) - self.shift) / self.scale
            return logits, values                                                 # (B, T, V), (B, T)
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids, output_hidden_states=True)
        hidden = out.hidden_states[-1]                                        # (B, T, H), after the final layer norm
        values = self.value_head(hidden).squeeze(-1).float()                  # (B, T)
        return out.logits, values                                             # (B, T, V), (B, T)

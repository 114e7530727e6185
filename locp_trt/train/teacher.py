"""The distillation teacher's logits, computed once per distinct input.

Every fine-tune of a run distils from the same teacher (the unpruned model, in eval mode, its
weights never trained) on the same training images: each epoch of each step's fine-tune, the
final one, and in a family every member's. Its logits for an image are the same every time, so
`TeacherOutputs` keeps them and looks them up; the teacher runs on an image only the first time
it is seen. A family keeps one for all its members (`pipeline.run.Session`).

What is looked up is what would be computed: the key is a 128-bit BLAKE2b digest of the input's
bytes (with its shape and dtype), so only an identical input hits; a randomly augmented image is
a new input and is computed. The weights are checked (a digest of every parameter and buffer) at
each fine-tune's start, and the kept logits are dropped if they changed. The one difference is
float rounding: a batch of other images around an input can change the last bits of its logits,
as it does when they are computed batch by batch every epoch.

Caching stops (and the teacher runs on every batch, as without it) where it does not pay:
when hashing an input takes longer than computing its logits (large images on a fast GPU), or
when the inputs arrive on a GPU already. A full store (`max_bytes`) keeps what it holds and adds
nothing; once as many inputs again have missed it without one hit (data that does not repeat,
such as random augmentation), caching stops too.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

__all__ = ["TeacherOutputs", "TeacherStats", "MAX_BYTES", "DECIDE_SAMPLES"]

#: Logits kept at most (bytes of the logits themselves, on the device they were computed on).
MAX_BYTES = 256 * 2**20
#: Inputs computed (and hashed) before deciding whether looking them up pays.
DECIDE_SAMPLES = 256


@dataclass(frozen=True)
class TeacherStats:
    """What the teacher did: inputs it computed, inputs looked up, and why caching stopped."""

    computed: int
    looked_up: int
    kept: int  # inputs whose logits are kept now
    caching: bool
    why_not: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"computed": self.computed, "looked_up": self.looked_up, "kept": self.kept,
                "caching": self.caching, "why_not": self.why_not}


class TeacherOutputs:
    """The teacher's logits for the inputs it has seen (see the module docstring).

    Args:
        module: the teacher; `fine_tune` puts it in eval mode, frozen, on the training device.
        max_bytes: logits kept at most.
    """

    def __init__(self, module: nn.Module, *, max_bytes: int = MAX_BYTES) -> None:
        self.module = module
        self.max_bytes = int(max_bytes)
        self._rows: dict[bytes, int] = {}
        self._table: torch.Tensor | None = None  # (capacity, K) float32 on the logits' device
        self._weights: bytes | None = None  # digest of the weights the kept logits came from
        self._caching, self._why_not = True, ""
        self._computed = self._looked_up = 0
        self._hash_s = self._teacher_s = 0.0  # the decision's figures: seconds per input, summed
        self._hashed = self._timed = 0
        self._full_misses = self._full_hits = 0  # inputs missed and hit since the store filled

    @property
    def stats(self) -> TeacherStats:
        return TeacherStats(self._computed, self._looked_up, len(self._rows), self._caching, self._why_not)

    def begin(self) -> None:
        """Called at each fine-tune's start: drops the kept logits when the weights changed."""
        if not self._caching:
            return
        digest = _weights_digest(self.module)
        if digest != self._weights:
            self._rows.clear()
            self._table = None
            self._weights = digest

    @torch.no_grad()
    def logits(self, batch: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for `inputs` (`batch` as the loader yielded it, `inputs` on the
        training device): looked up where every input was seen, else computed (only the new ones)."""
        if not self._caching or batch.device.type != "cpu" or len(batch) == 0:
            if self._caching and batch.device.type != "cpu":
                self._stop("the inputs arrive on the device already (hashing them would copy them back)")
            self._computed += len(inputs)
            return self.module(inputs)
        t0 = time.perf_counter()
        keys = _keys(batch)
        hash_s = time.perf_counter() - t0
        rows = [self._rows.get(k) for k in keys]
        new = [i for i, r in enumerate(rows) if r is None]
        self._full_hits += len(rows) - len(new) if self._full_misses else 0
        seen = [i for i, r in enumerate(rows) if r is not None]
        looked = None  # the seen inputs' logits, read before anything new is kept
        if seen:
            table = self._table
            looked = table[torch.tensor([rows[i] for i in seen], device=table.device)]
            self._looked_up += len(seen)
        if not new:
            return looked.to(inputs.device, non_blocking=True)
        deciding = self._hashed < DECIDE_SAMPLES
        if deciding:
            _sync(inputs.device)
            t0 = time.perf_counter()
        fresh = self.module(inputs if len(new) == len(rows) else inputs[new])
        if deciding:
            _sync(inputs.device)
            self._teacher_s += time.perf_counter() - t0
            self._timed += len(new)
            self._hash_s += hash_s
            self._hashed += len(rows)
        self._computed += len(new)
        if not isinstance(fresh, torch.Tensor) or fresh.dim() != 2:
            self._stop("the teacher does not return one (N, K) tensor of logits")
            return fresh if not seen else self.module(inputs)
        self._keep([keys[i] for i in new], fresh)
        if self._caching and self._hashed >= DECIDE_SAMPLES and deciding:
            per_hash, per_input = self._hash_s / self._hashed, self._teacher_s / max(1, self._timed)
            if per_hash >= per_input:
                self._stop(f"hashing an input ({per_hash * 1e3:.3f} ms) takes as long as computing its "
                           f"logits ({per_input * 1e3:.3f} ms)")
        if not seen:
            return fresh
        out = torch.empty((len(rows), fresh.shape[1]), dtype=torch.float32, device=fresh.device)
        out[torch.tensor(new, device=out.device)] = fresh.float()
        out[torch.tensor(seen, device=out.device)] = looked.to(out.device)
        return out

    def _keep(self, keys: list[bytes], fresh: torch.Tensor) -> None:
        """Keep the logits of the new inputs, while there is room (else stop where none repeat)."""
        if not self._caching:
            return
        table = self._table
        if table is not None and (table.shape[1] != fresh.shape[1] or table.device != fresh.device):
            self._rows.clear()  # another model or device: start again
            table = self._table = None
        width = fresh.shape[1]
        limit = max(1, self.max_bytes // (4 * width))
        used = len(self._rows)
        room = limit - used
        if room <= 0:
            self._full_misses += len(keys)
            if self._full_misses > used and self._full_hits == 0:
                self._stop(f"the store is full ({used} inputs) and {self._full_misses} inputs since missed it")
            return
        keys, fresh = keys[:room], fresh[:room]
        need = used + len(keys)
        if table is None or need > table.shape[0]:
            grown = torch.empty((min(limit, max(need, 2 * (0 if table is None else table.shape[0]), 1024)), width),
                                dtype=torch.float32, device=fresh.device)
            if table is not None:
                grown[:used] = table[:used]
            table = self._table = grown
        table[used:need] = fresh.float()
        for j, k in enumerate(keys):
            self._rows[k] = used + j

    def _stop(self, why: str) -> None:
        self._caching, self._why_not = False, why
        self._rows.clear()
        self._table = None


def _keys(batch: torch.Tensor) -> list[bytes]:
    """One digest per input of `batch` (a CPU tensor): its shape, dtype and bytes."""
    flat = batch.detach().contiguous().reshape(len(batch), -1)
    raw = (flat if flat.dtype == torch.uint8 else flat.view(torch.uint8)).numpy()
    header = f"{tuple(batch.shape[1:])}{batch.dtype}".encode()
    keys = []
    for row in raw:
        h = hashlib.blake2b(header, digest_size=16)
        h.update(row)
        keys.append(h.digest())
    return keys


def _weights_digest(module: nn.Module) -> bytes:
    """A digest of every parameter and buffer of `module` (names, shapes and values)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        flat = t.detach().reshape(-1).contiguous().cpu()
        h.update((flat if flat.dtype == torch.uint8 else flat.view(torch.uint8)).numpy())
    return h.digest()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

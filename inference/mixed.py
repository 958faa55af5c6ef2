"""Mixed steps: the batch's decode rows and newly joining prompts in one forward pass.

With the model's own forward, a request joining the batch needs a forward of its own (its
prefill) between two decode steps, and on a CPU a forward costs about as much in fixed overhead
(module calls, small ops) as in arithmetic: with 16 conversations at once, a new one joins
every two or three steps and those prefills took a fifth of the inference process's time.
Here both go through the model's layers together, so a joining prompt costs only its own
arithmetic (measured on the bundled model: 16 decode rows + an 18-token prompt in 12.9 ms,
against 10.6 + 9.2 ms as two forwards).

How, without rewriting the model: the model's own decoder layers run on a packed row (decode
tokens first, then each prompt's tokens), and only attention is ours, registered with
transformers' ``AttentionInterface``: decode rows attend over the batch's left-padded cache,
each prompt causally over itself. Every projection, norm, rotary embedding and MLP is the
model's own code. For Llama-family architectures only (Llama, Mistral, Qwen2/3: embeddings,
rotary, layers, final norm, head and nothing else), and only after a self-check at load shows
the same logits as the model's own forward; anything else keeps the separate prefill.

A step without new prompts runs as an ordinary batch ([rows, 1]), with the same attention.

A long prompt is read in chunks, one per step (``past``): a chunk attends to the keys and values
of the chunks before it, so a 1,500-token prompt joining a busy batch spreads its cost over
several steps instead of stalling every reply for one long step (412 ms against 10 ms on the
bundled model's CPU machine).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

NAME = "stellarchat_mixed"
ARCHITECTURES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2, "float16": 2e-2}  # self-check, max |logit diff|
# ...plus this share of the logit itself: two units in the last place of a half-precision
# number. A CPU without bfloat16 instructions rounds the two paths' sums in another order, and
# one ulp of a logit near 12 is 0.0625 in bfloat16 (2026-12-07, an AMD EPYC without AVX-512:
# the check failed on that alone). A wrong mask or position is off by whole units.
RELATIVE = {"float32": 0.0, "bfloat16": 2.0**-7, "float16": 2.0**-10}
Past = list[tuple[Any, Any]]  # per layer: a prompt's keys and values so far, [1, heads, n, size]


class Slots:
    """The batch's keys and values, preallocated per layer as [row capacity, key-value heads,
    column capacity, head size]. Rows are the batch's rows in order; every row ends at column
    ``end`` (left-padded), row r's tokens start at column ``first[r]``, and ``lo`` is the
    leftmost column any row uses. A decode step writes one column in place, a joining prompt
    is written into the next free row, a leaving row is replaced by the last one: no step
    copies the whole cache (growing it by concatenation, padding every row for each joining
    prompt and re-gathering every row for each leaving one took an eighth of a step with 16
    conversations). The buffers grow (doubling) when a step or a prompt needs more room."""

    def __init__(
        self,
        layers: int,
        *,
        max_rows: int | None = None,
        max_columns: int | None = None,
        whole_bytes: int = 0,
    ) -> None:
        self.layers = layers
        # A cache whose whole size (``max_rows`` by ``max_columns`` and room to slide) is at
        # most ``whole_bytes`` gets that memory once, the first time it needs buffers (an
        # "arena" per layer), and its buffers are views of it from then on: the process's
        # memory is what its busiest moment will need from the first reply on, rather than
        # climbing with the longest conversation yet (as llama.cpp allocates its context
        # once). The views stay as small as the rows need: buffers as wide as the whole
        # context made every decode step 6 % slower with 16 replies (B3), each row's keys
        # spread 2,369 columns apart instead of a few hundred.
        self.whole_bytes = whole_bytes
        self._arena: tuple[list[Any], list[Any]] | None = None  # per layer: keys, values
        # The most rows (the batch's size) and live columns (the model's context) it can ever
        # need: the buffers never grow past them plus some room to slide, so a busy batch of
        # long conversations holds a bounded cache instead of doubling past what it can use.
        self.max_rows = max_rows
        self.max_columns = max_columns
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.rows = 0
        self.first: list[int] = []
        self.lo = self.end = 0
        # Buffers made ahead for a join that will not fit (``prepare``): their shape, and the
        # keys and values made so far.
        self._spare: tuple[tuple[int, ...], list[Any], list[Any]] | None = None

    # --- reading ----------------------------------------------------------------------------

    def mask(self) -> Any:
        """[rows, 1, 1, live columns + 1] bool: what each row attends to in a decode step
        (its own tokens, and the column the step writes)."""
        return self._visible()[:, None, None, :]

    def _visible(self) -> Any:
        """[rows, live columns + 1] bool: the columns from each row's first token on."""
        import torch

        device = self.keys[0].device
        columns = torch.arange(self.lo, self.end + 1, device=device)
        first = torch.tensor(self.first, device=device)
        return columns[None, :] >= first[:, None]

    def bias(self, kv_heads: int, groups: int, dtype: Any) -> Any | None:
        """``mask`` as an additive bias for ``rows_attention``'s scores, [rows x key-value
        heads, groups, live columns + 1]: 0 where a row attends, -inf elsewhere; None when
        every row sees every column (one row alone, or rows that start together)."""

        if min(self.first) == max(self.first):
            return None
        hidden = self._visible().logical_not().unsqueeze(1)  # [rows, 1, columns]
        bias = hidden.new_zeros((self.rows, kv_heads * groups, hidden.shape[-1]), dtype=dtype)
        bias.masked_fill_(hidden, float("-inf"))
        return bias.view(self.rows * kv_heads, groups, -1)

    def append(self, layer: int, key: Any, value: Any) -> tuple[Any, Any]:
        """Write the step's column (``key``/``value``: [rows, heads, 1, size]) and return the
        rows' keys and values up to it. Rewriting it (a failed step tried again) is harmless:
        ``end`` only moves in ``advance``."""
        keys, values = self.keys[layer], self.values[layer]
        keys[: self.rows, :, self.end] = key[:, :, 0]
        values[: self.rows, :, self.end] = value[:, :, 0]
        return keys[: self.rows, :, self.lo : self.end + 1], values[
            : self.rows, :, self.lo : self.end + 1
        ]

    @property
    def nbytes(self) -> int:
        """Memory held by the buffers (the arena's, when they are views of it)."""
        held = self._arena[0] + self._arena[1] if self._arena else self.keys + self.values
        return sum(t.numel() * t.element_size() for t in held)

    @property
    def in_arena(self) -> bool:
        """Whether the buffers are views of a whole cache made once (``whole_bytes``)."""
        return self._arena is not None

    def stats(self) -> dict[str, int]:
        """Its size, for the model process's memory log: rows and live columns against the
        buffers' capacity, and the bytes held (and made ahead for a join, ``prepare``)."""
        rows, _, columns, _ = self.keys[0].shape if self.keys else (0, 0, 0, 0)
        spare = self._spare
        ahead = sum(t.numel() * t.element_size() for t in spare[1] + spare[2]) if spare else 0
        return {
            "rows": self.rows,
            "row_capacity": rows,
            "columns": self.end - self.lo,
            "column_capacity": columns,
            "bytes": self.nbytes,
            "ahead_bytes": ahead,
        }

    # --- changing ---------------------------------------------------------------------------

    def empty(self) -> Slots:
        """No rows any more; the buffers stay for the next ones."""
        self.rows, self.first, self.lo = 0, [], self.end
        self._spare = None
        return self

    def advance(self) -> None:
        """A decode step succeeded: its column is part of every row now."""
        self.end += 1

    def add(self, prompt_kv: dict[int, list[tuple[Any, Any]]], lengths: Sequence[int]) -> None:
        """New rows at the end, from the prompts' keys and values of a mixed step (per layer,
        one [1, heads, length, size] pair per prompt), right-aligned at ``end``."""
        like = prompt_kv[0][0][0]
        self._room(rows=self.rows + len(lengths), left=max(lengths), right=1, like=like)
        for index, length in enumerate(lengths):
            row, first = self.rows, self.end - length
            for layer in range(self.layers):
                key, value = prompt_kv[layer][index]
                self.keys[layer][row, :, first : self.end] = key[0]
                self.values[layer][row, :, first : self.end] = value[0]
            self.first.append(first)
            self.lo = first if self.rows == 0 else min(self.lo, first)
            self.rows += 1

    def remove(self, row: int) -> None:
        """Drop one row: the last row takes its place (callers reorder their rows the same)."""
        last = self.rows - 1
        if row != last:
            span = slice(self.first[last], self.end)
            for keys, values in zip(self.keys, self.values, strict=True):
                keys[row, :, span] = keys[last, :, span]
                values[row, :, span] = values[last, :, span]
            self.first[row] = self.first[last]
        self.first.pop()
        self.rows = last
        self.lo = min(self.first) if self.first else self.end

    def shrink(self) -> bool:
        """Move to smaller buffers when the rows left need under a quarter of these (a long
        conversation that made every row's buffer long has ended): a busy batch never goes
        idle, the one moment its buffers were dropped. True when it moved."""
        if not self.keys or not self.rows:
            return False
        have_rows, heads, have_columns, size = self.keys[0].shape
        width = self.end - self.lo
        rows, columns = max(self.rows, 4), width + 64 + 256
        if rows * columns * 4 > have_rows * have_columns:
            return False
        keys, values = self._buffers(self.values[0], (rows, heads, columns, size))
        self._spare = None
        self._move(keys, values, width + 64)
        return True

    def reserve(self) -> None:
        """Room for the next decode step's column."""
        self._room(rows=self.rows, left=0, right=1, like=self.keys[0])

    def prepare(self, *, rows: int, left: int, steps: int) -> None:
        """Make part of the buffers a coming join needs (``rows`` rows, a prompt of ``left``
        tokens that joins in about ``steps`` steps), if it will not fit in these: a prompt read
        in chunks calls this every step, so its join finds them made instead of allocating and
        zeroing every layer's buffers in one step (130 ms for 1,500 tokens beside 15 replies
        on the CPU machine: a stall every streaming reply saw)."""
        if not self.keys or self._arena is not None:  # views of the arena: nothing to make
            return
        slack = 2 * steps + 16  # the live columns grow by one a step meanwhile
        end = max(left, self.end - self.lo) + slack + 64
        shape = self._grown(rows=rows, end=end, right=1, like=self.values[0])
        if shape is None:
            return
        if self._spare is None or not _holds(self._spare[0], shape):
            self._spare = (shape, [], [])
        # Every buffer of the spare set in the set's own shape (a later, smaller need must
        # not make the rest smaller: a decode step once wrote past a value buffer's end).
        made, keys, values = self._spare
        missing = 2 * self.layers - len(keys) - len(values)
        for _ in range(-(-missing // max(1, steps))):  # spread over the steps left
            if len(keys) < self.layers:
                keys.append(_key_buffer(self.keys[0], made))
            else:
                values.append(self.values[0].new_zeros(made))

    def _grown(self, *, rows: int, end: int, right: int, like: Any) -> tuple[int, ...] | None:
        """The shape of new buffers for ``rows`` rows ending at column ``end`` with ``right``
        columns after it, or None when these buffers hold that."""
        have_rows, _, have_columns, _ = self.keys[0].shape if self.keys else (0, 0, 0, 0)
        if rows <= have_rows and end + right <= have_columns:
            return None
        capacity = end + max(right, self.end - self.lo, 256)
        if self.max_columns is not None:  # room to slide 256 steps past a full context
            capacity = max(end + right, min(capacity, self.max_columns + 64 + 256))
        row_capacity = have_rows if rows <= have_rows else max(rows, 2 * have_rows, 4)
        if self.max_rows is not None:
            row_capacity = max(rows, min(row_capacity, self.max_rows))
        _, heads, _, size = like.shape
        return (row_capacity, heads, capacity, size)

    def whole_shape(self, like: Any) -> tuple[int, int, int, int] | None:
        """The buffers' largest shape, if the whole cache in it is at most ``whole_bytes``."""
        if not self.whole_bytes or self.max_rows is None or self.max_columns is None:
            return None
        _, heads, _, size = like.shape
        shape = (self.max_rows, heads, self.max_columns + 64 + 256, size)
        nbytes = 2 * self.layers * shape[0] * heads * shape[2] * size * like.element_size()
        return shape if nbytes <= self.whole_bytes else None

    def _room(self, *, rows: int, left: int, right: int, like: Any) -> None:
        """Make sure ``rows`` rows fit, ``left`` columns before ``end`` and ``right`` from it:
        the live columns slide within the buffers where they fit, else move to new, larger
        ones (with room to spare).

        Why slide rather than always take new buffers: ``end`` moves right one column a step,
        so the columns run out every few hundred steps, and allocating, zeroing and filling
        every layer's buffers then took one step 120 ms with 16 replies (every 2 s, a pause
        every reply saw). Sliding copies only the live columns; those it leaves behind keep
        earlier keys and values (finite numbers, masked out: no row reads them)."""
        have_rows, _, have_columns, _ = self.keys[0].shape if self.keys else (0, 0, 0, 0)
        if rows <= have_rows and self.end - left >= 0 and self.end + right <= have_columns:
            return
        end = max(left, self.end - self.lo) + 64  # spare room on the left for longer prompts
        shape = self._grown(rows=rows, end=end, right=right, like=like)
        if shape is None:
            self._move(self.keys, self.values, end)
            return
        spare, self._spare = self._spare, None
        if spare is not None and len(spare[2]) == self.layers:  # made ahead (``prepare``)
            spare_rows, _, spare_columns, _ = spare[0]
            if rows <= spare_rows and end + right <= spare_columns:
                self._move(spare[1], spare[2], end)
                return
        keys, values = self._buffers(like, shape)
        self._move(keys, values, end)

    def _buffers(self, like: Any, shape: tuple[int, ...]) -> tuple[list[Any], list[Any]]:
        """Every layer's key and value buffers of ``shape``: views of the arena (made now if
        the whole cache fits ``whole_bytes``), else new zeroed tensors."""
        if self._arena is None and (whole := self.whole_shape(like)) is not None:
            size = math.prod(whole)
            self._arena = (
                [like.new_zeros(size) for _ in range(self.layers)],
                [like.new_zeros(size) for _ in range(self.layers)],
            )
            self._spare = None
        if self._arena is None:
            keys = [_key_buffer(like, shape) for _ in range(self.layers)]
            return keys, [like.new_zeros(shape) for _ in range(self.layers)]
        keys = [_key_buffer(like, shape, storage=a) for a in self._arena[0]]
        return keys, [a[: math.prod(shape)].view(shape) for a in self._arena[1]]

    def _move(self, keys: list[Any], values: list[Any], end: int) -> None:
        """Put the live columns into ``keys`` and ``values`` (these buffers, or new ones) so
        that every row ends at column ``end``, and take them as the buffers."""
        if self.rows:
            old, new = slice(self.lo, self.end), slice(end - (self.end - self.lo), end)
            for mine, theirs in zip(keys + values, self.keys + self.values, strict=True):
                live = theirs[: self.rows, :, old]
                # Within one buffer (or two views of one arena) the two may overlap: copy the
                # live part out first.
                overlap = mine is theirs or self._arena is not None
                mine[: self.rows, :, new] = live.clone() if overlap else live
        shift = end - self.end
        self.first = [f + shift for f in self.first]
        self.lo, self.end = self.lo + shift, end
        self.keys, self.values = keys, values


def _holds(have: tuple[int, ...], need: tuple[int, ...]) -> bool:
    """Whether buffers of shape ``have`` hold as many rows and columns as ``need``."""
    return have[0] >= need[0] and have[2] >= need[2] and have[1::2] == need[1::2]


def _key_buffer(like: Any, shape: tuple[int, ...], *, storage: Any = None) -> Any:
    """A key buffer of ``shape`` [rows, heads, columns, size]: zeroed, or a view of the front
    of ``storage`` (a flat arena). Where decode rows take ``rows_attention``'s own products
    (float32 on a CPU) it is stored column-last (a transposed view of [rows, heads, size,
    columns]), the layout their query-key product reads fastest: measured on the bundled
    model's shapes (16 rows, 150 columns), 58 us from keys stored size-last, 20 us
    column-last."""
    own = _own_attention(like)
    rows, heads, columns, size = shape
    layout = (rows, heads, size, columns) if own else tuple(shape)  # SDPA wants size last
    buffer = (
        like.new_zeros(layout) if storage is None else storage[: math.prod(layout)].view(layout)
    )
    return buffer.transpose(2, 3) if own else buffer


def _own_attention(tensor: Any) -> bool:
    """Whether decode rows take ``rows_attention``'s products (float32 on a CPU) rather than
    SDPA: on a GPU SDPA's kernels are the fast ones, and in half precision the products would
    round the scores to half precision where SDPA keeps them in float32 (a bfloat16 model
    then failed the self-check at load)."""
    import torch

    return bool(tensor.device.type == "cpu" and tensor.dtype == torch.float32)


def rows_attention(query: Any, keys: Any, values: Any, step: Step, scale: float | None) -> Any:
    """Decode rows' attention (one query each) over their cached columns: ``query`` [rows,
    heads, 1, size], ``keys``/``values`` [rows, key-value heads, columns, size] (views of the
    slots), the columns each row may see in ``step.mask``. Returns [rows, heads, 1, size].

    On a CPU it is two batched products and a softmax rather than SDPA: the CPU's SDPA kernel
    (flash attention, tiled for long queries) spends most of its time on bookkeeping when
    every query is one token. Measured on the bundled model (Intel Xeon, one thread), a whole
    decode step of 16 rows over 60-156 columns 0.93x, of 32 rows 0.89x, of one row 1.00x.
    Elsewhere (a GPU, half precision: ``_own_attention``) SDPA's own kernels are kept."""
    import torch
    import torch.nn.functional as F

    if not _own_attention(query):
        return F.scaled_dot_product_attention(
            query, keys, values, attn_mask=step.mask, scale=scale, enable_gqa=True
        )
    rows, heads, _, size = query.shape
    kv_heads, columns = keys.shape[1], keys.shape[2]
    groups = heads // kv_heads  # query heads per key-value head (what enable_gqa does)
    bias, beta = step.bias(kv_heads, groups, query.dtype)
    scores = torch.baddbmm(
        bias,
        query.reshape(rows * kv_heads, groups, size),
        keys.transpose(-1, -2).reshape(rows * kv_heads, size, columns),
        beta=beta,
        alpha=size**-0.5 if scale is None else scale,
    )
    out = torch.bmm(scores.softmax(dim=-1), values.reshape(rows * kv_heads, columns, size))
    return out.reshape(rows, heads, 1, size)


@dataclass
class Step:
    """One forward's layout, read by ``attention`` in every layer, and what it produced."""

    rows: int  # decode rows, first in the packed row (or the batch, without prompts)
    slots: Slots | None  # the rows' keys and values
    prompts: list[tuple[int, int]]  # (offset, length) of each new prompt in the packed row
    # Per prompt: the keys and values of its chunks read in earlier steps (per layer), or None.
    pasts: list[Past | None] = field(default_factory=list)
    prompt_kv: dict[int, list[tuple[Any, Any]]] = field(default_factory=dict)
    # Which columns each row attends to, made once a step (by the first layer) in the form
    # its attention reads: SDPA's bool mask, or ``rows_attention``'s additive bias.
    _mask: Any = None
    _bias: tuple[Any, float] | None = None

    @property
    def mask(self) -> Any:
        """[rows, 1, 1, live columns + 1] bool (``Slots.mask``)."""
        if self._mask is None:
            assert self.slots is not None
            self._mask = self.slots.mask()
        return self._mask

    def bias(self, kv_heads: int, groups: int, dtype: Any) -> tuple[Any, float]:
        """``Slots.bias`` and the factor ``baddbmm`` takes it with: 0 when no column is
        hidden from any row (the bias is then a 0-dim placeholder ``baddbmm`` never reads)."""
        if self._bias is None:
            import torch

            assert self.slots is not None
            bias = self.slots.bias(kv_heads, groups, dtype)
            self._bias = (torch.zeros((), dtype=dtype), 0.0) if bias is None else (bias, 1.0)
        return self._bias


class _PassThrough:
    """The cache attention modules see: this step's keys and values go straight on to
    ``attention``, which knows where each belongs."""

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
        return key_states, value_states


def attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Any, None]:
    """The registered attention: a mixed step's layout, or plain SDPA for any other call (the
    model's own forward keeps working as before)."""
    import torch
    import torch.nn.functional as F

    if not isinstance(attention_mask, Step):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(  # type: ignore[no-any-return]
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    if kwargs.get("sliding_window") is not None:
        raise RuntimeError("mixed steps do not support sliding-window attention")
    step, layer = attention_mask, module.layer_idx
    if not step.prompts:  # an ordinary batch: query [rows, heads, 1, dim]
        assert step.slots is not None
        keys, values = step.slots.append(layer, key, value)
        out = rows_attention(query, keys, values, step, scaling)
        return out.transpose(1, 2), None
    parts = []
    rows = step.rows
    if rows:  # packed [1, heads, tokens, dim]: the rows' tokens come first
        assert step.slots is not None
        q, k, v = (t[0, :, :rows].transpose(0, 1).unsqueeze(2) for t in (query, key, value))
        keys, values = step.slots.append(layer, k, v)
        out = rows_attention(q, keys, values, step, scaling)
        parts.append(out[:, :, 0].unsqueeze(0))  # [1, rows, heads, dim]
    kept = step.prompt_kv.setdefault(layer, [])
    for index, (offset, length) in enumerate(step.prompts):
        span = slice(offset, offset + length)
        q, k, v = query[:, :, span], key[:, :, span], value[:, :, span]
        past = step.pasts[index] if step.pasts else None
        if past is None:
            out = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=scaling, enable_gqa=True
            )
        else:  # a later chunk: it sees every earlier token and itself causally
            before_k, before_v = past[layer]
            start = before_k.shape[2]
            k, v = torch.cat([before_k, k], dim=2), torch.cat([before_v, v], dim=2)
            columns = torch.arange(start + length, device=q.device)
            visible = columns[None, :] <= (columns[start:, None])
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=visible, scale=scaling, enable_gqa=True
            )
        kept.append((k, v))
        parts.append(out.transpose(1, 2))
    return (parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)), None


def supported(model: Any) -> str | None:
    """Why this model cannot take mixed steps, or None when it can."""
    config = model.config
    if config.model_type not in ARCHITECTURES:
        return f"architecture {config.model_type!r} is not one of {sorted(ARCHITECTURES)}"
    if any(t != "full_attention" for t in getattr(config, "layer_types", None) or ()):
        return "it has sliding-window layers"
    if config.model_type == "mistral" and getattr(config, "sliding_window", None) is not None:
        return "it uses sliding-window attention"
    inner = getattr(model, "model", None)
    for part in ("embed_tokens", "rotary_emb", "layers", "norm"):
        if not hasattr(inner, part):
            return f"its model has no {part}"
    if not hasattr(model, "lm_head"):
        return "it has no lm_head"
    return None


def forward(
    model: Any,
    *,
    tokens: Sequence[int],
    positions: Sequence[int],
    slots: Slots | None,
    prompts: Sequence[Sequence[int]],
    pasts: Sequence[Past | None] | None = None,
) -> tuple[Any, Step]:
    """One step: the next ``tokens`` of the rows in ``slots`` (at ``positions``) and the new
    ``prompts`` (or chunks of them: ``pasts`` gives, per prompt, what earlier steps read of it,
    a ``prompt_kv`` entry of theirs). Returns the next-token logits (rows first, then one per
    prompt: a chunk's last token's) and the step, whose ``prompt_kv`` (each prompt's keys and
    values so far) the caller adds to the slots once the step counts. The rows' column is
    written in place but only counts after ``slots.advance()``: a failed step can be retried."""
    import torch

    inner = model.model
    device = inner.embed_tokens.weight.device
    rows = len(tokens)
    ids, where, spans = list(tokens), list(positions), []
    pasts = list(pasts) if pasts is not None else [None] * len(prompts)
    for prompt, past in zip(prompts, pasts, strict=True):
        start = past[0][0].shape[2] if past is not None else 0
        spans.append((len(ids), len(prompt)))
        ids.extend(prompt)
        where.extend(range(start, start + len(prompt)))
    if prompts:  # one packed row
        input_ids = torch.tensor([ids], device=device)
        position_ids = torch.tensor([where], device=device)
    else:  # an ordinary batch of one token per row
        input_ids = torch.tensor(ids, device=device).unsqueeze(1)
        position_ids = torch.tensor(where, device=device).unsqueeze(1)
    if rows:
        assert slots is not None and slots.rows == rows
        slots.reserve()
    step = Step(rows=rows, slots=slots, prompts=spans, pasts=pasts)
    hidden = inner.embed_tokens(input_ids)
    rotary = inner.rotary_emb(hidden, position_ids)
    through = _PassThrough()
    for layer in inner.layers[: model.config.num_hidden_layers]:
        hidden = layer(
            hidden,
            attention_mask=step,
            position_ids=position_ids,
            cache=through,
            position_embeddings=rotary,
        )
    if prompts:
        last = list(range(rows)) + [offset + length - 1 for offset, length in spans]
        hidden = hidden[0, last]
    else:
        hidden = hidden[:, -1]
    return model.lm_head(inner.norm(hidden)), step


def install(model: Any, tokenizer: Any) -> bool:
    """Switch ``model`` to mixed steps if it is supported and a self-check agrees with its own
    forward; False (with the reason logged) leaves the model as it was."""
    import torch
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if model.config._attn_implementation == NAME:
        return True  # installed (and checked) already
    reason = supported(model)
    if reason is None and model.config._attn_implementation != "sdpa":
        reason = f"it uses {model.config._attn_implementation!r} attention, not sdpa"
    if reason is not None:
        logger.info("separate prefill steps: %s", reason)
        return False
    ALL_ATTENTION_FUNCTIONS.register(NAME, attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    try:
        with torch.inference_mode():
            error = self_check(model, tokenizer)
    except Exception as exc:  # anything unexpected: the model's own path is the safe one
        error = f"self-check failed: {' '.join(str(exc).split())[:200]}"
    if error is not None:
        model.set_attn_implementation("sdpa")
        logger.warning("separate prefill steps: %s", error)
        return False
    logger.info("mixed steps: new prompts join the batch inside its decode steps")
    return True


def self_check(model: Any, tokenizer: Any) -> str | None:
    """Two rows of different lengths (one left-padded) and a new prompt in one mixed step,
    against the model's own forward on each: None when the logits agree."""
    import torch

    device = model.model.embed_tokens.weight.device
    texts = ["Hello there! How are you today?", "StellarChat", "What can you do for me?"]
    prompts = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) or [0] for t in texts]
    first, second, new = prompts
    dtype = str(model.dtype).removeprefix("torch.")
    tolerance, relative = TOLERANCE.get(dtype, 5e-2), RELATIVE.get(dtype, 2.0**-7)

    def own(ids: list[int]) -> Any:
        return model(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float()

    def differ(got: Any, want: Any) -> bool:
        return bool(((got.float() - want).abs() > tolerance + relative * want.abs()).any())

    logits, step = forward(model, tokens=[], positions=[], slots=None, prompts=[first, second])
    for got, ids in zip(logits, (first, second), strict=True):
        if differ(got, own(ids)):
            return "prompt logits differ from the model's own forward"
    picks = logits.argmax(dim=-1).tolist()
    slots = Slots(model.config.num_hidden_layers)
    slots.add(step.prompt_kv, [len(first), len(second)])
    logits, _ = forward(
        model,
        tokens=picks,
        positions=[len(first), len(second)],
        slots=slots,
        prompts=[new],
    )
    expected = [own([*first, picks[0]]), own([*second, picks[1]]), own(new)]
    for got, want in zip(logits, expected, strict=True):
        if differ(got, want):
            return "mixed-step logits differ from the model's own forward"
    return None

"""The PyTorch twin of ContextDiff-Swift's networks (the U-Net and the context adapter r_phi).

Same architecture, same parameter names, same operation order as Sources/ContextDiff/Models,
so a checkpoint saved by the Swift code loads here unchanged (strict=True) and both give the
same outputs. `UNet.inflate()` and `ContextAdapter.inflate()` give the video versions of
Models/VideoLayers.swift (docs/VIDEO.md): frames folded into the batch, sparse-causal
self-attention and a temporal attention layer per U-Net transformer, causal temporal attention
after each adapter block's self-attention; call them with `frames=F`. `UNet.forward(..., control=C)`
is Swift's `VideoLayout.control`: `C.process(weights, layer, kind, resolution)` sees and may
replace the softmax weights [B*heads, N, M] of every U-Net self- and cross-attention (sites named
as Swift's `UNet.transformers`); without it no hook runs. Used by the equivalence tests and by the side-by-side benchmarks (DESIGN §8).
Runs on Debian's python3-torch (1.13); needs nothing else.
"""
import json
import math
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- safetensors
_DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}
_NAMES = {v: k for k, v in _DTYPES.items()}


def load_safetensors(path):
    """A minimal reader (the `safetensors` package is not a Debian package)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dtype = _DTYPES[info["dtype"]]
        t = torch.frombuffer(bytearray(body[a:b]), dtype=dtype) if b > a else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def save_safetensors(tensors, path):
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        raw = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))


# ----------------------------------------------------------------------------- building blocks
def timestep_features(t, dim):
    half = dim // 2
    exponent = torch.arange(0, half, dtype=torch.float32, device=t.device) * (-math.log(10000.0) / half)
    args = t.float().unsqueeze(1) * exponent.exp().unsqueeze(0)
    return torch.cat([args.cos(), args.sin()], dim=1)


class TimestepEmbedding(nn.Module):
    def __init__(self, feature_dim, out_dim):
        super().__init__()
        self.feature_dim = feature_dim
        self.linear_1 = nn.Linear(feature_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, t):
        return self.linear_2(F.silu(self.linear_1(timestep_features(t, self.feature_dim))))


class Attention(nn.Module):
    def __init__(self, query_dim, context_dim=None, heads=1, bias=False):
        super().__init__()
        self.heads, self.head_dim = heads, query_dim // heads
        inner = self.head_dim * heads
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=bias)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=bias)
        self.to_out = nn.Linear(inner, query_dim)

    def split(self, x):
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.head_dim).permute(0, 2, 1, 3).reshape(b * self.heads, n, self.head_dim)

    def forward(self, x, context=None, key_mask=None, causal=False, edit_weights=None):
        """`edit_weights` (Swift's `editWeights`): called with the softmax weights
        [B*heads, N, M] (batch-major, heads inner); returns the weights to apply (same shape)."""
        src = x if context is None else context
        b, n, m = x.shape[0], x.shape[1], src.shape[1]
        q, k, v = self.split(self.to_q(x)), self.split(self.to_k(src)), self.split(self.to_v(src))
        scores = torch.bmm(q, k.transpose(1, 2)) * (1 / math.sqrt(self.head_dim))
        if key_mask is not None:
            hidden = key_mask.bool().logical_not().reshape(b, 1, 1, m).expand(b, self.heads, 1, m).reshape(b * self.heads, 1, m)
            scores = scores.masked_fill(hidden, float("-inf"))
        if causal:
            assert n == m, "causal attention needs as many keys as queries"
            scores = scores.masked_fill(torch.ones(n, m, dtype=torch.bool, device=scores.device).triu(1), float("-inf"))
        weights = scores.softmax(dim=-1)
        if edit_weights is not None:
            edited = edit_weights(weights)
            assert edited.shape == weights.shape, f"edited attention weights {tuple(edited.shape)} must keep {tuple(weights.shape)}"
            weights = edited
        out = torch.bmm(weights, v)
        out = out.reshape(b, self.heads, n, self.head_dim).permute(0, 2, 1, 3).reshape(b, n, self.heads * self.head_dim)
        return self.to_out(out)


def sparse_causal_keys(tokens, frames):
    """[B*F, N, C] -> [B*F, 2N, C]: row (b, k) is frame 0 of video b followed by frame max(k-1, 0)
    (Tune-A-Video's `cat([key[:, [0] * F], key[:, former_frame_index]], dim=2)`)."""
    bf, n, c = tokens.shape
    v = tokens.reshape(bf // frames, frames, n, c)
    first = v[:, [0] * frames]
    previous = v[:, [max(k - 1, 0) for k in range(frames)]]
    return torch.cat([first, previous], dim=2).reshape(bf, 2 * n, c)


class TemporalAttention(nn.Module):
    """h + attn(LN(h)) across the frames at each position of [B*F, N, C]; to_out starts at zero."""

    def __init__(self, channels, heads, causal):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attention = Attention(channels, heads=heads)
        self.causal = causal
        nn.init.zeros_(self.attention.to_out.weight)
        nn.init.zeros_(self.attention.to_out.bias)

    def forward(self, h, frames):
        bf, n, c = h.shape
        b = bf // frames
        seq = h.reshape(b, frames, n, c).permute(0, 2, 1, 3).reshape(b * n, frames, c)
        out = self.attention(self.norm(seq), causal=self.causal)
        return h + out.reshape(b, n, frames, c).permute(0, 2, 1, 3).reshape(bf, n, c)


def group_count(channels, preferred):
    g = min(preferred, channels)
    while channels % g:
        g -= 1
    return g


class ResBlock(nn.Module):
    def __init__(self, cin, cout, time_dim, groups, dropout):
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(cin, groups), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, cout)
        self.norm2 = nn.GroupNorm(group_count(cout, groups), cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = None if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x, time):
        h = self.conv1(F.silu(self.norm1(x)))
        t = self.time_proj(F.silu(time))
        h = h + t.reshape(t.shape[0], t.shape[1], 1, 1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + (x if self.skip is None else self.skip(x))


class SpatialTransformer(nn.Module):
    def __init__(self, channels, heads, context_dim, groups, self_attention, cross_attention, positions=None):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, positions, channels)) if positions else None
        self.norm = nn.GroupNorm(group_count(channels, groups), channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.norm1 = nn.LayerNorm(channels) if self_attention else None
        self.attn1 = Attention(channels, heads=heads) if self_attention else None
        self.norm2 = nn.LayerNorm(channels) if cross_attention else None
        self.attn2 = Attention(channels, context_dim, heads=heads) if cross_attention else None
        self.norm3 = nn.LayerNorm(channels)
        self.ff1 = nn.Linear(channels, 4 * channels)
        self.ff2 = nn.Linear(4 * channels, channels)
        self.proj_out = nn.Linear(channels, channels)
        self.temporal = None
        # The layer's name in attention-control sites (`down.1.attentions.0`, `mid.attention`, ...),
        # set by UNet.inflate() as Swift's SpatialTransformer.siteName.
        self.site_name = ""

    def inflate(self, heads):
        if self.temporal is None:
            self.temporal = TemporalAttention(self.proj_in.weight.shape[0], heads, causal=False)

    def forward(self, x, tokens, mask, frames=None, frame_attention="sparse-causal", control=None):
        """`control` (Swift's VideoLayout.control): an object whose `process(weights, layer, kind,
        resolution)` sees and may replace the softmax weights of the self- ("self") and
        cross-attention ("cross"); `resolution` is the feature map side. None: no hook at all."""
        b, c, hh, ww = x.shape
        hook_self = hook_cross = None
        if control is not None:
            name = self.site_name

            def hook_self(w):
                return control.process(w, name, "self", hh)

            def hook_cross(w):
                return control.process(w, name, "cross", hh)
        h = self.proj_in(self.norm(x).reshape(b, c, hh * ww).transpose(1, 2))
        if self.pos_embed is not None:
            h = h + self.pos_embed
        if self.attn1 is not None:
            n = self.norm1(h)
            keys = sparse_causal_keys(n, frames) if frames is not None and frame_attention == "sparse-causal" else None
            h = h + self.attn1(n, keys, edit_weights=hook_self)
        if self.attn2 is not None:
            h = h + self.attn2(self.norm2(h), tokens, mask, edit_weights=hook_cross)
        h = h + self.ff2(F.gelu(self.ff1(self.norm3(h))))
        if self.temporal is not None and frames is not None:
            h = self.temporal(h, frames)
        h = self.proj_out(h).transpose(1, 2).reshape(b, c, hh, ww)
        return x + h


class Level(nn.Module):
    def __init__(self, resnets, attentions, resample):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions)
        self.resample = resample


class TransformerEncoderLayer(nn.Module):
    """x + attn(LN(x)), then x + MLP(LN(x)) with GELU (Swift's TransformerEncoderLayer)."""

    def __init__(self, width, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attention = Attention(width, None, heads, bias=True)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width * mlp_ratio)
        self.fc2 = nn.Linear(width * mlp_ratio, width)

    def forward(self, x, mask):
        a = x + self.attention(self.norm1(x), key_mask=mask)
        return a + self.fc2(F.gelu(self.fc1(self.norm2(a))))


class TextRefiner(nn.Module):
    """Swift's TextRefiner: a residual transformer over the text-token states (and the pooled vector)."""

    def __init__(self, cfg, context_dim, pooled_dim):
        super().__init__()
        w = cfg["width"]
        self.proj_in = nn.Linear(context_dim, w)
        self.pos_embed = nn.Parameter(torch.randn(1, cfg["max_tokens"], w) * 0.02)
        self.layers = nn.ModuleList(
            [TransformerEncoderLayer(w, cfg["heads"], cfg["mlp_ratio"]) for _ in range(cfg["layers"])])
        self.norm = nn.LayerNorm(w)
        self.tokens_out = nn.Linear(w, context_dim)
        self.pooled_out = nn.Linear(w, pooled_dim)
        for p in [*self.tokens_out.parameters(), *self.pooled_out.parameters()]:
            nn.init.zeros_(p)

    def forward(self, tokens, mask, pooled):
        h = self.proj_in(tokens) + self.pos_embed[:, : tokens.shape[1]]
        for layer in self.layers:
            h = layer(h, mask)
        h = self.norm(h)
        m = mask.to(h.dtype).unsqueeze(-1)
        mean = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        return tokens + self.tokens_out(h), pooled + self.pooled_out(mean)


class UNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        base = cfg["base_channels"]
        time_dim, groups, drop = 4 * base, cfg["norm_groups"], cfg["dropout"]
        self.time_embedding = TimestepEmbedding(base, time_dim)
        self.pooled_proj = nn.Linear(cfg["pooled_dim"], time_dim)
        self.conv_in = nn.Conv2d(cfg["in_channels"], base, 3, padding=1)

        def positions(res):
            return res * res if cfg.get("positional_embedding", False) else None

        def transformer(ch, res):
            sa, ca = res in cfg["attention_resolutions"], res in cfg["cross_attention_resolutions"]
            if not (sa or ca):
                return None
            return SpatialTransformer(ch, cfg["heads"], cfg["context_dim"], groups, sa, ca, positions(res))

        skips, ch, res = [base], base, cfg["sample_size"]
        mults = cfg["channel_multipliers"]
        self.down = nn.ModuleList()
        for i, mult in enumerate(mults):
            out, resnets, attns = base * mult, [], []
            for _ in range(cfg["layers_per_block"]):
                resnets.append(ResBlock(ch, out, time_dim, groups, drop))
                t = transformer(out, res)
                if t is not None:
                    attns.append(t)
                ch = out
                skips.append(ch)
            last = i == len(mults) - 1
            resample = None if last else nn.Conv2d(ch, ch, 3, stride=2, padding=1)
            if not last:
                skips.append(ch)
                res //= 2
            self.down.append(Level(resnets, attns, resample))
        self.mid = nn.Module()
        self.mid.resnet_1 = ResBlock(ch, ch, time_dim, groups, drop)
        self.mid.attention = SpatialTransformer(ch, cfg["heads"], cfg["context_dim"], groups, True, True, positions(res))
        self.mid.resnet_2 = ResBlock(ch, ch, time_dim, groups, drop)
        self.up = nn.ModuleList()
        for i in reversed(range(len(mults))):
            out, resnets, attns = base * mults[i], [], []
            for _ in range(cfg["layers_per_block"] + 1):
                resnets.append(ResBlock(ch + skips.pop(), out, time_dim, groups, drop))
                t = transformer(out, res)
                if t is not None:
                    attns.append(t)
                ch = out
            resample = None if i == 0 else nn.Conv2d(ch, ch, 3, padding=1)
            if i != 0:
                res *= 2
            self.up.append(Level(resnets, attns, resample))
        self.norm_out = nn.GroupNorm(group_count(ch, groups), ch)
        self.conv_out = nn.Conv2d(ch, cfg["out_channels"], 3, padding=1)
        refiner = cfg.get("text_refiner")
        self.text_refiner = TextRefiner(refiner, cfg["context_dim"], cfg["pooled_dim"]) if refiner else None

    def transformers(self):
        """Every transformer with its site name and feature-map side, in call order (Swift's
        `UNet.transformers`)."""
        out, res = [], self.cfg["sample_size"]
        for i, level in enumerate(self.down):
            out += [(f"down.{i}.attentions.{j}", res, t) for j, t in enumerate(level.attentions)]
            if level.resample is not None:
                res //= 2
        out.append(("mid.attention", res, self.mid.attention))
        for i, level in enumerate(self.up):
            out += [(f"up.{i}.attentions.{j}", res, t) for j, t in enumerate(level.attentions)]
            if level.resample is not None:
                res *= 2
        return out

    def inflate(self, temporal_heads=None):
        """Adds a temporal attention layer (zero output) to every transformer and names the
        attention-control sites, as UNet.inflate()."""
        for name, _, block in self.transformers():
            block.inflate(temporal_heads or self.cfg["heads"])
            block.site_name = name

    def forward(self, x, timesteps, tokens, mask, pooled, frames=None, frame_attention="sparse-causal", control=None):
        """x: [B, C, H, W], or [B*F, C, H, W] (frames of a video adjacent) with `frames=F`;
        `control`: an attention controller (see SpatialTransformer.forward), or None."""
        video = dict(frames=frames, frame_attention=frame_attention, control=control)
        if self.text_refiner is not None:
            tokens, pooled = self.text_refiner(tokens, mask, pooled)
        time = self.time_embedding(timesteps) + self.pooled_proj(pooled)
        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for j, resnet in enumerate(level.resnets):
                h = resnet(h, time)
                if len(level.attentions):
                    h = level.attentions[j](h, tokens, mask, **video)
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)
        h = self.mid.resnet_2(self.mid.attention(self.mid.resnet_1(h, time), tokens, mask, **video), time)
        for level in self.up:
            for j, resnet in enumerate(level.resnets):
                h = resnet(torch.cat([h, skips.pop()], dim=1), time)
                if len(level.attentions):
                    h = level.attentions[j](h, tokens, mask, **video)
            if level.resample is not None:
                h = level.resample(F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class ContextBlock(nn.Module):
    def __init__(self, width, heads, context_dim, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn1 = Attention(width, heads=heads)
        self.norm2 = nn.LayerNorm(width)
        self.attn2 = Attention(width, context_dim, heads=heads)
        self.norm3 = nn.LayerNorm(width)
        self.mlp1 = nn.Linear(width, width * mlp_ratio)
        self.mlp2 = nn.Linear(width * mlp_ratio, width)
        self.temporal = None

    def inflate(self, heads):
        if self.temporal is None:
            self.temporal = TemporalAttention(self.norm1.normalized_shape[0], heads, causal=True)

    def forward(self, x, tokens, mask, frames=None):
        h = x + self.attn1(self.norm1(x))
        if self.temporal is not None and frames is not None:
            h = self.temporal(h, frames)
        h = h + self.attn2(self.norm2(h), tokens, mask)
        return h + self.mlp2(F.gelu(self.mlp1(self.norm3(h))))


class ContextAdapter(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        w, p = cfg["width"], cfg["patch_size"]
        g = cfg["sample_size"] // p
        self.patch_embed = nn.Conv2d(cfg["in_channels"], w, p, stride=p)
        self.positions = nn.Parameter(torch.randn(1, g * g, w) * 0.02)
        self.time_embedding = TimestepEmbedding(w, w)
        self.blocks = nn.ModuleList(ContextBlock(w, cfg["heads"], cfg["context_dim"], cfg["mlp_ratio"]) for _ in range(cfg["depth"]))
        self.norm_out = nn.LayerNorm(w)
        self.proj_out = nn.Linear(w, p * p * cfg["in_channels"])
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def inflate(self):
        """Adds causal temporal attention (zero output) after each block's self-attention."""
        for block in self.blocks:
            block.inflate(self.cfg["heads"])

    def forward(self, x0, timesteps, tokens, mask, frames=None):
        b = x0.shape[0]
        c, size, p = self.cfg["in_channels"], self.cfg["sample_size"], self.cfg["patch_size"]
        g = size // p
        h = self.patch_embed(x0).flatten(2).transpose(1, 2)
        h = h + self.positions + self.time_embedding(timesteps).unsqueeze(1)
        for block in self.blocks:
            h = block(h, tokens, mask, frames)
        patches = self.proj_out(self.norm_out(h))
        return patches.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, size, size)

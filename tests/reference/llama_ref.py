"""Plain numpy float64 Llama forward pass, reading weights from a GGUF.

Independent of the C code: weights come from `gguf.GGUFReader` and
`gguf.quants.dequantize`, and every op is written out in numpy.
All arithmetic is float64 (weights are dequantized to float32 by gguf and
then widened), so this is a reference for the *quantized* model's function.

Conventions (llama.cpp, arch "llama"):
* GGUF stores attn_q/attn_k rows permuted so that RoPE rotates adjacent
  pairs (x[2i], x[2i+1]) of each head ("normal"/interleaved rope), with
  theta_i = freq_base^(-2i/n_rot).
* RMSNorm: x / sqrt(mean(x^2) + eps) * w.
* GQA: query head h reads kv head h // (n_head / n_head_kv).
* FFN: down(silu(gate(x)) * up(x)).
* Output projection is token_embd when output.weight is absent (tied).
"""
import math
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def _field(r, key, default=None):
    f = r.fields.get(key)
    return default if f is None else f.contents()


class LlamaRef:
    def __init__(self, path):
        r = GGUFReader(path)
        arch = _field(r, "general.architecture")
        if arch != "llama":
            raise ValueError(f"{path}: architecture {arch!r} is not 'llama'")
        p = arch + "."
        self.n_layer = int(_field(r, p + "block_count"))
        self.dim = int(_field(r, p + "embedding_length"))
        self.n_ff = int(_field(r, p + "feed_forward_length"))
        self.n_head = int(_field(r, p + "attention.head_count"))
        self.n_head_kv = int(_field(r, p + "attention.head_count_kv", self.n_head))
        self.eps = float(_field(r, p + "attention.layer_norm_rms_epsilon", 1e-5))
        self.freq_base = float(_field(r, p + "rope.freq_base", 10000.0))
        self.head_dim = self.dim // self.n_head
        self.n_rot = int(_field(r, p + "rope.dimension_count", self.head_dim))
        self.bos = _field(r, "tokenizer.ggml.bos_token_id")
        self.add_bos = bool(_field(r, "tokenizer.ggml.add_bos_token",
                                   _field(r, "tokenizer.ggml.model") == "llama"))
        t = {}
        for ten in r.tensors:
            a = dequantize(ten.data, ten.tensor_type)
            # gguf returns numpy shape reversed from ne: (ne1, ne0) = (out, in).
            t[ten.name] = np.asarray(a, dtype=np.float64).reshape([int(x) for x in reversed(ten.shape)])
        self.t = t
        self.tok_embd = t["token_embd.weight"]
        self.output = t.get("output.weight", self.tok_embd)
        self.n_vocab = self.tok_embd.shape[0]

    def _rmsnorm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def _rope(self, x, pos):
        # x: (T, n_heads, head_dim); rotate pairs (2i, 2i+1) for 2i < n_rot.
        half = self.n_rot // 2
        inv = self.freq_base ** (-np.arange(half, dtype=np.float64) * 2.0 / self.n_rot)
        ang = pos[:, None].astype(np.float64) * inv[None, :]  # (T, half)
        c = np.cos(ang)[:, None, :]
        s = np.sin(ang)[:, None, :]
        out = x.copy()
        x0 = x[:, :, 0:self.n_rot:2]
        x1 = x[:, :, 1:self.n_rot:2]
        out[:, :, 0:self.n_rot:2] = x0 * c - x1 * s
        out[:, :, 1:self.n_rot:2] = x0 * s + x1 * c
        return out

    def hidden(self, tokens):
        """Final normed hidden states (T, dim) for one causal sequence at positions 0..T-1."""
        tokens = np.asarray(tokens, dtype=np.int64)
        T = len(tokens)
        hd, nh, nkv = self.head_dim, self.n_head, self.n_head_kv
        x = self.tok_embd[tokens].copy()
        pos = np.arange(T)
        mask = np.triu(np.full((T, T), -np.inf), 1)
        scale = 1.0 / math.sqrt(hd)
        for l in range(self.n_layer):
            w = lambda n: self.t[f"blk.{l}.{n}.weight"]
            h = self._rmsnorm(x, w("attn_norm"))
            q = (h @ w("attn_q").T).reshape(T, nh, hd)
            k = (h @ w("attn_k").T).reshape(T, nkv, hd)
            v = (h @ w("attn_v").T).reshape(T, nkv, hd)
            q = self._rope(q, pos)
            k = self._rope(k, pos)
            att = np.empty((T, nh, hd))
            for hh in range(nh):
                kh = hh // (nh // nkv)
                s = (q[:, hh, :] @ k[:, kh, :].T) * scale + mask
                s -= s.max(axis=1, keepdims=True)
                np.exp(s, out=s)
                s /= s.sum(axis=1, keepdims=True)
                att[:, hh, :] = s @ v[:, kh, :]
            x = x + att.reshape(T, nh * hd) @ w("attn_output").T
            h = self._rmsnorm(x, w("ffn_norm"))
            g = h @ w("ffn_gate").T
            u = h @ w("ffn_up").T
            x = x + ((g / (1.0 + np.exp(-g))) * u) @ w("ffn_down").T
        return self._rmsnorm(x, self.t["output_norm.weight"])

    def logits(self, tokens):
        """(T, n_vocab) float64 logits."""
        return self.hidden(tokens) @ self.output.T

    def logits_chunks(self, tokens, chunk=256):
        """Yields (start, logits[start:start+chunk]) to bound memory for big vocabularies."""
        h = self.hidden(tokens)
        for s in range(0, h.shape[0], chunk):
            yield s, h[s:s + chunk] @ self.output.T


def log_softmax_at(logits, targets):
    """log p(target) per row, float64, with the max subtracted for stability."""
    m = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0]
    return logits[np.arange(len(targets)), targets] - lse

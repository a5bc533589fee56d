"""Independent reference tokenizers built from a GGUF's tokenizer.ggml.* metadata.

Nothing here shares code with the C tokenizer: the GGUF vocabulary is read with
the `gguf` package and handed to established implementations.

* model "gpt2" (SmolLM2, pre "smollm"): a Hugging Face `tokenizers` byte-level
  BPE whose pre-tokenizer is SmolLM2's real tokenizer.json structure
  (Digits(individual) + ByteLevel GPT-2 regex).
* model "llama" (stories260K): SentencePiece itself, fed a ModelProto built
  from the pieces, scores and types (BPE, byte fallback, dummy prefix).
  `build_hf_tokenizer` also builds the HF-converter equivalent (BPE with
  byte_fallback and score-ordered merges) for the tokenizer.json tests.
"""
import numpy as np
from gguf import GGUFReader
from tokenizers import Tokenizer, AddedToken, models, pre_tokenizers, decoders, normalizers

# GGUF token types (llama.cpp llama_token_type); SentencePiece uses the same numbers.
TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_USER_DEFINED, TT_UNUSED, TT_BYTE = 1, 2, 3, 4, 5, 6


def _str_array(field):
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def _num_array(field):
    return np.array([field.parts[i][0] for i in field.data])


def _scalar(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


class GGUFVocab:
    """The tokenizer.ggml.* metadata of one GGUF file."""

    def __init__(self, path):
        r = GGUFReader(path)
        self.path = path
        self.model = _scalar(r, "tokenizer.ggml.model")
        self.pre = _scalar(r, "tokenizer.ggml.pre")
        self.tokens = _str_array(r.fields["tokenizer.ggml.tokens"])
        n = len(self.tokens)
        self.types = (_num_array(r.fields["tokenizer.ggml.token_type"]).astype(int)
                      if "tokenizer.ggml.token_type" in r.fields else np.full(n, TT_NORMAL))
        self.scores = (_num_array(r.fields["tokenizer.ggml.scores"]).astype(np.float32)
                       if "tokenizer.ggml.scores" in r.fields else None)
        self.merges = (_str_array(r.fields["tokenizer.ggml.merges"])
                       if "tokenizer.ggml.merges" in r.fields else None)
        self.bos = _scalar(r, "tokenizer.ggml.bos_token_id")
        self.eos = _scalar(r, "tokenizer.ggml.eos_token_id")
        self.unk = _scalar(r, "tokenizer.ggml.unknown_token_id")
        # llama.cpp defaults: SPM adds BOS and a space prefix, BPE does neither
        # unless the metadata says so.
        self.add_bos = bool(_scalar(r, "tokenizer.ggml.add_bos_token", self.model == "llama"))
        self.add_space_prefix = bool(_scalar(r, "tokenizer.ggml.add_space_prefix", self.model == "llama"))


# ---------------------------------------------------------------------------
# gpt2 / byte-level BPE

def _build_gpt2(v):
    if v.pre not in ("smollm", None, "default"):
        raise ValueError(f"{v.path}: pre-tokenizer {v.pre!r} not supported by this reference")
    vocab = {t: i for i, t in enumerate(v.tokens)}
    merges = [tuple(m.split(" ", 1)) for m in v.merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None,
                               fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    special = [AddedToken(v.tokens[i], special=True, normalized=False)
               for i in range(len(v.tokens)) if v.types[i] in (TT_CONTROL, TT_USER_DEFINED)]
    tok.add_special_tokens(special)
    return tok


# ---------------------------------------------------------------------------
# llama / SentencePiece BPE

def build_spm(gguf_path):
    """SentencePieceProcessor for a GGUF with tokenizer.ggml.model == 'llama'."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    v = GGUFVocab(gguf_path)
    if v.model != "llama":
        raise ValueError(f"{gguf_path}: tokenizer model {v.model!r} is not 'llama'")
    m = pb.ModelProto()
    ts = m.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = len(v.tokens)
    ts.byte_fallback = True
    ts.unk_id = v.unk if v.unk is not None else 0
    ts.bos_id = v.bos if v.bos is not None else -1
    ts.eos_id = v.eos if v.eos is not None else -1
    ts.pad_id = -1
    ns = m.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = v.add_space_prefix
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True
    for tok, score, typ in zip(v.tokens, v.scores, v.types):
        p = m.pieces.add()
        p.piece = tok
        p.score = float(score)
        p.type = int(typ)
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(m.SerializeToString())
    return sp


def _build_llama_hf(v):
    """HF tokenizers equivalent of a SentencePiece BPE vocab, as transformers'
    LlamaConverter builds it: merges are every split (left, right) of a piece
    whose halves are both pieces, ordered by the merged piece's score."""
    vocab = {t: i for i, t in enumerate(v.tokens)}
    order = sorted(range(len(v.tokens)), key=lambda i: (-float(v.scores[i]), i))
    merges = []
    for i in order:
        if v.types[i] != TT_NORMAL:
            continue
        piece = v.tokens[i]
        local = []
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                local.append((vocab[left], vocab[right], left, right))
        local.sort()
        merges.extend((l, r) for _, _, l, r in local)
    unk = v.tokens[v.unk] if v.unk is not None else None
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk,
                               fuse_unk=True, byte_fallback=True))
    norm = [normalizers.Replace(" ", "\u2581")]
    if v.add_space_prefix:
        norm.insert(0, normalizers.Prepend("\u2581"))
    tok.normalizer = normalizers.Sequence(norm)
    tok.decoder = decoders.Sequence([
        decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(" ", 1, 0)])
    special = [AddedToken(v.tokens[i], special=True, normalized=False)
               for i in range(len(v.tokens)) if v.types[i] in (TT_CONTROL, TT_UNKNOWN, TT_USER_DEFINED)]
    tok.add_special_tokens(special)
    return tok


def build_hf_tokenizer(gguf_path):
    """tokenizers.Tokenizer for the GGUF's vocabulary (no BOS post-processor:
    callers add BOS themselves)."""
    v = GGUFVocab(gguf_path)
    if v.model == "gpt2":
        return _build_gpt2(v)
    if v.model == "llama":
        return _build_llama_hf(v)
    raise ValueError(f"{gguf_path}: tokenizer model {v.model!r} not supported")


class RefTokenizer:
    """encode(text, add_bos, parse_special) -> list[int], the reference for gq_tokenize."""

    def __init__(self, gguf_path):
        self.vocab = GGUFVocab(gguf_path)
        self.kind = self.vocab.model
        if self.kind == "llama":
            self.sp = build_spm(gguf_path)
        self.hf = build_hf_tokenizer(gguf_path)

    def encode(self, text, add_bos=False, parse_special=False):
        if self.kind == "llama":
            if parse_special:
                raise NotImplementedError("parse_special with the SentencePiece reference")
            ids = list(self.sp.EncodeAsIds(text))
        else:
            self.hf.encode_special_tokens = not parse_special
            ids = self.hf.encode(text, add_special_tokens=False).ids
        if add_bos and self.vocab.bos is not None:
            ids = [self.vocab.bos] + ids
        return ids

    def decode(self, ids):
        if self.kind == "llama":
            return self.sp.DecodeIds(list(ids))
        return self.hf.decode(list(ids), skip_special_tokens=False)

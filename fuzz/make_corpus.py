#!/usr/bin/env python3
"""Writes the small seed corpora of the libFuzzer targets (fuzz/corpus/<target>/), a few valid and a
few invalid inputs each, built byte by byte (no torch, no sentencepiece needed). The safetensors seeds
are hand-made and not rewritten here. Usage: python3 fuzz/make_corpus.py (from anywhere)."""
import json
import struct
import zipfile
import io
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "corpus"


def put(target, name, data):
    d = ROOT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


# --- pickles (protocol 2, as torch.save writes a state_dict) -------------------------------------
def p_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def p_int(v):
    if 0 <= v < 256:
        return b"K" + bytes([v])
    return b"J" + struct.pack("<i", v)


def p_global(mod, name):
    return b"c" + mod.encode() + b"\n" + name.encode() + b"\n"


def p_ints(vs):
    return b"(" + b"".join(p_int(v) for v in vs) + b"t"


def ordered_dict():
    return p_global("collections", "OrderedDict") + b")R"


def state_dict_pickle(tensors):
    """tensors: (name, storage class, key, numel, offset, size, stride)"""
    b = b"\x80\x02" + ordered_dict() + b"("
    for name, cls, key, numel, off, size, stride in tensors:
        b += p_str(name) + p_global("torch._utils", "_rebuild_tensor_v2") + b"("
        b += b"(" + p_str("storage") + p_global("torch", cls) + p_str(key) + p_str("cpu") + p_int(numel) + b"tQ"
        b += p_int(off) + p_ints(size) + p_ints(stride) + b"\x89" + ordered_dict() + b"tR"
    return b + b"u."


STD = [("a", "FloatStorage", "0", 6, 0, [2, 3], [3, 1]),
       ("t", "FloatStorage", "0", 6, 0, [3, 2], [1, 3]),
       ("b", "BFloat16Storage", "1", 4, 0, [4], [1])]
std_pickle = state_dict_pickle(STD)
put("unpickler_fuzz", "valid_state_dict.pkl", std_pickle)
put("unpickler_fuzz", "valid_empty.pkl", b"\x80\x02" + ordered_dict() + b".")
put("unpickler_fuzz", "valid_memo.pkl",
    b"\x80\x02}q\x00(" + p_str("w") + p_global("torch._utils", "_rebuild_tensor_v2") + b"q\x01(("
    + p_str("storage") + p_global("torch", "HalfStorage") + p_str("0") + p_str("cpu") + p_int(4)
    + b"tQ" + p_int(0) + p_ints([4]) + p_ints([1]) + b"\x89}tR" + p_str("v") + b"h\x01(("
    + p_str("storage") + p_global("torch", "LongStorage") + p_str("1") + p_str("cpu") + p_int(2)
    + b"tQ" + p_int(0) + p_ints([2]) + p_ints([1]) + b"\x89}tRu.")
put("unpickler_fuzz", "invalid_global.pkl", b"\x80\x02" + p_global("os", "system") + p_str("x") + b"\x85R.")
put("unpickler_fuzz", "invalid_view.pkl", state_dict_pickle([("a", "FloatStorage", "0", 4, 2, [2, 3], [3, 1])]))


# --- zips (stored entries, as torch.save writes them) ----------------------------------------------
def make_zip(entries, zip64=False, method=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as z:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            with z.open(info, "w", force_zip64=zip64) as f:
                f.write(data)
    return buf.getvalue()


floats = struct.pack("<6f", 0, 1, 2, 3, 4, 5)
bf16 = struct.pack("<4H", 0x3F80, 0x4000, 0x4040, 0x4080)
ckpt = [("archive/data.pkl", std_pickle), ("archive/byteorder", b"little"), ("archive/data/0", floats),
        ("archive/data/1", bf16), ("archive/version", b"3\n")]
valid = make_zip(ckpt)
put("zip_archive_fuzz", "valid_checkpoint.zip", valid)
put("zip_archive_fuzz", "valid_zip64.zip", make_zip(ckpt[:2], zip64=True))
put("zip_archive_fuzz", "invalid_deflated.zip", make_zip([("a/data.pkl", b"hello hello hello")], method=zipfile.ZIP_DEFLATED))
put("zip_archive_fuzz", "invalid_truncated.zip", valid[: len(valid) - 30])

# --- JSON configs: first byte 0 model, 1 MoE layer, 2 training -----------------------------------
model = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
         "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 32,
         "num_experts": [8], "moe_top_k": 2, "moe_router": "moepp", "hidden_act": "silu"}
put("config_fuzz", "valid_model.json", b"\x00" + json.dumps(model).encode())
put("config_fuzz", "invalid_model_heads.json", b"\x00" + json.dumps({**model, "num_attention_heads": 3}).encode())
layer = {"hidden_size": 16, "intermediate_size": 24, "num_experts": [8], "layer_index": 1,
         "moe_router": "adamoe", "n_copy_experts": 0, "n_constant_experts": 0, "moe_capacity_factor": 1.25,
         "training": True}
put("config_fuzz", "valid_layer.json", b"\x01" + json.dumps(layer).encode())
put("config_fuzz", "invalid_layer_topk.json", b"\x01" + json.dumps({**layer, "moe_top_k": 99}).encode())
train = {"model": {k: v for k, v in model.items() if k != "vocab_size"} | {"vocab_size": 64},
         "train_text": "t.txt", "valid_text": "v.txt", "batch_size": 2, "seq_len": 8, "steps": 3,
         "lr": 1e-3, "seed": 7}
put("config_fuzz", "valid_train.json", b"\x02" + json.dumps(train).encode())
put("config_fuzz", "invalid_syntax.json", b"\x02{\"model\": {\"hidden_size\": 16,")

# --- OpenAI requests: first byte even /v1/completions, odd /v1/chat/completions --------------------
put("openai_request_fuzz", "valid_completion.json",
    b"\x00" + json.dumps({"model": "m", "prompt": "Hello", "max_tokens": 8, "temperature": 0.7, "top_p": 0.9,
                          "stop": ["\n"], "seed": 3}).encode())
put("openai_request_fuzz", "valid_completion_ids.json", b"\x00" + json.dumps({"prompt": [1, 2, 3], "stream": True}).encode())
put("openai_request_fuzz", "valid_chat.json",
    b"\x01" + json.dumps({"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                                      {"role": "user", "content": "Hi"}],
                          "stream": True, "stream_options": {"include_usage": True}, "top_k": 4}).encode())
put("openai_request_fuzz", "invalid_chat_role.json", b"\x01" + json.dumps({"messages": [{"role": "robot", "content": 1}]}).encode())
put("openai_request_fuzz", "invalid_body.json", b"\x00[1, 2")


# --- token shards ----------------------------------------------------------------------------------
def shard(tokens, vocab=100, flags=2, bos=1, eos=2, n_docs=1, version=1):
    tb = 2 if vocab <= 65536 else 4
    h = b"MOEPPTOK" + struct.pack("<IIII", version, tb, vocab, flags) + struct.pack("<QQii", len(tokens), n_docs, bos, eos)
    h += bytes(16)
    return h + b"".join(struct.pack("<H" if tb == 2 else "<I", t) for t in tokens)


put("token_shard_fuzz", "valid_u16.bin", shard([5, 6, 7, 2]))
put("token_shard_fuzz", "valid_u32.bin", shard([70000, 2], vocab=70001, flags=3, n_docs=1))
put("token_shard_fuzz", "invalid_truncated.bin", shard([5, 6, 7, 2])[:-1])
put("token_shard_fuzz", "invalid_version.bin", shard([5], version=2))


# --- SentencePiece model (protobuf ModelProto, written field by field) ----------------------------
def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    key = varint((num << 3) | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def piece(text, score, kind):  # kind: 1 normal, 2 unknown, 3 control, 6 byte
    p = field(1, 2, text.encode()) + field(2, 5, struct.pack("<f", score))
    return p + (field(3, 0, varint(kind)) if kind != 1 else b"")


def sp_model(model_type, pieces, byte_fallback=False):
    m = b"".join(field(1, 2, piece(*p)) for p in pieces)
    trainer = field(3, 0, varint(model_type)) + field(4, 0, varint(len(pieces)))
    if byte_fallback:
        trainer += field(35, 0, varint(1))
    m += field(2, 2, trainer)
    m += field(3, 2, field(1, 2, b"identity") + field(3, 0, varint(1)) + field(4, 0, varint(1)))
    return m


base = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]
words = ["\u2581", "\u2581H", "e", "l", "o", "\u2581w", "r", "d", "H", "w", ",", "!", "1", "2", "3", "ll", "\u2581he"]
normal = [(w, -float(i), 1) for i, w in enumerate(words)]
put("tokenizer_model_fuzz", "valid_unigram.model", sp_model(1, base + normal))
put("tokenizer_model_fuzz", "valid_bpe.model", sp_model(2, base + normal))
put("tokenizer_model_fuzz", "valid_bytes.model",
    sp_model(2, base + normal[:4] + [("<0x%02X>" % b, 0.0, 6) for b in range(256)], byte_fallback=True))
put("tokenizer_model_fuzz", "invalid_no_unk.model", sp_model(1, normal))
put("tokenizer_model_fuzz", "invalid_truncated.model", sp_model(1, base + normal)[:40])

"""Llama-2-70B from a measured Llama-2-7B-shaped run: the cost model that
bench/synth_stack.sh and bench/mpi_project.py share (a model, not a
measurement; every projection that uses it says so).

Each linear's 7B time is split by what its parts grow with: EM and
assignment ~ rows*cols; lazy feedback and the codebook update ~ rows*cols^2
(GEMMs over the inverse factor / Hessian); the rest (damping, Cholesky,
inverse: GPTQ's whole time apart from its 2*rows*cols^2 GEMMs) ~ cols^3. The
calibration forward grows with the block's weights.
"""

SHAPES_70B = {"attn_q": (8192, 8192), "attn_k": (1024, 8192), "attn_v": (1024, 8192), "attn_output": (8192, 8192),
              "ffn_gate": (28672, 8192), "ffn_up": (28672, 8192), "ffn_down": (8192, 28672)}
# the input group each linear reads (quant/engine.c quantizes a group after its Hessian)
GROUP = {"attn_q": "attn_in", "attn_k": "attn_in", "attn_v": "attn_in", "attn_output": "attn_out",
         "ffn_gate": "ffn_in", "ffn_up": "ffn_in", "ffn_down": "ffn_down_in"}
INPUT_WIDTH_70B = {"attn_in": 8192, "attn_out": 8192, "ffn_in": 8192, "ffn_down_in": 28672}


def kind(layer):
    """'attn_q', ... from a report entry."""
    return layer["name"].split(".")[-1]


def linear_70b_parts(layer):
    """One linear's quantization time at its 70B shape, from its time in the
    report, as (the part that grows with its rows, the part that does not:
    the factorizations every process that quantizes some of its rows makes)."""
    R, C = SHAPES_70B[kind(layer)]
    rr, cc = layer["rows"], layer["cols"]
    rc, rc2, c3 = R * C / (rr * cc), R * C * C / (rr * cc * cc), (C / cc) ** 3
    if "seconds_em" in layer:  # GPTVQ
        lin = layer["seconds_em"] + layer["seconds_assign"]
        sq = layer["seconds_feedback"] + layer["seconds_update"]
        return lin * rc + sq * rc2, max(0.0, layer["seconds"] - lin - sq) * c3
    # GPTQ: flops 2 rows cols^2 (lazy GEMMs) + ~cols^3 (factorizations)
    per_flop = layer["seconds"] / (2 * rr * cc * cc + cc ** 3)
    return per_flop * 2 * R * C * C, per_flop * C ** 3


def linear_70b_seconds(layer):
    """One linear's quantization time at its 70B shape."""
    return sum(linear_70b_parts(layer))


def forward_70b_seconds(report, blocks, tokens=128 * 2048):
    """The calibration forward of one 70B block at `tokens` calibration tokens."""
    fw = report["seconds_calibration_forward"] / blocks * tokens / report["calib_tokens"]
    w7 = sum(l["rows"] * l["cols"] for l in report["layers"]) / blocks
    return fw * sum(R * C for R, C in SHAPES_70B.values()) / w7

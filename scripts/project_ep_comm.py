#!/usr/bin/python3
"""Projection (not a measurement) of the expert-parallel all-to-all time per training step of the
MoE++ 7B configuration on a cluster, from the byte count that moepp's layer measures exactly
(`moepp bench ep`: bytes = 2 x kept FFN rows of remote experts x D x bytes per value, per pass) and a
link model: time = bytes a rank sends / link bandwidth + calls x (G - 1) x per-peer latency.

The 7B: 24 layers, D 1536, top-2, 16 FFN experts (+ 1 zero, 1 copy, 2 constant); f = FFN slots /
all slots: 1.0 for vanilla MoE, 0.75 for MoE++ at tau 0.75 (the paper reports 1.49-1.59 FFN experts
per token at layer 12, i.e. f ~ 0.75-0.80). Balanced routing is assumed (each rank sends (G-1)/G of
its FFN rows away). The expert-parallel group has at most 16 ranks (one FFN expert each); more ranks
are data-parallel replicas, whose gradient allreduce is not counted here. Per step: a forward and a backward pass, each two all-to-alls per layer.

Usage: scripts/project_ep_comm.py [--tokens-per-rank 4096] [--bytes-per-value 2] [--latency-us 5]
Prints a Markdown table.
"""
import argparse


def step_comm_seconds(G, gbps, f, tokens, bytes_per_value, latency_us, layers=24, D=1536, K=2):
    per_pass = tokens * 2 * K * f * D * bytes_per_value * (G - 1) / G  # bytes one rank sends, per layer
    bw = gbps * 1e9 / 8
    calls = 2  # dispatch + combine per layer and pass
    t_pass = per_pass / bw + calls * (G - 1) * latency_us * 1e-6
    return layers * 2 * t_pass, layers * 2 * per_pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens-per-rank", type=int, default=4096)
    ap.add_argument("--bytes-per-value", type=int, default=2, help="2 for BF16 activations, 4 for fp32")
    ap.add_argument("--latency-us", type=float, default=5.0, help="per peer and call")
    a = ap.parse_args()
    print(f"Projected (model, not measured): 7B, {a.tokens_per_rank} tokens per rank, "
          f"{a.bytes_per_value}-byte values, {a.latency_us} us per peer and call.\n")
    print("| ranks | EP x DP | link Gb/s | MoE GB sent / rank / step | MoE ms / step | MoE++ (f 0.75) ms / step | saved |")
    print("|---|---|---|---|---|---|---|")
    for ranks in (8, 16, 32, 64):
        G = min(ranks, 16)  # the expert-parallel group: at most one FFN expert per rank (16 experts)
        for gbps in (25, 100, 200, 400):
            t_moe, b_moe = step_comm_seconds(G, gbps, 1.0, a.tokens_per_rank, a.bytes_per_value, a.latency_us)
            t_pp, _ = step_comm_seconds(G, gbps, 0.75, a.tokens_per_rank, a.bytes_per_value, a.latency_us)
            print(f"| {ranks} | {G} x {ranks // G} | {gbps} | {b_moe / 1e9:.2f} | {t_moe * 1e3:.0f} | {t_pp * 1e3:.0f} | {100 * (1 - t_pp / t_moe):.0f} % |")


if __name__ == "__main__":
    main()

"""torchrun entry point: ``torchrun --standalone --nproc_per_node=N -m gd_lib.distributed.demo``.

Every rank trains the lecture's model with Muon, Shampoo, SOAP and KFAC under DDP, each
optimizer given the default process group; rank 0 prints each rank's share of the
expensive work and the final loss. See docs/distributed.md.
"""
from __future__ import annotations

import argparse

import torch
import torch.distributed as dist


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", choices=["auto", "cpu"], default="auto",
                        help="cpu: CPU processes with gloo even where there are GPUs")
    parser.add_argument("--quick", action="store_true", help="the small quick-mode model")
    args = parser.parse_args(argv)
    from gd_lib.distributed import init_from_env
    from gd_lib.experiments import distributed as exp

    rank, world, device = init_from_env("gloo" if args.device == "cpu" else None)
    settings = exp.demo_settings(args.quick or device.type == "cpu")
    for name in exp.OPTIMIZERS:
        result = exp.train(name, **settings, process_group=dist.group.WORLD, device=device)
        counts = [None] * world
        dist.all_gather_object(counts, sum(result["work"]["counts"].values()))
        if rank == 0:
            print(f"{name:8s} {world} ranks, work per rank {counts}, loss {result['losses'][0]:.4f} -> "
                  f"{result['losses'][-1]:.4f}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()

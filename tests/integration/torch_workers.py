"""torch_workers: one rank of a 4-process sync run through descent.torch, as
torchrun would launch it (RANK, WORLD_SIZE, MASTER_ADDR in the environment;
DESCENT_URL points at the daemon).  Run by test_torch_optim.py under
/usr/bin/python3.

    RANK=r WORLD_SIZE=4 DESCENT_URL=... torch_workers.py NAME OUTDIR STEPS

Each rank trains the same model on its own slice of the batch with
descent.torch.Adam (mode, workers and worker name from the environment) and
saves every step's gradients and its final parameters to OUTDIR/rank<r>.pt.
`torch_workers.py --check OUTDIR STEPS` replays torch.optim.Adam locally on
the mean of the ranks' gradients (summed in rank order, then divided, as the
daemon combines a round) and prints "identical" when every rank's
parameters equal it bit for bit.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "client", "python"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import torch_cases as tc  # noqa: E402

KW = dict(lr=0.01, weight_decay=0.01, amsgrad=True)


def used(m):
    """The parameters the forward pass uses (not the optional extra layer)."""
    return [p for n, p in m.named_parameters() if not n.startswith("extra")]


def rank_main(name, outdir, steps):
    import descent.torch as dt
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.manual_seed(100 + rank)          # different inits: ranks > 0 must take rank 0's parameters
    m = tc.Net()
    if rank == 0:
        torch.manual_seed(0)
        m = tc.Net()
    opt = dt.Adam(used(m), **KW, name=name)
    assert opt._d_mode == "sync" and opt._d_workers == world and opt._d_worker == "rank%d" % rank, \
        (opt._d_mode, opt._d_workers, opt._d_worker)
    x, y = tc.data(n=8 * world, seed=2)
    x, y = x[rank::world], y[rank::world]
    grads = []
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        grads.append([p.grad.clone() for p in used(m)])
        opt.step()
    torch.save({"grads": grads, "params": [p.detach().clone() for p in used(m)]},
               os.path.join(outdir, "rank%d.pt" % rank))


def check(outdir, steps):
    files = sorted(f for f in os.listdir(outdir) if f.startswith("rank"))
    runs = [torch.load(os.path.join(outdir, f)) for f in files]
    torch.manual_seed(0)
    m = tc.Net()
    opt = torch.optim.Adam(used(m), **KW)
    for t in range(steps):
        for i, p in enumerate(used(m)):
            s = runs[0]["grads"][t][i].clone()
            for r in runs[1:]:
                s = s + r["grads"][t][i]
            p.grad = s / len(runs)
        opt.step()
    for k, r in enumerate(runs):
        for i, p in enumerate(used(m)):
            if not torch.equal(p.detach(), r["params"][i]):
                print("rank %d parameter %d differs" % (k, i))
                return 1
    print("identical: %d ranks, %d steps" % (len(runs), steps))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--check":
        sys.exit(check(sys.argv[2], int(sys.argv[3])))
    rank_main(sys.argv[1], sys.argv[2], int(sys.argv[3]))

"""Streaming under torchrun: a DistributedSampler gives each of 2 gloo processes its own shard."""

import json
import os
import subprocess
import sys
import textwrap

import torch

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import torch
    from torch import nn
    from torch.utils.data import Dataset
    from kdistill.config import TrainConfig
    from kdistill.distiller import Supervised
    from kdistill.train import fit

    class Numbered(Dataset):
        def __len__(self):
            return 45

        def __getitem__(self, i):
            return torch.tensor([float(i), i % 5 - 2.0]), i % 3

    class Recording(Supervised):
        def forward(self, inputs, labels, indices=None):
            self.seen.append(indices.tolist())
            return super().forward(inputs, labels, indices)

    torch.manual_seed(0)
    objective = Recording(nn.Sequential(nn.Linear(2, 3)))
    objective.seen = []
    cfg = TrainConfig(epochs=2, batch_size=8, progress=False, device="cpu", val_fraction=0.2, ema=0.9)
    history = fit(objective, Numbered(), cfg, out_dir=sys.argv[1], workers=0)
    rank = int(os.environ["RANK"])
    weight = objective.student[0].weight.detach().flatten().tolist()
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as fh:
        json.dump({"seen": objective.seen, "weight": weight, "val": [r["val_score"] for r in history.epochs]}, fh)
''')


def test_two_processes_stream_disjoint_shards_and_stay_in_step(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # 36 training samples, per process 18 a epoch in batches of ceil(8 / 2) = 4: 5 steps
    for r in ranks:
        assert len(r["seen"]) == 10
    for epoch in (0, 1):
        shards = [[i for batch in r["seen"][epoch * 5:(epoch + 1) * 5] for i in batch] for r in ranks]
        assert len(shards[0]) == len(shards[1]) == 18
        assert not set(shards[0]) & set(shards[1])  # 36 split evenly: no sample on both
        assert sorted(shards[0] + shards[1]) == list(range(36))
    assert ranks[0]["seen"][:5] != ranks[0]["seen"][5:]  # a new shuffle each epoch
    # DDP kept the replicas identical, and both scored the same validation set
    torch.testing.assert_close(torch.tensor(ranks[0]["weight"]), torch.tensor(ranks[1]["weight"]))
    assert ranks[0]["val"] == ranks[1]["val"]
    assert (tmp_path / "last.safetensors").is_file()

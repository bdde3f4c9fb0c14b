"""Pretrain with the config overrides in argv[1] (JSON), recording the example ids (labels)
each step of this process trained on; writes OUTPUT_DIR/seen_rank{r}_{argv[2]}.json.

Run directly or under `accelerate launch --num_processes N`."""

import json
import sys
from pathlib import Path

import datasets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regioncl.train.config import make_config  # noqa: E402
from regioncl.train.trainer import Trainer  # noqa: E402

datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0  # tiny local parquet files: no wait after reading


class RecordingTrainer(Trainer):
    """Records (epoch, step, labels, indices) of every optimizer step."""

    def train_step(self, batch, lr):
        self.seen.append([self.state.epoch, self.state.step, batch["label"].tolist(), batch["index"].tolist()])
        super().train_step(batch, lr)


def run(overrides: dict, tag: str) -> list:
    trainer = RecordingTrainer(make_config(overrides=overrides))
    trainer.seen = []
    trainer.train()
    out = Path(overrides["output_dir"]) / f"seen_rank{trainer.accelerator.process_index}_{tag}.json"
    out.write_text(json.dumps(trainer.seen))
    trainer.accelerator.wait_for_everyone()
    return trainer.seen


if __name__ == "__main__":
    from regioncl.distributed import make_accelerator

    run(json.loads(sys.argv[1]), sys.argv[2])
    make_accelerator().end_training()  # tear the group down together: a rank exiting mid-collective aborts gloo

"""Process set-up for training: the allocator keeps what a step frees for the next step."""

import subprocess
import sys

# Ten forward and backward passes of the cpu-baby network as the trainer runs it (with its fast paths), in a process
# of its own (the setting is process-wide), counting the page faults they cause after a first pass has warmed
# everything up.
SCRIPT = """
import resource, sys, torch
from model.config import resolve_hyperparameters
from model import fast
from model.device import bf16_matmuls, keep_freed_memory
from model.gpt import GPT
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
torch.set_num_threads(1)
model_config, _ = resolve_hyperparameters({"preset": "cpu-baby"})
model = fast.enable(GPT(model_config.with_vocab(65)), bf16=bf16_matmuls(torch.device("cpu")))
x = torch.randint(0, 65, (12, 64))
model(x, x)[1].backward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    model(x, x)[1].backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(result.stdout.strip())


def test_training_steps_reuse_the_memory_they_free_instead_of_faulting_it_in_again():
    plain, tuned = _page_faults("plain"), _page_faults("tuned")
    # Seen here: 12,000-25,000 faults without the setting (each step's large buffers mapped afresh), 2,000-3,200
    # with it.
    assert tuned * 3 < plain, f"{tuned} page faults with the setting, {plain} without"

"""What ML loaders do to a mounted file, for benches/mmap/run.sh.

  access.py make DIR               writes DIR/array.npy (1 GiB of float32, numpy's format)
                                   and DIR/model.safetensors (64 tensors of 2 MiB)
  access.py npy PATH TOUCHES SEED  numpy.load(mmap_mode="r"), then TOUCHES random 4 KiB pages
                                   read (one float each); prints seconds and bytes touched
  access.py safetensors PATH N     safe_open (mmap), then N of the 64 tensors, evenly spread;
                                   prints seconds and bytes touched
"""

import os
import random
import sys
import time

import numpy as np

PAGE = 4096
TENSORS = 64
TENSOR_BYTES = 2 << 20

command = sys.argv[1]
if command == "make":
    out = sys.argv[2]
    rng = np.random.default_rng(1)
    count = (1 << 30) // 4
    array = np.lib.format.open_memmap(os.path.join(out, "array.npy"), mode="w+", dtype=np.float32, shape=(count,))
    step = 1 << 24
    for start in range(0, count, step):
        array[start : start + step] = rng.random(min(step, count - start), dtype=np.float32)
    array.flush()
    del array
    from safetensors.numpy import save_file

    tensors = {
        f"layer.{i:02}.weight": rng.random(TENSOR_BYTES // 4, dtype=np.float32).reshape(512, -1)
        for i in range(TENSORS)
    }
    save_file(tensors, os.path.join(out, "model.safetensors"))
elif command == "npy":
    path, touches, seed = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    start = time.monotonic()
    array = np.load(path, mmap_mode="r")
    per_page = PAGE // array.itemsize
    pages = array.shape[0] // per_page
    rng = random.Random(seed)
    total = 0.0
    for _ in range(touches):
        total += float(array[rng.randrange(pages) * per_page])
    print(f"{time.monotonic() - start:.3f} {touches * PAGE}")
elif command == "safetensors":
    from safetensors import safe_open

    path, wanted = sys.argv[2], int(sys.argv[3])
    start = time.monotonic()
    touched = 0
    with safe_open(path, framework="np") as f:
        names = sorted(f.keys())
        for name in names[:: max(1, len(names) // wanted)][:wanted]:
            tensor = f.get_tensor(name)
            touched += tensor.nbytes
    print(f"{time.monotonic() - start:.3f} {touched}")
else:
    sys.exit(f"unknown command {command}")

import os

# Keep the suite's worker threads modest on small machines.
os.environ.setdefault("OMP_NUM_THREADS", "2")

"""Prefix each line of stdin with the wall time (epoch seconds) it arrived at."""
import sys
import time

for line in sys.stdin:
    sys.stdout.write(f"{time.time():.2f} {line}")
    sys.stdout.flush()

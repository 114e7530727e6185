"""Sample the CPU time of every `locp_trt optimize` process (and its ORT timing children) every
0.5 s: one CSV row per process and sample (wall time, pid, rank or role, CPU seconds so far)."""
import os
import sys
import time

out = open(sys.argv[1], "w")
out.write("t,pid,role,cpu_s\n")
tick = os.sysconf("SC_CLK_TCK")
stop = time.time() + float(sys.argv[2])
while time.time() < stop:
    now = time.time()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            if "locp_trt" not in cmd or "cpu_sampler" in cmd:
                continue
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            rank = next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"RANK=")), "-")
            role = "model_host" if "model_host" in cmd else ("torchrun" if "torchrun" in cmd or "distributed.run" in cmd else f"rank{rank}")
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            cpu = (int(f[11]) + int(f[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
        out.write(f"{now:.2f},{pid},{role},{cpu:.2f}\n")
    out.flush()
    time.sleep(0.5)

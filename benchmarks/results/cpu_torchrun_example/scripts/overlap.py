"""From a cpu.csv of scripts/cpu_sampler.py: in each 0.5 s sample, how busy the ORT timing
children (model_host, summed) and rank 1 were. Timing samples: model_host at >= 20% of a core.
Prints rank 1's CPU in those samples and in the rest, and each timing sample where rank 1 was
above 10% with the sample after it."""
import collections
import csv
import sys

rows = list(csv.DictReader(open(sys.argv[1])))
series = collections.defaultdict(dict)  # (role, pid) -> t -> cpu_s
for r in rows:
    series[(r["role"], r["pid"])][round(float(r["t"]), 1)] = float(r["cpu_s"])
times = sorted({round(float(r["t"]), 1) for r in rows})


def rate(role: str, t0: float, t1: float) -> float:
    total = 0.0
    for (rl, _pid), s in series.items():
        if rl == role and t0 in s and t1 in s:
            total += s[t1] - s[t0]
    return total / (t1 - t0)


samples = [(t0, rate("model_host", t0, t1), rate("rank1", t0, t1)) for t0, t1 in zip(times, times[1:])]
timing = [s for s in samples if s[1] >= 0.2]
other = [s for s in samples if s[1] < 0.2]


def summary(xs):
    v = sorted(x[2] for x in xs)
    return f"median {100 * v[len(v) // 2]:.0f}%, max {100 * v[-1]:.0f}%, samples above 10%: {sum(x > 0.1 for x in v)}"


print(f"samples while a model_host child was timing (>= 20% CPU): {len(timing)}")
print(f"  rank 1 CPU: {summary(timing)}")
print(f"samples otherwise: {len(other)}; rank 1 CPU: {summary(other)}")
for i, (t, host, r1) in enumerate(samples):
    if host >= 0.2 and r1 > 0.1:
        nxt = samples[i + 1] if i + 1 < len(samples) else None
        print(f"  at {t - times[0]:6.1f} s: timing child {100 * host:.0f}%, rank 1 {100 * r1:.0f}%"
              + (f"; next sample: timing child {100 * nxt[1]:.0f}%, rank 1 {100 * nxt[2]:.0f}%" if nxt else ""))

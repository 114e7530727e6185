"""The LOCP method and its loop.

`stairs` (stair-step discrimination), `candidates` (each group's envelope widths), `benefit`
(the two-stage benefit assessment), `ladder` (the plans one step lands among), `landing` (how far
along them to go, by measurement), and the loop that schedules them (`loop`, with its `config`,
`records`, `checkpoints`, `calibration` and `reference`). Latency sharing lives in
`locp_trt.latency` (the meter and the store).

Nothing is imported here: `stairs` runs without torch (the CLI's `stairs` command on a bare
Jetson), the rest needs it.
"""

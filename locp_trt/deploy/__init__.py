"""Deployment: device profiles (`devices`), the final ONNX and TensorRT files (`export`), timing
files end to end (`bench`), and re-measuring an output folder's headline (`delivered`).

Nothing is imported here: `devices` runs without torch (the CLI's `devices` command)."""
